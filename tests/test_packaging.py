"""What the wheel ships besides Python modules: every package-data pattern matches a real file."""

from __future__ import annotations

import tomllib
from pathlib import Path

from tests.servers import ROOT

PACKAGE = ROOT / "django_tempstore"


def package_data() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return config["tool"]["setuptools"]["package-data"]["django_tempstore"]


def matched(pattern: str) -> set[Path]:
    return {path for path in PACKAGE.glob(pattern) if path.is_file()}


def test_every_package_data_pattern_matches_a_file():
    assert {pattern: bool(matched(pattern)) for pattern in package_data()} == dict.fromkeys(
        package_data(), True
    )


def test_every_file_beside_the_modules_is_shipped():
    shipped = set().union(*(matched(pattern) for pattern in package_data()))
    others = {
        path for path in PACKAGE.rglob("*") if path.is_file() and path.suffix not in (".py", ".pyc")
    }
    assert others - shipped == set()
    assert PACKAGE / "static" / "django_tempstore" / "admin" / "progress.js" in shipped
