"""docs/benchmarks.md is written by several scripts: each owns one marked section
(``<!-- name:begin -->`` … ``<!-- name:end -->``) and replaces only that one."""

from __future__ import annotations

import re
from pathlib import Path

_BLOCK = re.compile(r"<!-- ([a-z-]+):begin -->.*?<!-- \1:end -->", re.S)


def write_section(path: Path, name: str, section: str) -> None:
    """Put ``section`` in the file as the block ``name`` (replacing the old one)."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"<!-- {name}:begin -->\n{section}\n<!-- {name}:end -->"
    pattern = re.compile(rf"<!-- {name}:begin -->.*?<!-- {name}:end -->", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def marked_sections(text: str) -> list[str]:
    """Every marked block in ``text``, in order (for a script that rewrites the rest)."""
    return [match.group(0) for match in _BLOCK.finditer(text)]
