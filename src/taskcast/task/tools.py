"""The agent's tools, each confined to the task's working directory.

Every path argument is resolved (symlinks followed) and must stay inside the
working directory: absolute paths, ``..`` escapes and symlinks that point out are
refused before anything is read or written. Only the tools a Task was given run,
whatever tool the model names. Searches use RE2 (linear time: no pattern can freeze
the agent), commands get a minimal environment and are killed with everything they
started (docs/security.md says what that does and does not contain).
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import math
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import re2

from taskcast.task.conversation import ToolSpec

MAX_READ_BYTES = 256 * 1024
MAX_LIST_ENTRIES = 1000
MAX_SEARCH_RESULTS = 300
SEARCH_DEADLINE_SECONDS = 20.0
# What a command inherits by default: enough to run tools, no secrets. More with
# ``Task(command_env=[...])`` / ``taskcast run --command-env NAME``.
BASE_COMMAND_ENV = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TERM",
    "TMPDIR",
    "TZ",
)
# Set in every command's environment, so its descendants can be found and killed
# even when they left its process group (setsid, double fork).
COMMAND_MARK = "TASKCAST_COMMAND_ID"
SKIPPED_DIRS = frozenset({".git", "node_modules", "__pycache__", ".venv", ".taskcast"})

Ask = Callable[[str], Awaitable[str | None]]


class ToolError(Exception):
    """A tool call that cannot be carried out; reported back to the model."""


@dataclass(slots=True)
class ToolResult:
    content: str
    is_error: bool = False
    completed: bool = False  # attempt_completion: the task is done
    truncated: bool = False


def command_environment(
    extra: Iterable[str] = (), environ: Mapping[str, str] = os.environ
) -> dict[str, str]:
    """The minimal environment commands run with: the base names plus ``extra``."""
    names = (*BASE_COMMAND_ENV, *extra)
    return {name: environ[name] for name in names if name in environ}


@dataclass
class ToolContext:
    cwd: Path
    command_timeout: float = 60.0
    max_output_bytes: int = 64 * 1024
    ask: Ask | None = None
    env: dict[str, str] = field(default_factory=command_environment)
    allowed: frozenset[str] | None = None  # the Task's tools; None: all of them
    # Asks with the question's options (remote orchestration); else ``ask`` is used.
    ask_options: Callable[[str, list[str] | None], Awaitable[str | None]] | None = None


def confine(cwd: Path, path: Any) -> Path:
    """Resolve ``path`` inside ``cwd`` or raise ToolError."""
    if not isinstance(path, str) or not path.strip():
        raise ToolError("a 'path' (relative to the working directory) is required")
    if "\x00" in path:
        raise ToolError("path contains a NUL byte")
    candidate = Path(path)
    if candidate.is_absolute():
        raise ToolError(f"absolute paths are not allowed: {path}")
    resolved = (cwd / candidate).resolve()
    if resolved != cwd and cwd not in resolved.parents:
        raise ToolError(f"{path} is outside the working directory")
    return resolved


def _relative(cwd: Path, path: Path) -> str:
    return str(path.relative_to(cwd)) if path != cwd else "."


async def read_file(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    path = confine(ctx.cwd, args.get("path"))
    if not path.is_file():
        raise ToolError(f"no such file: {args.get('path')}")
    data = await asyncio.to_thread(_read_prefix, path, MAX_READ_BYTES + 1)
    truncated = len(data) > MAX_READ_BYTES
    text = data[:MAX_READ_BYTES].decode("utf-8", errors="replace")
    if truncated:
        text += f"\n[... truncated at {MAX_READ_BYTES} bytes]"
    return ToolResult(text, truncated=truncated)


def _read_prefix(path: Path, limit: int) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(limit)


async def write_to_file(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    path = confine(ctx.cwd, args.get("path"))
    content = args.get("content")
    if not isinstance(content, str):
        raise ToolError("'content' (the whole new file text) is required")
    if path.is_dir():
        raise ToolError(f"{args.get('path')} is a directory")
    path.parent.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(path.write_text, content)
    return ToolResult(f"wrote {len(content.encode())} bytes to {_relative(ctx.cwd, path)}")


async def replace_in_file(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    path = confine(ctx.cwd, args.get("path"))
    search, replace = args.get("search"), args.get("replace")
    if not isinstance(search, str) or not search or not isinstance(replace, str):
        raise ToolError("'search' (non-empty) and 'replace' strings are required")
    if not path.is_file():
        raise ToolError(f"no such file: {args.get('path')}")
    text = await asyncio.to_thread(path.read_text)
    count = text.count(search)
    if count == 0:
        raise ToolError("the search text was not found in the file")
    if count > 1 and not args.get("all"):
        raise ToolError(f"the search text occurs {count} times; make it unique or set all=true")
    await asyncio.to_thread(path.write_text, text.replace(search, replace))
    return ToolResult(f"replaced {count} occurrence(s) in {_relative(ctx.cwd, path)}")


async def list_files(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    root = confine(ctx.cwd, args.get("path") or ".")
    if not root.is_dir():
        raise ToolError(f"not a directory: {args.get('path')}")
    recursive = bool(args.get("recursive"))
    entries = await asyncio.to_thread(_list, ctx.cwd, root, recursive)
    truncated = len(entries) > MAX_LIST_ENTRIES
    lines = entries[:MAX_LIST_ENTRIES]
    if truncated:
        lines.append(f"[... {len(entries) - MAX_LIST_ENTRIES} more entries]")
    return ToolResult("\n".join(lines) if lines else "(empty)", truncated=truncated)


def _list(cwd: Path, root: Path, recursive: bool) -> list[str]:
    entries: list[str] = []
    for directory, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS)
        base = Path(directory)
        entries.extend(_relative(cwd, base / d) + "/" for d in dirs)
        entries.extend(_relative(cwd, base / f) for f in sorted(files))
        if not recursive or len(entries) > MAX_LIST_ENTRIES:
            break
    return entries


def compile_search(pattern: str) -> Any:
    """RE2, matching line by line (``^``/``$`` at line ends, never across a newline)."""
    options = re2.Options()
    options.log_errors = False
    options.never_nl = True
    try:
        return re2.compile("(?m)" + pattern, options)
    except re2.error as exc:
        detail = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else exc
        raise ToolError(
            f"invalid regex ({detail}); RE2 syntax: no backreferences or lookaround"
        ) from None


async def search_files(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    root = confine(ctx.cwd, args.get("path") or ".")
    pattern = args.get("regex")
    if not isinstance(pattern, str) or not pattern:
        raise ToolError("'regex' is required")
    regex = compile_search(pattern)
    file_pattern = args.get("file_pattern") or "*"
    deadline = time.monotonic() + SEARCH_DEADLINE_SECONDS
    hits, complete = await asyncio.to_thread(
        _search, ctx.cwd, root, regex, str(file_pattern), deadline
    )
    truncated = len(hits) > MAX_SEARCH_RESULTS or not complete
    lines = hits[:MAX_SEARCH_RESULTS]
    if len(hits) > MAX_SEARCH_RESULTS:
        lines.append(f"[... more than {MAX_SEARCH_RESULTS} matches]")
    if not complete:
        lines.append(f"[... search stopped after {SEARCH_DEADLINE_SECONDS:g}s; narrow the path]")
    return ToolResult("\n".join(lines) if lines else "no matches", truncated=truncated)


def _search(
    cwd: Path, root: Path, regex: Any, file_pattern: str, deadline: float
) -> tuple[list[str], bool]:
    """Matches as ``path:line: text``, and whether the whole tree was searched."""
    hits: list[str] = []
    for directory, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS)
        for name in sorted(files):
            if time.monotonic() > deadline:
                return hits, False
            if not fnmatch.fnmatch(name, file_pattern):
                continue
            path = Path(directory) / name
            if path.is_symlink() and cwd not in path.resolve().parents:
                continue
            try:
                text = path.read_text(encoding="utf-8", errors="strict")
            except (UnicodeDecodeError, OSError):
                continue
            line, position, last_line = 1, 0, 0
            for match in regex.finditer(text):
                line += text.count("\n", position, match.start())
                position = match.start()
                if line == last_line:
                    continue  # one hit per line
                last_line = line
                start = text.rfind("\n", 0, position) + 1
                end = text.find("\n", position)
                shown = text[start : end if end >= 0 else len(text)].rstrip()[:200]
                hits.append(f"{_relative(cwd, path)}:{line}: {shown}")
                if len(hits) > MAX_SEARCH_RESULTS:
                    return hits, True
    return hits, True


async def execute_command(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    command = args.get("command")
    if not isinstance(command, str) or not command.strip():
        raise ToolError("'command' is required")
    timeout = command_timeout(args.get("timeout"), ctx.command_timeout)
    mark = os.urandom(16).hex()
    process = await asyncio.create_subprocess_shell(
        command,
        cwd=ctx.cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        stdin=asyncio.subprocess.DEVNULL,
        start_new_session=True,
        env={**ctx.env, COMMAND_MARK: mark},
    )
    assert process.stdout is not None
    output = bytearray()
    truncated = False
    timed_out = False

    async def pump() -> None:
        nonlocal truncated
        assert process.stdout is not None
        while chunk := await process.stdout.read(65536):
            room = ctx.max_output_bytes - len(output)
            if room > 0:
                output.extend(chunk[:room])
            if len(chunk) > room:
                truncated = True

    try:
        async with asyncio.timeout(timeout):
            await pump()
            await process.wait()
    except TimeoutError:
        timed_out = True
        kill_command(process.pid, mark)
        await process.wait()
    except asyncio.CancelledError:
        kill_command(process.pid, mark)
        raise
    finally:
        kill_command(process.pid, mark)  # nothing it started outlives the tool call
    text = output.decode("utf-8", errors="replace")
    if truncated:
        text += f"\n[... output truncated at {ctx.max_output_bytes} bytes]"
    if timed_out:
        return ToolResult(f"{text}\n[timed out after {timeout:g}s; killed]", True, False, truncated)
    code = process.returncode
    return ToolResult(f"exit code {code}\n{text}", code != 0, False, truncated)


def command_timeout(value: Any, limit: float) -> float:
    """The model's ``timeout`` (seconds), checked: a finite positive number, at most ``limit``."""
    if value is None:
        return limit
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ToolError("'timeout' must be a number of seconds")
    if not math.isfinite(value) or value <= 0:
        raise ToolError("'timeout' must be a finite number of seconds above 0")
    return min(float(value), limit)


def kill_command(pid: int, mark: str) -> None:
    """SIGKILL the command's process group and every process that carries its mark
    (what ``setsid`` or a double fork took out of the group). A process that also
    cleared its environment escapes this: contain such code with a container."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    needle = f"{COMMAND_MARK}={mark}".encode()
    own = os.getpid()
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit() or int(entry.name) == own:
                continue
            try:
                with open(f"/proc/{entry.name}/environ", "rb") as environ:
                    found = needle in environ.read().split(b"\0")
            except OSError:
                continue
            if found:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(int(entry.name), signal.SIGKILL)


async def ask_followup_question(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    question = args.get("question")
    if not isinstance(question, str) or not question:
        raise ToolError("'question' is required")
    raw_options = args.get("options")
    options = (
        [str(option) for option in raw_options][:20] if isinstance(raw_options, list) else None
    )
    if ctx.ask_options is not None:
        answer = await ctx.ask_options(question, options)
    else:
        answer = await ctx.ask(question) if ctx.ask is not None else None
    if answer is None:
        return ToolResult("no user is available to answer; proceed with your best judgement")
    return ToolResult(f"the user answered: {answer}")


async def attempt_completion(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    result = args.get("result")
    if not isinstance(result, str) or not result:
        raise ToolError("'result' (a summary of what was done) is required")
    return ToolResult(result, completed=True)


Run = Callable[[ToolContext, dict[str, Any]], Awaitable[ToolResult]]


def _spec(name: str, description: str, properties: dict[str, Any], required: list[str]) -> ToolSpec:
    return ToolSpec(
        name,
        description,
        {"type": "object", "properties": properties, "required": required},
    )


_PATH = {"type": "string", "description": "Path relative to the working directory"}

TOOLS: dict[str, tuple[ToolSpec, Run, bool]] = {
    # name: (spec, implementation, reads only)
    "read_file": (
        _spec("read_file", "Read a text file.", {"path": _PATH}, ["path"]),
        read_file,
        True,
    ),
    "write_to_file": (
        _spec(
            "write_to_file",
            "Create or overwrite a file with the given content.",
            {"path": _PATH, "content": {"type": "string"}},
            ["path", "content"],
        ),
        write_to_file,
        False,
    ),
    "replace_in_file": (
        _spec(
            "replace_in_file",
            "Replace an exact text in a file (it must occur once unless all=true).",
            {
                "path": _PATH,
                "search": {"type": "string"},
                "replace": {"type": "string"},
                "all": {"type": "boolean"},
            },
            ["path", "search", "replace"],
        ),
        replace_in_file,
        False,
    ),
    "list_files": (
        _spec(
            "list_files",
            "List files in a directory.",
            {"path": _PATH, "recursive": {"type": "boolean"}},
            [],
        ),
        list_files,
        True,
    ),
    "search_files": (
        _spec(
            "search_files",
            "Search files for a regular expression; returns path:line: text.",
            {"path": _PATH, "regex": {"type": "string"}, "file_pattern": {"type": "string"}},
            ["regex"],
        ),
        search_files,
        True,
    ),
    "execute_command": (
        _spec(
            "execute_command",
            "Run a shell command in the working directory.",
            {"command": {"type": "string"}, "timeout": {"type": "number"}},
            ["command"],
        ),
        execute_command,
        False,
    ),
    "ask_followup_question": (
        _spec(
            "ask_followup_question",
            "Ask the user a question.",
            {
                "question": {"type": "string"},
                "options": {"type": "array", "items": {"type": "string"}},
            },
            ["question"],
        ),
        ask_followup_question,
        True,
    ),
    "attempt_completion": (
        _spec(
            "attempt_completion",
            "Finish the task and present the result.",
            {"result": {"type": "string"}},
            ["result"],
        ),
        attempt_completion,
        True,
    ),
}

DEFAULT_TOOLS = tuple(TOOLS)


def is_read_only(name: str) -> bool:
    entry = TOOLS.get(name)
    return entry is not None and entry[2]


async def run_tool(ctx: ToolContext, name: str, args: dict[str, Any]) -> ToolResult:
    entry = TOOLS.get(name)
    if entry is None:
        return ToolResult(f"unknown tool {name!r}", is_error=True)
    if ctx.allowed is not None and name not in ctx.allowed:
        # The model was never offered it; naming it anyway runs nothing.
        return ToolResult(f"tool {name!r} is not enabled for this task", is_error=True)
    try:
        return await entry[1](ctx, args)
    except ToolError as exc:
        return ToolResult(str(exc), is_error=True)
    except OSError as exc:
        return ToolResult(f"{type(exc).__name__}: {exc.strerror or exc}", is_error=True)
