"""README.rst and the docs hold up: the first commands are CI's, commands parse, code compiles.

The examples themselves run in tests/integration/test_readme.py; this module also holds
the parsing both use, of README.rst and of every page under docs/ (README first, then the
pages by path: a file an example writes is there for every example after it). A code
block may be preceded by an RST comment (invisible once rendered) that tells the test
what to do with it:

- ``.. test: file NAME``: write the block to NAME in the examples' directory; run nothing;
- ``.. test: sigterm when the worker is live``: the block runs until signalled: send it
  SIGTERM once its worker pool shows up in Redis, and expect exit code 0;
- ``.. test: with a cluster`` / ``.. test: with sentinels``: ``REDIS_URL`` is the
  ``redis+cluster://`` or ``redis+sentinel://`` URL of the session's topology;
- ``.. test: pytest``: the block is a test module: run it with pytest (and the
  jobs.testing plugin), and expect every test in it to pass.
"""

from __future__ import annotations

import json
import re
import shlex
import textwrap
from pathlib import Path

import attrs
import pytest

from jobs.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.rst"
DOCS = ROOT / "docs"
DEMO_COMMAND = (
    "python3 -m venv .venv && .venv/bin/pip install -q '.[embedded]'"
    " && .venv/bin/python -m jobs demo"
)
TEST_COMMAND = (
    "python3 -m venv .venv && .venv/bin/pip install -q -c .ci/constraints-tools.txt tox"
    " && .venv/bin/tox"
)
DIRECTIVES = (
    "file ",
    "sigterm when the worker is live",
    "with a cluster",
    "with sentinels",
    "pytest",
)
#: A job id in a console example, standing for the one the previous enqueue printed.
JOB_ID = re.compile(r"\b[0-9a-f]{32}\b")


def documents() -> list[Path]:
    """README.rst, then every page of the documentation, by path."""
    return [README, *sorted(DOCS.rglob("*.rst"))]


def _name(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


@attrs.frozen
class Block:
    """One ``.. code-block::`` of README.rst or of a page under docs/."""

    language: str
    line: int  # 1-based line of the directive
    code: str
    directive: str | None  # the ``.. test:`` comment before it, if any
    source: str = "README.rst"  # the document, relative to the repository

    @property
    def where(self) -> str:
        """``document:line``, for messages and test ids."""
        return f"{self.source}:{self.line}"

    @property
    def file_name(self) -> str | None:
        if self.directive is not None and self.directive.startswith("file "):
            return self.directive.removeprefix("file ").strip()
        return None


def blocks(text: str | None = None, source: str = "README.rst") -> list[Block]:
    """Every code block of one document (README.rst unless told), in order."""
    lines = ((ROOT / source).read_text() if text is None else text).splitlines()
    found = []
    directive: str | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith(".. test: "):
            directive = line.removeprefix(".. test: ").strip()
        elif match := re.match(r"\.\. code-block:: (\S+)\s*$", line):
            start = i
            i += 1
            body = []
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith("   ")):
                body.append(lines[i])
                i += 1
            code = textwrap.dedent("\n".join(body)).strip("\n") + "\n"
            found.append(Block(match.group(1), start + 1, code, directive, source))
            directive = None
            continue
        elif line.strip():
            directive = None if not line.startswith("..") else directive
        i += 1
    return found


def all_blocks() -> list[Block]:
    """Every code block of README.rst and of the documentation, in document order."""
    return [block for path in documents() for block in blocks(source=_name(path))]


def all_text() -> str:
    """README.rst and every page of the documentation, one after the other."""
    return "\n".join(path.read_text() for path in documents())


def python_blocks() -> list[Block]:
    return [b for b in all_blocks() if b.language == "python"]


def console_commands() -> list[tuple[Block, str]]:
    """Every ``$ ...`` line of the console blocks."""
    return [
        (block, line.removeprefix("$ ").strip())
        for block in all_blocks()
        if block.language == "console"
        for line in block.code.splitlines()
        if line.startswith("$ ")
    ]


def jobs_invocations() -> list[tuple[str, list[str]]]:
    """The arguments of every ``python -m jobs`` the docs show, in any kind of block."""
    found: list[tuple[str, list[str]]] = []
    for block in all_blocks():
        for line in block.code.splitlines():
            if line.lstrip().startswith("CMD ["):
                argv = json.loads(line.split("CMD", 1)[1])
                if argv[:3] == ["python", "-m", "jobs"]:
                    found.append((block.where, argv[3:]))
                continue
            for command in line.split("&&"):
                match = re.search(r"python3? -m jobs(?: (.*))?$", command.strip())
                if match:
                    found.append((block.where, shlex.split(match.group(1) or "")))
    return found


def test_readme_opens_with_the_demo_and_the_test_command() -> None:
    first, second = blocks()[:2]
    assert first.code.strip() == f"$ {DEMO_COMMAND}"
    assert second.code.strip() == f"$ {TEST_COMMAND}"
    head = README.read_text()[: README.read_text().index(TEST_COMMAND)]
    assert head.count("\n") < 20, "the two commands come first, not after a page of prose"


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert TEST_COMMAND in ci.splitlines()


def test_every_python_block_compiles() -> None:
    for block in python_blocks():
        compile(block.code, block.where, "exec")


def test_directives_are_known_and_files_exist_before_use() -> None:
    written: dict[str, Block] = {}
    for block in all_blocks():
        if block.directive is not None:
            assert block.directive.startswith(DIRECTIVES), (block.where, block.directive)
            assert block.language == "python", block.where
        if block.file_name is not None:
            name = block.file_name.removesuffix(".py")
            # One file, one text: the examples' directory holds a single app.py.
            assert name not in written, f"{block.where} writes {name} again"
            written[name] = block
        for module in re.findall(r"^from (\w+) import", block.code, re.MULTILINE):
            if module in ("app", "crons"):
                assert module in written, f"{block.where} imports {module} first"
    assert {"app", "crons"} <= written.keys()


@pytest.mark.parametrize(
    ("where", "argv"), jobs_invocations(), ids=lambda v: v if isinstance(v, str) else None
)
def test_every_command_line_in_the_docs_parses(where: str, argv: list[str]) -> None:
    assert argv, f"{where}: python -m jobs without a command"
    if "--help" in argv:
        with pytest.raises(SystemExit) as exit_info:
            build_parser().parse_args(argv)
        assert exit_info.value.code == 0
        return
    args = build_parser().parse_args(argv)
    assert callable(args.func)


def test_every_subcommand_appears_in_the_docs() -> None:
    shown = {argv[0] for _, argv in jobs_invocations() if argv and not argv[0].startswith("-")}
    commands = {"worker", "scheduler", "enqueue", "get", "cancel", "retry", "list", "purge"}
    commands |= {"stats", "workers", "demo"}
    text = all_text()
    for command in commands - shown:
        assert f"``{command} " in text or f"``{command}``" in text, command


def test_readme_is_valid_restructuredtext() -> None:
    core = pytest.importorskip("docutils.core")
    import io

    warnings = io.StringIO()
    core.publish_doctree(
        README.read_text(),
        settings_overrides={"report_level": 1, "halt_level": 5, "warning_stream": warnings},
    )
    assert warnings.getvalue() == ""


def test_block_parser() -> None:
    text = textwrap.dedent(
        """\
        Intro.

        .. test: file app.py

        .. code-block:: python

           x = 1

           y = 2

        Prose.

        .. code-block:: console

           $ python -m jobs stats
        """
    )
    first, second = blocks(text)
    assert first == Block("python", 5, "x = 1\n\ny = 2\n", "file app.py")
    assert first.file_name == "app.py"
    assert second == Block("console", 13, "$ python -m jobs stats\n", None)
    assert blocks(text, source="docs/x.rst")[0].where == "docs/x.rst:5"


def _test_functions(path: Path) -> set[str]:
    return set(re.findall(r"^(?:async )?def (test_\w+)\(", path.read_text(), re.M))


#: ``test_x.py::test_a`` (a path under the root, or a file name), then ``::test_b`` (the
#: same file), a file alone, or ``test_a`` alone (in some test file).
_TEST_REF = re.compile(r"((?:[\w/]*/)?test_\w+\.py)?(::)?\b(test_\w+)?\b(?!\.py)")


@pytest.mark.parametrize("document", documents(), ids=_name)
def test_every_test_the_docs_name_exists(document: Path) -> None:
    # "Guarantees" names the test behind each promise: a renamed or moved test must not
    # leave the docs pointing at nothing, or at another file. tests/unit and
    # tests/integration may each have a file of one name: a bare name may be either.
    tests = {p: _test_functions(p) for p in ROOT.glob("tests/**/test_*.py")}
    current: list[Path] = []
    wrong = []
    for literal in re.findall(r"``([^`]+)``", document.read_text()):
        for path, scope, name in _TEST_REF.findall(literal):
            if path:
                current = [p for p in tests if p == ROOT / path or p.name == path]
                if not current:
                    wrong.append(f"{literal}: no file {path}")
                    continue
            if not name:
                continue
            where = current if (scope or path) else list(tests)
            if not any(name in tests[p] for p in where):
                wrong.append(f"{literal}: no {name} in {[_name(p) for p in where][:2]}")
    assert not wrong, wrong


def test_the_readme_links_every_page_of_the_docs() -> None:
    # The README is the docs' table of contents on a code host, where the site is not
    # built: each link must lead to a page, and each page must be reachable.
    linked = re.findall(r"<(docs/[^>]+\.rst)>`__", README.read_text())
    assert linked
    for page in linked:
        assert (ROOT / page).is_file(), page
    pages = {_name(p) for p in DOCS.rglob("*.rst")} - {"docs/index.rst"}
    assert pages - set(linked) == set(), "pages the README does not link"


def test_every_public_name_is_in_the_api_reference() -> None:
    import jobs

    api = (DOCS / "api.rst").read_text()
    documented = set(re.findall(r"^\.\. (?:auto(?!module)\w+|py:\w+):: jobs\.(\w+)\s*$", api, re.M))
    assert set(jobs.__all__) - documented == set(), "public names missing from docs/api.rst"
    assert documented - set(jobs.__all__) == set(), "docs/api.rst documents a non-public name"


def test_the_readme_stays_short() -> None:
    # The README says what the library is, how to start, and where the docs are; the
    # rest lives in docs/ (issue 12: four documents in one had become hard to read).
    assert README.read_text().count("\n") <= 250
