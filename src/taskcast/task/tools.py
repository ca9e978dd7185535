"""The agent's tools, each confined to the task's working directory.

Every path argument is resolved (symlinks followed) and must stay inside the
working directory: absolute paths, ``..`` escapes and symlinks that point out are
refused before anything is read or written.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import os
import re
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taskcast.task.conversation import ToolSpec

MAX_READ_BYTES = 256 * 1024
MAX_LIST_ENTRIES = 1000
MAX_SEARCH_RESULTS = 300
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


@dataclass
class ToolContext:
    cwd: Path
    command_timeout: float = 60.0
    max_output_bytes: int = 64 * 1024
    ask: Ask | None = None
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))


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


async def search_files(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    root = confine(ctx.cwd, args.get("path") or ".")
    pattern = args.get("regex")
    if not isinstance(pattern, str) or not pattern:
        raise ToolError("'regex' is required")
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise ToolError(f"invalid regex: {exc}") from None
    file_pattern = args.get("file_pattern") or "*"
    hits = await asyncio.to_thread(_search, ctx.cwd, root, regex, str(file_pattern))
    truncated = len(hits) > MAX_SEARCH_RESULTS
    lines = hits[:MAX_SEARCH_RESULTS]
    if truncated:
        lines.append(f"[... more than {MAX_SEARCH_RESULTS} matches]")
    return ToolResult("\n".join(lines) if lines else "no matches", truncated=truncated)


def _search(cwd: Path, root: Path, regex: re.Pattern[str], file_pattern: str) -> list[str]:
    hits: list[str] = []
    for directory, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS)
        for name in sorted(files):
            if not fnmatch.fnmatch(name, file_pattern):
                continue
            path = Path(directory) / name
            if path.is_symlink() and cwd not in path.resolve().parents:
                continue
            try:
                with open(path, encoding="utf-8", errors="strict") as handle:
                    for number, line in enumerate(handle, 1):
                        if regex.search(line):
                            hits.append(f"{_relative(cwd, path)}:{number}: {line.rstrip()[:200]}")
                            if len(hits) > MAX_SEARCH_RESULTS:
                                return hits
            except (UnicodeDecodeError, OSError):
                continue
    return hits


async def execute_command(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    command = args.get("command")
    if not isinstance(command, str) or not command.strip():
        raise ToolError("'command' is required")
    timeout = min(float(args.get("timeout") or ctx.command_timeout), ctx.command_timeout)
    process = await asyncio.create_subprocess_shell(
        command,
        cwd=ctx.cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        stdin=asyncio.subprocess.DEVNULL,
        start_new_session=True,
        env=ctx.env,
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
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
    except asyncio.CancelledError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        raise
    text = output.decode("utf-8", errors="replace")
    if truncated:
        text += f"\n[... output truncated at {ctx.max_output_bytes} bytes]"
    if timed_out:
        return ToolResult(f"{text}\n[timed out after {timeout:g}s; killed]", True, False, truncated)
    code = process.returncode
    return ToolResult(f"exit code {code}\n{text}", code != 0, False, truncated)


async def ask_followup_question(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    question = args.get("question")
    if not isinstance(question, str) or not question:
        raise ToolError("'question' is required")
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
            {"question": {"type": "string"}},
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
    try:
        return await entry[1](ctx, args)
    except ToolError as exc:
        return ToolResult(str(exc), is_error=True)
    except OSError as exc:
        return ToolResult(f"{type(exc).__name__}: {exc.strerror or exc}", is_error=True)
