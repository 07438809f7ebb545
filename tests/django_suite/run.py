"""Run Django's own tests/file_uploads suite with TempStoreUploadHandler swapped in.

Usage: python tests/django_suite/run.py [--cache DIR] [runtests.py args...]

Downloads the sdist of the installed Django (cached in --cache, if given), unpacks its tests/ into a
temp dir, and runs ``runtests.py file_uploads`` with django_tempstore installed, its handler as the
only upload handler, its middleware first and TEMPSTORE_DIR in the temp dir. The exit status is
runtests.py's. Expected differences from stock Django are listed in docs/django-suite.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import django

ROOT = Path(__file__).resolve().parents[2]

MIDDLEWARE = "django_tempstore.middleware.TempStoreMiddleware"

SETTINGS = """\
import os

from test_sqlite import *  # noqa: F403

FILE_UPLOAD_HANDLERS = ["django_tempstore.handlers.TempStoreUploadHandler"]
TEMPSTORE_DIR = os.environ["TEMPSTORE_DIR"]
"""

# (file, old, new), each old found exactly once. runtests.py replaces INSTALLED_APPS and
# MIDDLEWARE with its own lists whatever the settings say; FileUploadTests empties MIDDLEWARE, but
# our handler needs its middleware to end the request's uploads (README, "Install").
PATCHES = (
    (
        "runtests.py",
        "ALWAYS_INSTALLED_APPS = [\n",
        'ALWAYS_INSTALLED_APPS = [\n    "django_tempstore",\n',
    ),
    (
        "runtests.py",
        "ALWAYS_MIDDLEWARE = [\n",
        f"ALWAYS_MIDDLEWARE = [\n    {MIDDLEWARE!r},\n",
    ),
    (
        "file_uploads/tests.py",
        'ROOT_URLCONF="file_uploads.urls", MIDDLEWARE=[]',
        f'ROOT_URLCONF="file_uploads.urls", MIDDLEWARE=[{MIDDLEWARE!r}]',
    ),
)


# Django's tests that cannot pass here, each explained in docs/django-suite.md. They run as
# unittest expected failures: reported in the summary, and an unexpected success fails the run.
EXPECTED_FAILURES = {
    "FileUploadTests.test_stop_upload_temporary_file_handler": "pops the stock handler list's [2]",
    "FileUploadTests.test_upload_interrupted_temporary_file_handler": (
        "pops the stock handler list's [2]"
    ),
}
AS_ROOT = {
    "DirectoryCreationTests.test_readonly_root": "root writes into a 0o500 folder",
}

MARK = """

import unittest as _unittest

for _name in {names!r}:
    _cls, _test = _name.split(".")
    setattr(globals()[_cls], _test, _unittest.expectedFailure(getattr(globals()[_cls], _test)))
"""


def expected_failures(*, stock: bool) -> dict[str, str]:
    expected = {} if stock else dict(EXPECTED_FAILURES)
    if os.geteuid() == 0:
        expected.update(AS_ROOT)
    return expected


def sdist(version: str, cache: Path) -> Path:
    cache.mkdir(parents=True, exist_ok=True)
    for found in cache.glob(f"[Dd]jango-{version}.tar.gz"):
        return found
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:"]
        + [f"Django=={version}", "-d", str(cache)],
        check=True,
    )
    return next(cache.glob(f"[Dd]jango-{version}.tar.gz"))


def unpack_tests(archive: Path, dest: Path) -> Path:
    with tarfile.open(archive) as tar:
        top = tar.getnames()[0].split("/")[0]
        members = [m for m in tar.getmembers() if m.name.startswith(f"{top}/tests/")]
        tar.extractall(dest, members=members, filter="data")
    return dest / top / "tests"


def prepare(tests: Path) -> None:
    for name, old, new in PATCHES:
        path = tests / name
        text = path.read_text()
        if text.count(old) != 1:
            raise SystemExit(f"{name} of Django {django.__version__} has no one {old.strip()!r}")
        path.write_text(text.replace(old, new))
    (tests / "tempstore_settings.py").write_text(SETTINGS)


def mark_expected(tests: Path, expected: dict[str, str]) -> None:
    module = tests / "file_uploads" / "tests.py"
    module.write_text(module.read_text() + MARK.format(names=sorted(expected)))
    for name, reason in sorted(expected.items()):
        print(f"expected failure: file_uploads.tests.{name}: {reason}", file=sys.stderr)


def leftovers(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if not path.is_dir())


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, help="folder that keeps the downloaded sdist")
    parser.add_argument(
        "--stock", action="store_true", help="run with Django's own settings, for a baseline"
    )
    parser.add_argument(
        "--unmarked", action="store_true", help="do not mark the expected failures as such"
    )
    args, rest = parser.parse_known_args(argv)
    with tempfile.TemporaryDirectory(prefix="djsuite-") as tmp:
        work = Path(tmp)
        archive = sdist(django.__version__, args.cache or work / "sdist")
        tests = unpack_tests(archive, work)
        settings = "test_sqlite"
        if not args.stock:
            prepare(tests)
            settings = "tempstore_settings"
        if not args.unmarked:
            mark_expected(tests, expected_failures(stock=args.stock))
        tempstore = work / "tempstore"
        tempstore.mkdir()
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
            "TEMPSTORE_DIR": str(tempstore),
        }
        env.pop("DJANGO_SETTINGS_MODULE", None)
        command = [sys.executable, "runtests.py", f"--settings={settings}", "--noinput"]
        command += rest
        if all(arg.startswith("-") for arg in rest):
            command.append("file_uploads")
        status = subprocess.run(command, cwd=tests, env=env).returncode
        # Every request of the suite has ended: no temp copy may outlive it.
        left = leftovers(tempstore)
        for path in left:
            print(f"left in TEMPSTORE_DIR: {path.relative_to(tempstore)}", file=sys.stderr)
        return status or (1 if left else 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
