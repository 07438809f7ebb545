from __future__ import annotations

from pathlib import Path

import pytest
from django.dispatch import Signal

from django_tempstore.models import TempUpload
from tests.utils import FIXTURE_MARKERS, SYSTEM_MARKERS, set_current_test, starts


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the users of process-starting fixtures, and every system test ``system``.

    ``-m "not system"`` is then the fast set: no server, worker, browser or root.
    """
    for item in items:
        for name in getattr(item, "fixturenames", ()):
            if name in FIXTURE_MARKERS:
                item.add_marker(FIXTURE_MARKERS[name])
        if any(item.get_closest_marker(marker) for marker in SYSTEM_MARKERS):
            item.add_marker("system")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    # Before any fixture (module-scoped ones included) starts a process.
    set_current_test(item)
    if item.get_closest_marker("clamd"):
        from tests.clamd_utils import missing_clamd

        if reason := missing_clamd():
            pytest.skip(reason)


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    set_current_test(nextitem)


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
def signal_spy():
    """``signal_spy(signal, "reason", ...)``: a list that gets ``(upload.pk, reason, ...)``
    (``upload.pk`` alone without names) for each sending of ``signal`` until the test ends."""
    connected: list[tuple[Signal, object]] = []

    def spy(signal: Signal, *kwargs_names: str) -> list[tuple[object, ...]]:
        seen: list[tuple[object, ...]] = []

        def receiver(sender, upload, **kwargs):
            if kwargs_names:
                seen.append((upload.pk, *(kwargs[name] for name in kwargs_names)))
            else:
                seen.append(upload.pk)

        signal.connect(receiver, weak=False)
        connected.append((signal, receiver))
        return seen

    yield spy
    for signal, receiver in connected:
        signal.disconnect(receiver)


@pytest.fixture
@starts("server")
def gunicorn(transactional_db, tmp_path: Path):
    from tests.servers import run_server

    with run_server("gunicorn", tmp_path) as server:
        yield server


@pytest.fixture
@starts("server")
def uvicorn(transactional_db, tmp_path: Path):
    from tests.servers import run_server

    with run_server("uvicorn", tmp_path) as server:
        yield server


@pytest.fixture(params=["gunicorn", "uvicorn"])
@starts("server")
def server(request, transactional_db, tmp_path: Path):
    """Each test using it runs once against gunicorn (WSGI) and once against uvicorn (ASGI)."""
    from tests.servers import run_server

    with run_server(request.param, tmp_path) as server:
        yield server
