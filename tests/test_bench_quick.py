"""The benchmark runner works end to end (correctness only: no timing is asserted)."""

from __future__ import annotations

import json
import os

import pytest

from bench import run

pytestmark = pytest.mark.server


def test_quick_bench_uploads_everything_and_leaves_nothing(tmp_path, capsys):
    db = "postgres" if os.environ.get("TEMPSTORE_TEST_DB") == "postgres" else "sqlite"
    code = run.main(
        ["--quick", "--db", db, "--dir", str(tmp_path), "--save", str(tmp_path / "r.json")]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "0 errors | PASS" in out
    assert "0 series left something | PASS" in out
    data = json.loads((tmp_path / "r.json").read_text())
    configs = {r["config"] for r in data["results"]}
    assert configs == {c[0] for c in run.CONFIGS}
    assert all(r["errors"] == [] and r["left_files"] == 0 for r in data["results"])
    assert list(tmp_path.iterdir()) == [tmp_path / "r.json"]
