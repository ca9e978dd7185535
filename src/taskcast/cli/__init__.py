"""The ``taskcast`` command line: one module per command group, shared options in
``options``, the group itself in ``app``. ``main`` is the entry point
(``taskcast = "taskcast.cli:main"``).

A Claude Code hook (``taskcast claude-code hook``) runs at every step of a session and
must start in tens of milliseconds: it skips click (whose import alone costs a hook
34 ms) and runs straight away; every other command goes through the click group, which
imports each command's module only when it runs.
"""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:3] == ["claude-code", "hook"]:
        from taskcast.integrations.claude_code.hook import main_from_args

        main_from_args(sys.argv[3:])
        return
    from taskcast.cli.app import main as group

    group()


__all__ = ["main"]
