"""What a Claude Code hook call costs: ``python bench/claude_code_hook.py`` (part of
``make bench``).

Claude Code runs a hook command at every step of a session (``/bin/sh -c``, a process of
its own each time) and waits for it. Measured here the same way, against a real hub
(SQLite): ``taskcast claude-code hook`` for hook calls that publish — a ``PostToolUse``
(one ``tool_executed``) and a ``PostToolUse`` whose transcript gained a response
(``api_action``, ``history_appended``, ``llm_usage``, a tool result) — next to a no-op
hook command (``true``), rounds interleaved. Writes its section into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import write_section
from servers import REPO, taskcast

TASKCAST = Path(sys.executable).parent / "taskcast"


def timed(command: str, stdin: str, env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(["/bin/sh", "-c", command], input=stdin, text=True, env=env, check=True)
    return (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=200, help="per kind of hook call")
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "benchmarks.md")
    args = parser.parse_args()
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(REPO / "src" / "taskcast")], check=True
    )
    server = taskcast()
    state = Path(tempfile.mkdtemp(prefix="taskcast-hook-bench-"))
    env = {**os.environ, "TASKCAST_CLAUDE_CODE_DIR": str(state / "state")}
    transcript = state / "transcript.jsonl"
    transcript.write_text("")
    hook = f"{TASKCAST} claude-code hook --hub {server.url}"
    timings: dict[str, list[float]] = {
        "true (no-op)": [],
        "PostToolUse": [],
        "PostToolUse + a response": [],
    }
    try:
        for n in range(args.calls):
            base = {"session_id": "bench", "transcript_path": str(transcript), "cwd": str(state),
                    "hook_event_name": "PostToolUse", "tool_name": "Bash",
                    "tool_input": {"command": f"echo {n}"}, "tool_response": {"stdout": str(n)}}  # fmt: skip
            timings["true (no-op)"].append(timed("true", json.dumps(base), env))
            timings["PostToolUse"].append(timed(hook, json.dumps(base), env))
            message = {"id": f"msg_{n}", "model": "claude-bench", "usage": {"input_tokens": 100, "output_tokens": 10},
                       "content": [{"type": "text", "text": f"step {n}"}, {"type": "tool_use", "id": f"t{n}", "name": "Bash", "input": {"command": "ls"}}]}  # fmt: skip
            result = {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": f"t{n}", "content": "ok"}],
            }
            with transcript.open("a") as out:
                out.write(json.dumps({"type": "assistant", "message": message}) + "\n")
                out.write(json.dumps({"type": "user", "message": result}) + "\n")
            timings["PostToolUse + a response"].append(timed(hook, json.dumps(base), env))
    finally:
        server.stop()
    log = state / "state" / "hook.log"
    assert not log.exists(), log.read_text()

    def pct(values: list[float], p: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(len(ordered) * p))]

    baseline = statistics.median(timings["true (no-op)"])
    rows = [
        f"| {name} | {statistics.median(values):.1f} | {pct(values, 0.99):.1f} | {max(values):.1f} "
        f"| {statistics.median(values) - baseline:+.1f} |"
        for name, values in timings.items()
    ]
    section = "\n".join(
        [
            "## Claude Code hook calls — `python bench/claude_code_hook.py`",
            "",
            f"{args.calls} calls of each kind, interleaved, each a `/bin/sh -c` process as Claude Code "
            "starts them, against a hub on SQLite. Target: p50 ≤ 60 ms, p99 ≤ 150 ms for a call "
            "that publishes.",
            "",
            "| hook command | p50 (ms) | p99 (ms) | max (ms) | p50 over `true` (ms) |",
            "|---|---:|---:|---:|---:|",
            *rows,
        ]
    )
    print(section)
    write_section(args.output, "claude-code-hook", section)


if __name__ == "__main__":
    main()
