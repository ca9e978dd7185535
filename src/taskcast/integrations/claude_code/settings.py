"""Claude Code's settings files: merging taskcast's hook entries in and taking exactly
them out again (the merge is pure; reading and writing the file is beside it).

Hooks live under ``"hooks"``: ``{"<Event>": [{"matcher": "…", "hooks": [{"type":
"command", "command": "…", "timeout": N}]}]}``. Every entry taskcast writes ends its
command with ``MARKER`` (a shell comment), which is how ``install`` replaces its own
(twice = once) and ``uninstall`` removes only its own; a user's hooks and settings are
never touched.
"""

from __future__ import annotations

import copy
import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MARKER = "# taskcast-claude-code"
EVENTS = ("SessionStart", "UserPromptSubmit", "PreToolUse", "PostToolUse", "Stop", "SessionEnd")
# SessionEnd hooks are killed after 1.5 s unless they ask for more (Claude Code 2.1).
SESSION_END_TIMEOUT = 10
APPROVAL_MARGIN = 30  # the PreToolUse timeout exceeds the approval wait by this much
SCOPES = ("project", "local", "user")


def settings_path(scope: str, project: Path, home: Path) -> Path:
    if scope == "user":
        return home / ".claude" / "settings.json"
    name = "settings.local.json" if scope == "local" else "settings.json"
    return project / ".claude" / name


@dataclass(frozen=True, slots=True)
class Install:
    """What ``taskcast claude-code install`` was asked for."""

    program: list[str]  # how to run taskcast: [path] or [python, -m, taskcast]
    hubs: tuple[str, ...]
    token_file: str | None
    approve: str  # remote | off
    approval_timeout: float
    approve_tools: tuple[str, ...]

    def command(self) -> str:
        args = [*self.program, "claude-code", "hook"]
        for hub in self.hubs:
            args += ["--hub", hub]
        if self.token_file:
            args += ["--token-file", self.token_file]
        args += ["--approve", self.approve]
        if self.approve == "remote":
            args += ["--approval-timeout", f"{self.approval_timeout:g}"]
            args += ["--approve-tools", ",".join(self.approve_tools)]
        return " ".join(shlex.quote(arg) for arg in args) + f"  {MARKER}"

    def entries(self) -> dict[str, dict[str, Any]]:
        """Event → the matcher group taskcast adds for it."""
        command = self.command()
        groups: dict[str, dict[str, Any]] = {}
        for event in EVENTS:
            hook: dict[str, Any] = {"type": "command", "command": command}
            group: dict[str, Any] = {"hooks": [hook]}
            if event == "PreToolUse":
                if self.approve != "remote":
                    continue
                group["matcher"] = "|".join(self.approve_tools)
                hook["timeout"] = int(self.approval_timeout) + APPROVAL_MARGIN
            elif event == "PostToolUse":
                group["matcher"] = "*"
            elif event == "SessionEnd":
                hook["timeout"] = SESSION_END_TIMEOUT
            groups[event] = group
        return groups


def is_ours(hook: Any) -> bool:
    return isinstance(hook, dict) and MARKER in str(hook.get("command", ""))


def without_ours(settings: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The settings with every taskcast entry taken out (and groups or events left empty
    by that), and the events it was in."""
    result = copy.deepcopy(settings)
    removed: list[str] = []
    hooks = result.get("hooks")
    if not isinstance(hooks, dict):
        return result, removed
    for event in list(hooks):
        groups = hooks[event]
        if not isinstance(groups, list):
            continue
        kept_groups = []
        for group in groups:
            inner = group.get("hooks") if isinstance(group, dict) else None
            if not isinstance(inner, list) or not any(is_ours(h) for h in inner):
                kept_groups.append(group)
                continue
            removed.append(event)
            kept = [h for h in inner if not is_ours(h)]
            if kept:
                kept_groups.append({**group, "hooks": kept})
        if kept_groups:
            hooks[event] = kept_groups
        else:
            del hooks[event]
    if not hooks:
        del result["hooks"]
    return result, sorted(set(removed))


def with_ours(settings: dict[str, Any], install: Install) -> tuple[dict[str, Any], list[str]]:
    """The settings with taskcast's entries (replacing any it had), and what changed."""
    result, removed = without_ours(settings)
    hooks = result.setdefault("hooks", {})
    changes = []
    for event, group in install.entries().items():
        hooks.setdefault(event, []).append(group)
        changes.append(f"{'replaced' if event in removed else 'added'} {event}")
    changes += [f"removed {event}" for event in removed if event not in install.entries()]
    return result, changes


def installed(settings: dict[str, Any]) -> dict[str, str]:
    """Event → taskcast's command there."""
    found: dict[str, str] = {}
    hooks = settings.get("hooks")
    for event, groups in hooks.items() if isinstance(hooks, dict) else []:
        for group in groups if isinstance(groups, list) else []:
            for hook in (group.get("hooks") or []) if isinstance(group, dict) else []:
                if is_ours(hook):
                    found[event] = str(hook["command"])
    return found


def hubs_of(command: str) -> list[str]:
    """The ``--hub`` values of a command ``Install.command`` wrote."""
    words = shlex.split(command.split(MARKER)[0])
    return [words[i + 1] for i, word in enumerate(words[:-1]) if word == "--hub"]


def read_settings(path: Path) -> dict[str, Any]:
    """The file's settings ({} when it does not exist); a file that is not a JSON object
    is an error rather than something to overwrite."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    if not text.strip():
        return {}
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError(f"{path} does not hold a JSON object")
    return value


def write_settings(path: Path, settings: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".taskcast.tmp")
    temporary.write_text(json.dumps(settings, indent=2, ensure_ascii=False) + "\n")
    temporary.replace(path)
