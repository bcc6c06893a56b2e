"""The wheel ships what the package needs at run time: Lua scripts, assets, ``py.typed``,
entry points."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(180)
def test_the_wheel_holds_the_lua_scripts_and_py_typed(tmp_path: Path) -> None:
    # Built from a copy, so that the build's own files (build/, *.egg-info) stay out of
    # the checkout.
    source = tmp_path / "src"
    source.mkdir()
    for name in ("setup.cfg", "setup.py", "README.rst"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "jobs", source / "jobs", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path / "dist"
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (wheel,) = out.glob("jobs-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    scripts = {p.name for p in (ROOT / "jobs" / "queue" / "lua").glob("*.lua")}
    assert scripts >= {"_lib.lua", "enqueue.lua", "fetch.lua", "complete.lua", "fail.lua"}
    assert {f"jobs/queue/lua/{name}" for name in scripts} <= names
    assert "jobs/py.typed" in names
    # The dashboard's assets: it loads nothing from anywhere else.
    assert {"jobs/dashboard/static/style.css", "jobs/dashboard/static/app.js"} <= names
    assert not any(name.startswith("tests/") for name in names)
    # pytest finds the jobs.testing plugin through this entry point.
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[pytest11]\njobs = jobs.testing.plugin" in text, text
