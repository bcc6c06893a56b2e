"""mypy --strict checks enqueues of a `JobType`: the payload's type and the result's.

Runs mypy over `tests/typing_samples`: `typed_ok.py` must pass, and `typed_bad.py` must
fail on exactly the lines marked ``# E:``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from mypy import api

SAMPLES = Path(__file__).resolve().parents[1] / "typing_samples"
ROOT = SAMPLES.parents[1]


def _errors(path: Path, tmp_path: Path) -> tuple[set[int], str]:
    # mypy raises the interpreter's recursion limit for good; the JSON encoder's depth
    # bound follows it, so later tests in this process would see deeper payloads pass.
    limit = sys.getrecursionlimit()
    try:
        out, err, _ = api.run(
            [
                "--config-file",
                str(ROOT / "setup.cfg"),
                "--cache-dir",
                str(tmp_path / "mypy-cache"),
                "--no-error-summary",
                str(path),
            ]
        )
    finally:
        sys.setrecursionlimit(limit)
    lines = {
        int(m.group(1))
        for m in re.finditer(rf"^{re.escape(path.name)}:(\d+): error:", out, re.MULTILINE)
    }
    return lines, out + err


@pytest.mark.timeout(180)
def test_typed_enqueues_pass_mypy_and_wrong_ones_fail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(SAMPLES)
    ok, report = _errors(SAMPLES / "typed_ok.py", tmp_path)
    assert not ok, report
    bad = SAMPLES / "typed_bad.py"
    marked = {
        number
        for number, line in enumerate(bad.read_text().splitlines(), start=1)
        if "# E:" in line
    }
    found, report = _errors(bad, tmp_path)
    assert found == marked, report
