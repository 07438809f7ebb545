"""One test per system check id, plus registration and unique ids."""

from __future__ import annotations

import os
import re
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.core.checks import registry
from django.core.management import call_command
from django.http import HttpResponse
from django.urls import include, path

from django_tempstore import checks
from django_tempstore.handlers import TempStoreUploadHandler
from django_tempstore.scanners import Antivirus, ClamAVScanner
from django_tempstore.validators import validate_uploads

HANDLER = "django_tempstore.handlers.TempStoreUploadHandler"
MEMORY = "django.core.files.uploadhandler.MemoryFileUploadHandler"
TEMPORARY = "django.core.files.uploadhandler.TemporaryFileUploadHandler"


def ids(messages) -> list[str]:
    return [m.id for m in messages]


def test_default_test_settings_pass_every_check(tempstore_dirs):
    tempstore_dirs.mkdir(mode=0o700, parents=True)
    assert checks.check_dir() == []
    assert checks.check_handlers() == []
    assert checks.check_middleware() == []
    assert checks.check_atomic_requests() == []
    assert checks.check_stale_after() == []
    assert checks.check_scanner() == []
    assert checks.check_digest() == []
    assert checks.check_settings() == []


def test_e001_dir_cannot_be_created(settings, tmp_path: Path):
    # Missing parents alone no longer fail (the runtime creates them): the nearest
    # existing ancestor must be unusable, here a regular file.
    (tmp_path / "missing").write_text("")
    settings.TEMPSTORE_DIR = tmp_path / "missing" / "deeper" / "tempstore"
    assert ids(checks.check_dir()) == ["django_tempstore.E001"]


def test_e008_dir_is_a_file(settings, tmp_path: Path):
    (tmp_path / "file").write_text("")
    settings.TEMPSTORE_DIR = tmp_path / "file"
    assert ids(checks.check_dir()) == ["django_tempstore.E008"]


def test_e008_dir_is_not_writable(settings, tmp_path: Path):
    if os.geteuid() == 0:
        pytest.skip("root can write to a read-only directory")
    path = tmp_path / "ro"
    path.mkdir(mode=0o500)
    settings.TEMPSTORE_DIR = path
    assert ids(checks.check_dir()) == ["django_tempstore.E008"]


def test_missing_dir_with_writable_parent_passes(settings, tmp_path: Path):
    settings.TEMPSTORE_DIR = tmp_path / "created-on-first-use"
    assert checks.check_dir() == []


def test_e002_dir_is_a_symlink(settings, tmp_path: Path):
    (tmp_path / "real").mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    settings.TEMPSTORE_DIR = tmp_path / "link"
    messages = checks.check_dir()
    assert ids(messages) == ["django_tempstore.E002"]
    assert "symbolic link" in messages[0].msg


def test_e009_world_writable_dir(settings, tmp_path: Path):
    path = tmp_path / "open"
    path.mkdir()
    path.chmod(0o777)
    settings.TEMPSTORE_DIR = path
    messages = checks.check_dir()
    assert ids(messages) == ["django_tempstore.E009"]
    assert "chmod 700" in messages[0].hint


def test_w001_handler_missing(settings):
    settings.FILE_UPLOAD_HANDLERS = [MEMORY, TEMPORARY]
    assert ids(checks.check_handlers()) == ["django_tempstore.W001"]


def test_w001_accepts_a_subclass_and_ignores_unimportable_handlers(settings):
    settings.FILE_UPLOAD_HANDLERS = ["no.such.Handler", "tests.test_checks.SubHandler"]
    assert checks.check_handlers() == []


def test_w002_memory_handler_caps_the_chunk_size(settings):
    settings.FILE_UPLOAD_HANDLERS = [MEMORY, HANDLER]
    messages = checks.check_handlers()
    assert ids(messages) == ["django_tempstore.W002"]
    assert "64 KiB" in messages[0].msg


def test_w002_not_raised_when_chunk_size_is_small_anyway(settings):
    settings.FILE_UPLOAD_HANDLERS = [MEMORY, HANDLER]
    settings.TEMPSTORE_CHUNK_SIZE = 64 * 1024
    assert checks.check_handlers() == []


def test_w003_middleware_missing(settings):
    settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if m != checks.MIDDLEWARE]
    assert ids(checks.check_middleware()) == ["django_tempstore.W003"]


def test_w007_middleware_below_csrf(settings):
    rest = [m for m in settings.MIDDLEWARE if m != checks.MIDDLEWARE]
    settings.MIDDLEWARE = [*rest, checks.MIDDLEWARE]
    messages = checks.check_middleware()
    assert ids(messages) == ["django_tempstore.W007"]
    assert "below" in messages[0].msg


def test_w004_atomic_requests(settings, monkeypatch):
    monkeypatch.setitem(settings.DATABASES["default"], "ATOMIC_REQUESTS", True)
    assert ids(checks.check_atomic_requests()) == ["django_tempstore.W004"]


def test_w004_not_raised_for_a_separate_alias(settings, monkeypatch):
    monkeypatch.setitem(settings.DATABASES["default"], "ATOMIC_REQUESTS", True)
    second = {**settings.DATABASES["default"], "ATOMIC_REQUESTS": False}
    monkeypatch.setitem(settings.DATABASES, "tempstore", second)
    settings.TEMPSTORE_DATABASE = "tempstore"
    assert checks.check_atomic_requests() == []


def test_e003_antivirus_validator_without_a_scanner(settings):
    settings.TEMPSTORE_VALIDATORS = ["django_tempstore.scanners.Antivirus"]
    assert ids(checks.check_scanner()) == ["django_tempstore.E003"]
    settings.TEMPSTORE_SCANNER = "django_tempstore.scanners.ClamAVScanner"
    assert checks.check_scanner() == []


def test_e003_not_raised_when_the_validator_has_its_own_scanner(settings):
    settings.TEMPSTORE_VALIDATORS = [Antivirus(scanner=ClamAVScanner("tcp://127.0.0.1:3310"))]
    assert checks.check_scanner() == []


def _scanned_view(request):
    return HttpResponse()


urlpatterns = [
    path("nested/", include([path("scan/", validate_uploads(Antivirus())(_scanned_view))])),
]


def test_e003_antivirus_on_a_view(settings):
    settings.ROOT_URLCONF = __name__
    assert ids(checks.check_scanner()) == ["django_tempstore.E003"]


@pytest.mark.parametrize("name", ["md6", "no-such-hash", "shake_128"])
def test_e004_invalid_digest(settings, name):
    settings.TEMPSTORE_DIGEST = name
    assert ids(checks.check_digest()) == ["django_tempstore.E004"]


@pytest.mark.parametrize("name", [None, "sha512", "blake2b"])
def test_e004_not_raised_for_a_valid_digest_or_none(settings, name):
    settings.TEMPSTORE_DIGEST = name
    assert checks.check_digest() == []


def test_w005_stale_after_below_two_heartbeats(settings):
    settings.TEMPSTORE_HEARTBEAT_INTERVAL = 10
    settings.TEMPSTORE_STALE_AFTER = 19
    messages = checks.check_stale_after()
    assert ids(messages) == ["django_tempstore.W005"]
    assert "still being received" in messages[0].msg
    assert "20 seconds or more" in messages[0].hint


SQLITE = "django.db.backends.sqlite3"


def test_w006_sqlite_without_immediate_transactions(settings, monkeypatch):
    monkeypatch.setitem(settings.DATABASES, "default", {"ENGINE": SQLITE, "NAME": "db.sqlite3"})
    messages = checks.check_sqlite_locking()
    assert ids(messages) == ["django_tempstore.W006"]
    assert '"transaction_mode": "IMMEDIATE"' in messages[0].hint
    assert "journal_mode=WAL" in messages[0].hint


def test_w006_not_raised_with_immediate_transactions(settings, monkeypatch):
    options = {"transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
    database = {"ENGINE": SQLITE, "NAME": "db.sqlite3", "OPTIONS": options}
    monkeypatch.setitem(settings.DATABASES, "default", database)
    assert checks.check_sqlite_locking() == []


def test_w006_not_raised_for_postgresql(settings, monkeypatch):
    database = {"ENGINE": "django.db.backends.postgresql", "NAME": "x"}
    monkeypatch.setitem(settings.DATABASES, "default", database)
    assert checks.check_sqlite_locking() == []


def test_w008_sqlite_without_wal(settings, monkeypatch):
    options = {"transaction_mode": "IMMEDIATE"}
    database = {"ENGINE": SQLITE, "NAME": "db.sqlite3", "OPTIONS": options}
    monkeypatch.setitem(settings.DATABASES, "default", database)
    messages = checks.check_sqlite_journal()
    assert ids(messages) == ["django_tempstore.W008"]
    assert '"init_command": "PRAGMA journal_mode=WAL;"' in messages[0].hint


def test_w008_not_raised_in_wal_mode(settings, monkeypatch):
    options = {"init_command": "PRAGMA journal_mode = wal; PRAGMA synchronous=NORMAL;"}
    database = {"ENGINE": SQLITE, "NAME": "db.sqlite3", "OPTIONS": options}
    monkeypatch.setitem(settings.DATABASES, "default", database)
    assert checks.check_sqlite_journal() == []


def test_w008_not_raised_for_postgresql(settings, monkeypatch):
    database = {"ENGINE": "django.db.backends.postgresql", "NAME": "x"}
    monkeypatch.setitem(settings.DATABASES, "default", database)
    assert checks.check_sqlite_journal() == []


def test_w005_not_raised_at_two_heartbeats(settings):
    settings.TEMPSTORE_HEARTBEAT_INTERVAL = timedelta(seconds=10)
    settings.TEMPSTORE_STALE_AFTER = timedelta(seconds=20)
    assert checks.check_stale_after() == []


@pytest.mark.django_db  # Django 6.1's check command also runs the database checks.
def test_checks_are_registered_and_run_by_the_check_command(settings, tmp_path: Path):
    registered = registry.registry.get_checks()
    for check in (
        checks.check_dir,
        checks.check_handlers,
        checks.check_middleware,
        checks.check_atomic_requests,
        checks.check_stale_after,
        checks.check_sqlite_locking,
        checks.check_scanner,
        checks.check_digest,
    ):
        assert check in registered
    settings.FILE_UPLOAD_HANDLERS = [TEMPORARY]
    out, err = StringIO(), StringIO()
    call_command("check", stdout=out, stderr=err)
    assert "django_tempstore.W001" in out.getvalue() + err.getvalue()


def test_check_ids_are_unique_and_all_documented():
    source = Path(checks.__file__).read_text()
    found = re.findall(r'id="(django_tempstore\.[EW]\d{3})"', source)
    per_function = {}
    for name in (
        "check_dir",
        "check_handlers",
        "check_middleware",
        "check_atomic_requests",
        "check_stale_after",
        "check_sqlite_locking",
        "check_sqlite_journal",
        "check_scanner",
        "check_digest",
        "check_settings",
    ):
        body = source.split(f"def {name}(")[1].split("\ndef ")[0]
        per_function[name] = set(re.findall(r'id="(django_tempstore\.[EW]\d{3})"', body))
    # An id belongs to one check function only.
    all_ids = [i for group in per_function.values() for i in group]
    assert len(all_ids) == len(set(all_ids))
    assert set(found) == {
        "django_tempstore.E001",
        "django_tempstore.E002",
        "django_tempstore.E003",
        "django_tempstore.E004",
        "django_tempstore.E005",
        "django_tempstore.E006",
        "django_tempstore.E007",
        "django_tempstore.E008",
        "django_tempstore.E009",
        "django_tempstore.E010",
        "django_tempstore.W001",
        "django_tempstore.W002",
        "django_tempstore.W003",
        "django_tempstore.W004",
        "django_tempstore.W005",
        "django_tempstore.W006",
        "django_tempstore.W007",
        "django_tempstore.W008",
    }
    reference = (Path(__file__).resolve().parent.parent / "docs" / "checks.md").read_text()
    for check_id in set(found):
        assert f"`{check_id}`" in reference


def test_no_missing_migrations(db):
    out = StringIO()
    call_command("makemigrations", "--check", "--dry-run", stdout=out)
    assert "No changes detected" in out.getvalue()


class SubHandler(TempStoreUploadHandler):
    """A project's own subclass counts as the handler."""


def test_missing_dir_whose_parents_are_missing_too_passes(settings, tmp_path: Path):
    """The README's Setup: BASE_DIR / "tmp" / "uploads" in a fresh project, no tmp/ yet."""
    settings.TEMPSTORE_DIR = tmp_path / "tmp" / "uploads"
    assert checks.check_dir() == []


def test_e001_nearest_existing_ancestor_is_a_file(settings, tmp_path: Path):
    (tmp_path / "tmp").write_text("")
    settings.TEMPSTORE_DIR = tmp_path / "tmp" / "a" / "uploads"
    assert ids(checks.check_dir()) == ["django_tempstore.E001"]


def test_dir_check_is_a_security_check():
    assert checks.check_dir in registry.registry.get_checks(include_deployment_checks=False)
    assert "security" in checks.check_dir.tags


@pytest.mark.parametrize(
    "name, value",
    [
        ("TEMPSTORE_QUOTA", "1GB"),
        ("TEMPSTORE_QUOTA_PER_KEY", 1.5),
        ("TEMPSTORE_MAX_FILE_SIZE", True),
        ("TEMPSTORE_CHUNK_SIZE", None),
        ("TEMPSTORE_KEEP_TTL", "1h"),
        ("TEMPSTORE_SHARED_DIR", "yes"),
        ("TEMPSTORE_VALIDATORS", "myapp.Validator"),
        ("TEMPSTORE_DIR", 5),
        ("TEMPSTORE_MAX_MEMORY_SIZE", "2.5MB"),
    ],
)
def test_e005_setting_of_the_wrong_type(settings, name, value):
    setattr(settings, name, value)
    messages = checks.check_settings()
    assert ids(messages) == ["django_tempstore.E005"]
    assert name in messages[0].msg


def test_max_memory_size_of_0_or_none_passes(settings):
    settings.TEMPSTORE_MAX_MEMORY_SIZE = 0
    assert checks.check_settings() == []
    settings.TEMPSTORE_MAX_MEMORY_SIZE = None
    assert checks.check_settings() == []


def test_quota_of_1gb_as_a_string_fails_the_check_command(settings):
    settings.TEMPSTORE_QUOTA = "1GB"
    err = StringIO()
    with pytest.raises(Exception, match="E005"):
        call_command("check", stdout=StringIO(), stderr=err)


@pytest.mark.parametrize(
    "name, value",
    [
        ("TEMPSTORE_QUOTA", 0),
        ("TEMPSTORE_CHUNK_SIZE", 0),
        ("TEMPSTORE_MIN_FREE_SPACE", -1),
        ("TEMPSTORE_STALE_AFTER", timedelta(seconds=-5)),
        ("TEMPSTORE_PROMOTE_RETRIES", -1),
        ("TEMPSTORE_MAX_MEMORY_SIZE", -1),
    ],
)
def test_e006_setting_out_of_range(settings, name, value):
    setattr(settings, name, value)
    messages = checks.check_settings()
    assert ids(messages) == ["django_tempstore.E006"]
    assert name in messages[0].msg


def test_e010_database_is_not_an_alias(settings):
    settings.TEMPSTORE_DATABASE = "nope"
    messages = checks.check_settings()
    assert ids(messages) == ["django_tempstore.E010"]
    assert "TEMPSTORE_DATABASE" in messages[0].msg


def test_each_check_id_is_used_for_one_condition_only():
    """Each ``id="django_tempstore.…"`` literal appears once in checks.py: a second
    condition gets a new id, never a reused one."""
    source = Path(checks.__file__).read_text()
    literals = re.findall(r'id="(django_tempstore\.[^"]*)"', source)
    assert literals
    repeated = sorted({i for i in literals if literals.count(i) > 1})
    assert repeated == []


def test_valid_settings_of_every_kind_pass(settings, tmp_path: Path):
    settings.TEMPSTORE_QUOTA = 1024**3
    settings.TEMPSTORE_QUOTA_PER_KEY = None
    settings.TEMPSTORE_KEEP_TTL = timedelta(hours=1)
    settings.TEMPSTORE_STALE_AFTER = 600.0
    settings.TEMPSTORE_DIR = str(tmp_path)
    settings.TEMPSTORE_QUOTA_KEY = "django_tempstore.quota.user_key"
    assert checks.check_settings() == []


@pytest.mark.parametrize("value", ["no.such.module.func", 42])
def test_e007_quota_key_is_not_a_callable(settings, value):
    settings.TEMPSTORE_QUOTA_KEY = value
    assert ids(checks.check_settings()) == ["django_tempstore.E007"]


def test_every_check_message_has_a_hint(settings, tmp_path: Path):
    settings.TEMPSTORE_QUOTA = "1GB"
    settings.TEMPSTORE_CHUNK_SIZE = 0
    settings.TEMPSTORE_QUOTA_KEY = 42
    settings.TEMPSTORE_DIR = tmp_path / "file" / "x"
    (tmp_path / "file").write_text("")
    messages = checks.check_settings() + checks.check_dir()
    assert len(messages) == 4
    assert all(m.hint for m in messages)
