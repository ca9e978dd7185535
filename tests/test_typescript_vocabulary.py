"""The TypeScript SDK's closed sets are generated from the Python ones
(scripts/gen_ts_vocabulary.py): this fails when clients/typescript/src/vocabulary.ts is
not what the enums render — run the script after changing an enum."""

from __future__ import annotations

import importlib.util

from tests.conftest import REPO


def test_the_typescript_vocabulary_is_generated_from_the_python_enums() -> None:
    spec = importlib.util.spec_from_file_location(
        "gen_ts_vocabulary", REPO / "scripts" / "gen_ts_vocabulary.py"
    )
    assert spec is not None and spec.loader is not None
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    committed = (REPO / "clients" / "typescript" / "src" / "vocabulary.ts").read_text()
    assert committed == generator.render(), "run .venv/bin/python scripts/gen_ts_vocabulary.py"
    for name in ("runner_lost", "lost", "store_unavailable", "approve", "task_ended"):
        assert f'"{name}"' in committed
