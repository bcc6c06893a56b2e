"""What is written twice agrees: the Lua and Python field lists, each script's header and
its code, the ``versionadded`` markers and the version, the architecture page and the key
schema and scripts.

The files are found by what they hold, not by where they sit (``jobs/**/lua``, the module
defining ``FETCHED_FIELDS``): the package's layout may change, these facts may not.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import attrs
import pytest
from packaging.version import Version

import jobs

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "jobs"
ARCHITECTURE = ROOT / "docs" / "architecture.rst"


def _lua_dir() -> Path:
    found = {p.parent for p in PACKAGE.rglob("lua/fetch.lua")}
    assert len(found) == 1, found
    return found.pop()


def _scripts() -> list[Path]:
    return sorted(p for p in _lua_dir().glob("*.lua") if not p.name.startswith("_"))


def _python_constant(name: str) -> tuple[str, ...]:
    """The tuple of strings a module of the package assigns to ``name``, read from source."""
    values = [
        tuple(ast.literal_eval(node.value))
        for path in PACKAGE.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == name for t in node.targets)
        and isinstance(node.value, ast.Tuple)
    ]
    assert len(values) == 1, f"{name} is assigned {len(values)} times in jobs/"
    return values[0]


def _header_and_code(path: Path) -> tuple[str, str]:
    """The leading comment block of a script, and the rest without its comments."""
    lines = path.read_text().splitlines()
    end = next(i for i, line in enumerate(lines) if not line.startswith("--"))
    code = [re.sub(r"--.*$", "", line) for line in lines[end:]]
    return "\n".join(lines[:end]), "\n".join(code)


def test_fetch_returns_the_fields_the_codec_decodes_in_its_order() -> None:
    # fetch.lua returns HMGET values without their names: the Python decoder zips them
    # with FETCHED_FIELDS, so one field out of place decodes every job wrongly.
    _, code = _header_and_code(_lua_dir() / "fetch.lua")
    match = re.search(r"local FIELDS = \{(.*?)\}", code, re.DOTALL)
    assert match is not None
    lua = tuple(re.findall(r"'(\w+)'", match.group(1)))
    assert lua == _python_constant("FETCHED_FIELDS")


def test_the_history_fields_python_reads_are_the_ones_lua_counts() -> None:
    lib = (_lua_dir() / "_lib.lua").read_text()
    scripts = "\n".join(p.read_text() for p in _scripts()) + lib
    counted = set(re.findall(r"count_minute\(.*, now, '(\w+)'", scripts))
    # finalize counts each job under the final status its callers give it (finish_call
    # writes those counts, summed per status, at the end of the script call).
    if re.search(r"count_minute\(.*, call_totals\.now, status, n\)", lib):
        counted |= set(re.findall(r"finalize\([^,]+, [^,]+, '(\w+)'", scripts))
    assert set(_python_constant("_HISTORY_FIELDS")) == counted


def _documented(header: str) -> tuple[set[int], set[int], list[tuple[int, int]], dict[int, int]]:
    """KEYS, single ARGV, closed ARGV ranges, and open ARGV ranges with their stride."""
    keys = {int(n) for n in re.findall(r"KEYS\[(\d+)\]", header)}
    single: set[int] = set()
    ranges: list[tuple[int, int]] = []
    open_ranges: dict[int, int] = {}
    for line in header.splitlines():
        for start, dots, stop in re.findall(r"ARGV\[(\d+)(\.\.)?(\d*)\]", line):
            if not dots:
                single.add(int(start))
            elif stop:
                ranges.append((int(start), int(stop)))
            else:
                stride = re.search(r"(\d+) values per", line)
                assert stride is not None, f"ARGV[{start}..] without 'N values per ...': {line}"
                open_ranges[int(start)] = int(stride.group(1))
    return keys, single, ranges, open_ranges


@pytest.mark.parametrize("script", _scripts(), ids=lambda p: p.name)
def test_each_script_header_documents_exactly_what_it_reads(script: Path) -> None:
    header, code = _header_and_code(script)
    assert header.startswith(f"-- {script.name}: "), "the header opens with the script's name"
    keys, single, ranges, open_ranges = _documented(header)
    used_keys = {int(n) for n in re.findall(r"KEYS\[(\d+)\]", code)}
    used_argv = {int(n) for n in re.findall(r"ARGV\[(\d+)\]", code)}
    loops = {
        int(start): int(step)
        for start, step in re.findall(r"for \w+ = (\d+), #ARGV, (\d+) do", code)
    }
    assert used_keys == keys, "KEYS the code reads vs the header's"
    assert keys == set(range(1, len(keys) + 1)), "KEYS are numbered 1..n"
    assert open_ranges == loops, "variadic ARGV tails (start: values per item) vs the loops"
    in_ranges = {n for start, stop in ranges for n in range(start, stop + 1)}
    undocumented = {
        n for n in used_argv - single - in_ranges if not any(n >= start for start in open_ranges)
    }
    assert not undocumented, f"ARGV the code reads and the header does not name: {undocumented}"
    assert single <= used_argv, (
        f"ARGV the header names and the code never reads: {single - used_argv}"
    )
    assert in_ranges <= used_argv, f"ARGV ranges the code does not read: {in_ranges - used_argv}"
    documented = single | in_ranges
    first_open = min(open_ranges, default=max(documented, default=0) + 1)
    assert documented == set(range(1, first_open)), "ARGV are numbered 1..n, then the tail"


def test_versionadded_markers_do_not_pass_the_package_version() -> None:
    # Nothing released may claim a later version; attrs keeps its markers this honest.
    version = Version(jobs.__version__)
    markers = [
        (path.relative_to(ROOT).as_posix(), match.group(1))
        for path in PACKAGE.rglob("*.py")
        for match in re.finditer(r"\.\. version(?:added|changed):: (\S+)", path.read_text())
    ]
    assert markers
    late = [(where, marker) for where, marker in markers if Version(marker) > version]
    assert not late, f"markers past {version}: {late}"


def test_the_architecture_page_lists_every_script() -> None:
    text = ARCHITECTURE.read_text()
    rows = set(re.findall(r"^(\w+)\s{2,}", text, re.MULTILINE))
    assert {p.stem for p in _scripts()} <= rows


def test_the_architecture_page_lists_every_key_of_a_queue() -> None:
    queue = jobs.RedisQueue.from_url("redis://localhost:1/0", name="q")
    try:
        keys = queue.keys
        named = [v for v in attrs.asdict(keys).values() if v != keys.base]
        named += [
            keys.job("ID"),
            keys.worker("POOL"),
            keys.cron("ID"),
            keys.request("REQUEST"),
            keys.unique("KEY"),
            keys.history(0).removesuffix("0") + "MINUTE",
            keys.pool_wake("POOL"),
            keys.dependents("ID"),
            keys.held("TYPE"),
            keys.running("TYPE"),
        ]
    finally:
        queue.close()
    shown = {name.replace(keys.base, "B:").removesuffix(":") for name in named} - {
        "B:job",
        "B:worker",
        "B:cron",
        "B:history",
        "B:dependents",
    }  # prefixes of the keys above
    documented = set(re.findall(r"^``(B:[\w:]+)``", ARCHITECTURE.read_text(), re.MULTILINE))
    assert shown == documented
