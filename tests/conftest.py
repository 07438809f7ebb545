from __future__ import annotations

from pathlib import Path

import pytest

from django_tempstore.models import TempUpload


@pytest.fixture(autouse=True)
def tempstore_dirs(settings, tmp_path: Path) -> Path:
    """Give each test its own temp dir and media root."""
    settings.TEMPSTORE_DIR = tmp_path / "tempstore"
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.TEMPSTORE_DIR


def temp_files(directory: Path) -> list[Path]:
    return sorted(directory.iterdir()) if directory.exists() else []


@pytest.fixture
def assert_clean(tempstore_dirs: Path):
    """Call at the end of a test: no temp file and no pending row remain."""

    def check() -> None:
        assert temp_files(tempstore_dirs) == []
        assert list(TempUpload.objects.pending()) == []

    return check


@pytest.fixture
def gunicorn(transactional_db, tmp_path: Path):
    from tests.servers import run_server

    with run_server("gunicorn", tmp_path) as server:
        yield server


@pytest.fixture
def uvicorn(transactional_db, tmp_path: Path):
    from tests.servers import run_server

    with run_server("uvicorn", tmp_path) as server:
        yield server


@pytest.fixture(params=["gunicorn", "uvicorn"])
def server(request, transactional_db, tmp_path: Path):
    """Each test using it runs once against gunicorn (WSGI) and once against uvicorn (ASGI)."""
    from tests.servers import run_server

    with run_server(request.param, tmp_path) as server:
        yield server
