"""Private files: logs, outboxes and histories hold prompts and tool output.

Files are created 0600 whatever the umask (an existing one is tightened); directories
taskcast creates are 0700. A directory the user already had (their working directory,
say) is left as it is: the files in it are what must stay private.
"""

from __future__ import annotations

import os
from typing import TypeVar

FILE_MODE = 0o600
DIR_MODE = 0o700

# A path as the caller has it (``str`` or ``pathlib.Path``), handed back as it came: this
# module works with ``os.path`` alone, since a Claude Code hook imports it and must not pay
# for ``pathlib`` (which imports ``urllib.parse``).
P = TypeVar("P", bound="str | os.PathLike[str]")


def ensure_private_dir(path: P) -> P:
    """Create ``path`` (and missing parents) as 0700; an existing directory is kept."""
    missing = []
    name: str | os.PathLike[str] = path
    current = os.path.abspath(os.fspath(name))
    while not os.path.exists(current):
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    if not os.path.isdir(current):  # makedirs would say only "File exists"
        wanted = os.fspath(name)
        raise NotADirectoryError(f"cannot create the directory {wanted}: {current} is a file")
    os.makedirs(path, mode=DIR_MODE, exist_ok=True)
    for created in missing:
        os.chmod(created, DIR_MODE)  # makedirs' mode is filtered by the umask
    return path


def ensure_private_file(path: P) -> P:
    """Create ``path`` empty as 0600 unless it exists; make an existing one 0600."""
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    return path


def write_private(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace ``path`` atomically with ``data``, 0600 from the first byte."""
    temporary = os.fspath(path) + ".tmp"
    fd = os.open(temporary, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
    os.replace(temporary, path)
