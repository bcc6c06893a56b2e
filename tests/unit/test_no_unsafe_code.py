"""No code execution from data: the package never deserializes with pickle and never evals.

A Redis that an attacker can write to (a shared instance, a leaked password) must not
become code execution in every worker. JSON-only payloads are the first half of that
promise; this scan is the second: no module of ``jobs`` may even import a deserializer
that runs code, or call the builtins that compile strings into code. The scan reads the
source with `ast`, so comments and docstrings that mention these names do not count.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import jobs

PACKAGE = Path(jobs.__file__).resolve().parent
#: Modules whose loaders run code found in the data they read.
FORBIDDEN_MODULES = frozenset({"pickle", "cPickle", "_pickle", "marshal", "shelve", "dill"})
#: Builtins that turn a string into running code.
FORBIDDEN_CALLS = frozenset({"eval", "exec", "compile", "__import__"})


def _sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _violations(path: Path) -> list[str]:
    tree = ast.parse(path.read_text("utf-8"), filename=str(path))
    found: list[str] = []
    called = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}

    def where(node: ast.AST) -> str:
        return f"{path.name}:{getattr(node, 'lineno', '?')}"

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(
                f"{where(node)} imports {alias.name}"
                for alias in node.names
                if alias.name.split(".")[0] in FORBIDDEN_MODULES
            )
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if module.split(".")[0] in FORBIDDEN_MODULES:
                found.append(f"{where(node)} imports from {module}")
            # `from builtins import eval` would dodge the call check below.
            if module == "builtins":
                found.extend(
                    f"{where(node)} imports builtins.{alias.name}"
                    for alias in node.names
                    if alias.name in FORBIDDEN_CALLS
                )
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in FORBIDDEN_CALLS:
                found.append(f"{where(node)} calls {func.id}()")
            # builtins.eval(...), __builtins__.exec(...); re.compile() and friends are
            # methods of other objects and stay allowed.
            elif (
                isinstance(func, ast.Attribute)
                and func.attr in FORBIDDEN_CALLS
                and isinstance(func.value, ast.Name)
                and func.value.id in {"builtins", "__builtins__"}
            ):
                found.append(f"{where(node)} calls {func.value.id}.{func.attr}()")
        elif (
            isinstance(node, ast.Name)
            and node.id in FORBIDDEN_CALLS
            and isinstance(node.ctx, ast.Load)
            and id(node) not in called
        ):
            # eval passed around as a value is as bad as a call.
            found.append(f"{where(node)} refers to {node.id}")
    return found


def test_the_scan_covers_the_whole_package() -> None:
    names = {p.relative_to(PACKAGE).as_posix() for p in _sources()}
    # The modules that touch untrusted bytes must be among those scanned.
    assert {"_codec.py", "queue/redis_queue.py", "worker/_attempt.py", "client.py"} <= names


@pytest.mark.parametrize("path", _sources(), ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_no_code_executing_deserializers_or_eval(path: Path) -> None:
    assert _violations(path) == []


def test_the_scan_catches_each_forbidden_form(tmp_path: Path) -> None:
    # A scanner that finds nothing proves nothing unless it can find something.
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import pickle\n"
        "import marshal as m\n"
        "from shelve import open as o\n"
        "from builtins import exec\n"
        "import builtins\n"
        "x = eval('1')\n"
        "compile('1', 'f', 'eval')\n"
        "__import__('os')\n"
        "builtins.exec('pass')\n"
        "f = eval\n",
        "utf-8",
    )
    tree_text = "\n".join(_violations(bad))
    for expected in (
        "imports pickle",
        "imports marshal",
        "imports from shelve",
        "imports builtins.exec",
        "calls eval()",
        "calls compile()",
        "calls __import__()",
        "calls builtins.exec()",
        "refers to eval",
    ):
        assert expected in tree_text


def test_method_calls_named_like_builtins_are_allowed(tmp_path: Path) -> None:
    fine = tmp_path / "fine.py"
    fine.write_text("import re\npattern = re.compile('a+')\nmodel = object()\n", "utf-8")
    assert _violations(fine) == []
