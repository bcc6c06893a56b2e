"""README.rst holds up: its first commands are CI's, its commands parse, its code compiles.

The examples themselves run in tests/integration/test_readme.py; this module also holds
the README parsing both use. A code block may be preceded by an RST comment (invisible
once rendered) that tells the test what to do with it:

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


@attrs.frozen
class Block:
    """One ``.. code-block::`` of the README."""

    language: str
    line: int  # 1-based line of the directive
    code: str
    directive: str | None  # the ``.. test:`` comment before it, if any

    @property
    def file_name(self) -> str | None:
        if self.directive is not None and self.directive.startswith("file "):
            return self.directive.removeprefix("file ").strip()
        return None


def blocks(text: str | None = None) -> list[Block]:
    """Every code block of the README, in order."""
    lines = (README.read_text() if text is None else text).splitlines()
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
            found.append(Block(match.group(1), start + 1, code, directive))
            directive = None
            continue
        elif line.strip():
            directive = None if not line.startswith("..") else directive
        i += 1
    return found


def python_blocks() -> list[Block]:
    return [b for b in blocks() if b.language == "python"]


def console_commands() -> list[tuple[Block, str]]:
    """Every ``$ ...`` line of the console blocks."""
    return [
        (block, line.removeprefix("$ ").strip())
        for block in blocks()
        if block.language == "console"
        for line in block.code.splitlines()
        if line.startswith("$ ")
    ]


def jobs_invocations() -> list[tuple[int, list[str]]]:
    """The arguments of every ``python -m jobs`` the README shows, in any kind of block."""
    found: list[tuple[int, list[str]]] = []
    for block in blocks():
        for line in block.code.splitlines():
            if line.lstrip().startswith("CMD ["):
                argv = json.loads(line.split("CMD", 1)[1])
                if argv[:3] == ["python", "-m", "jobs"]:
                    found.append((block.line, argv[3:]))
                continue
            for command in line.split("&&"):
                match = re.search(r"python3? -m jobs(?: (.*))?$", command.strip())
                if match:
                    found.append((block.line, shlex.split(match.group(1) or "")))
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
        compile(block.code, f"README.rst:{block.line}", "exec")


def test_directives_are_known_and_files_exist_before_use() -> None:
    written: set[str] = set()
    for block in blocks():
        if block.directive is not None:
            assert block.directive.startswith(DIRECTIVES), (block.line, block.directive)
            assert block.language == "python", block.line
        if block.file_name is not None:
            written.add(block.file_name.removesuffix(".py"))
        for module in re.findall(r"^from (\w+) import", block.code, re.MULTILINE):
            if module in ("app", "crons"):
                assert module in written, f"README.rst:{block.line} imports {module} first"
    assert {"app", "crons"} <= written


@pytest.mark.parametrize(
    ("line", "argv"), jobs_invocations(), ids=lambda v: str(v) if isinstance(v, int) else None
)
def test_every_command_line_in_the_readme_parses(line: int, argv: list[str]) -> None:
    assert argv, f"README.rst:{line}: python -m jobs without a command"
    if "--help" in argv:
        with pytest.raises(SystemExit) as exit_info:
            build_parser().parse_args(argv)
        assert exit_info.value.code == 0
        return
    args = build_parser().parse_args(argv)
    assert callable(args.func)


def test_every_subcommand_appears_in_the_readme() -> None:
    shown = {argv[0] for _, argv in jobs_invocations() if argv and not argv[0].startswith("-")}
    commands = {"worker", "scheduler", "enqueue", "get", "cancel", "retry", "list", "purge"}
    commands |= {"stats", "workers", "demo"}
    text = README.read_text()
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


def test_every_test_the_readme_names_exists() -> None:
    # "Guarantees" names the test behind each promise: a renamed test must not leave the
    # README pointing at nothing.
    text = README.read_text()
    named = re.findall(r"(test_\w+\.py)((?:::test_\w+)?)", text)
    assert named
    for file_name, test in named:
        path = next(ROOT.glob(f"tests/**/{file_name}"), None)
        assert path is not None, file_name
        if test:
            assert f"def {test.removeprefix('::')}(" in path.read_text(), (file_name, test)
    for test in re.findall(r"``::(test_\w+)``", text):
        assert any(f"def {test}(" in p.read_text() for p in ROOT.glob("tests/**/*.py")), test
