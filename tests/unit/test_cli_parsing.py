"""The command line's parser, in process: no abbreviations, and what a supervised child runs."""

from __future__ import annotations

import argparse

import pytest

from jobs.cli._commands import child_argv as _child_argv
from jobs.cli._main import build_parser
from jobs.errors import UsageError


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(actions[0].choices)


def _long_options(parser: argparse.ArgumentParser) -> list[str]:
    return [s for a in parser._actions for s in a.option_strings if s.startswith("--")]


def _cases() -> list[tuple[str, str]]:
    parser = build_parser()
    return [
        (command, option)
        for command, sub in _subparsers(parser).items()
        for option in _long_options(sub)
        if option not in ("--help", "--version") and len(option) > 3
    ]


@pytest.mark.parametrize(("command", "option"), _cases())
def test_no_option_may_be_abbreviated(command: str, option: str) -> None:
    # ``--proc`` for ``--processes`` once reached the children unedited: every child
    # became a supervisor again, an endless chain of processes.
    required = {"worker": ["app:x"], "scheduler": ["app:x"], "list": ["--status=failed"]}
    required["purge"] = required["list"]
    argv = [command, *required.get(command, [])]
    with pytest.raises(UsageError, match="unrecognized arguments"):
        build_parser().parse_args([*argv, option[:-1], "1"])


def test_a_supervised_child_runs_the_same_worker_without_processes() -> None:
    parser = build_parser()
    argv = [
        "--queue=-odd",  # a value that looks like an option stays a value
        "worker",
        "app:registry",
        "--processes",
        "3",
        "--workers",
        "4",
        "--scheduler",
        "app:crons",
        "--pool-config",
        "app:pool",
        "--shutdown-timeout",
        "0.1",
        "--lease",
        "2.5",
        "--poll-interval",
        "1e-05",
        "--prefix",
        "tenant",
        "--log-level",
        "DEBUG",
        "--log-format",
        "json",
        "--redis-url",
        "redis://user:secret@host:1/0",
        "--metrics-port",
        "9100",
        "--metrics-host",
        "0.0.0.0",
    ]
    args = parser.parse_args(argv)
    child_argv = _child_argv(args)
    assert not [a for a in child_argv if a.startswith("--proc")]
    # The URL (and its password) reaches the child by environment, not in `ps`.
    assert not [a for a in child_argv if "secret" in a]
    child = parser.parse_args(child_argv)
    expected = {k: v for k, v in vars(args).items() if k not in ("processes", "redis_url")}
    assert {k: v for k, v in vars(child).items() if k != "processes"} == expected
    assert child.processes is None
