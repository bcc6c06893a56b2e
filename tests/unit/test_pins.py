"""The versions CI runs against are pinned; the library's own requirements are not."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
CI = ROOT / ".ci"


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pins(path: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("-c "):
            pins.update(_pins(path.parent / line.removeprefix("-c ").strip()))
            continue
        name, sep, version = line.partition("==")
        assert sep, f"{path.name}: {line!r} is not pinned with =="
        pins[_name(name)] = version
    return pins


def _setup_cfg() -> configparser.ConfigParser:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    return config


def _requirements(config: configparser.ConfigParser, section: str, key: str) -> list[str]:
    return [line for line in config[section][key].splitlines() if line.strip()]


def test_every_requirement_of_the_suite_is_pinned() -> None:
    config = _setup_cfg()
    pins = _pins(CI / "constraints.txt")
    wanted = _requirements(config, "options", "install_requires")
    for extra in ("test", "type", "lint", "docs"):
        wanted += _requirements(config, "options.extras_require", extra)
    missing = sorted({_name(r) for r in wanted} - pins.keys() - {"types-python-dateutil"})
    assert not missing, f"not pinned in .ci/constraints.txt: {missing}"
    assert "tox" in pins and "ruff" in pins


def test_the_library_keeps_lower_bounds_only() -> None:
    for requirement in _requirements(_setup_cfg(), "options", "install_requires"):
        assert ">=" in requirement and "==" not in requirement and "<" not in requirement


def test_lowest_pins_match_the_lower_bounds() -> None:
    lowest = _pins(CI / "lowest.txt")
    for requirement in _requirements(_setup_cfg(), "options", "install_requires"):
        name, _, bound = requirement.partition(">=")
        assert Version(lowest[_name(name)]) == Version(bound.strip()), requirement


def test_tox_applies_the_pins() -> None:
    tox = (ROOT / "tox.ini").read_text()
    assert "PIP_CONSTRAINT = {toxinidir}/.ci/constraints.txt" in tox
    assert "PIP_CONSTRAINT = {toxinidir}/.ci/lowest.txt" in tox
