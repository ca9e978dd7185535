"""The lock file must install on a fresh machine: every line a plain ``name==version``
pin from the package index (a ``name @ file:///…`` line from a local wheel once slipped
in and only installed where that wheel happened to lie)."""

from __future__ import annotations

import re
from pathlib import Path

LOCK = Path(__file__).resolve().parent.parent / "requirements.lock"
PIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9,._-]+\])?==[A-Za-z0-9.+!_-]+$")


def test_every_lock_line_is_an_index_pin() -> None:
    lines = [line.strip() for line in LOCK.read_text().splitlines()]
    pins = [line for line in lines if line and not line.startswith("#")]
    assert pins, "the lock is empty"
    assert [line for line in pins if not PIN.match(line)] == []
