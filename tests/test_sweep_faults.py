"""Faults the sweep must survive: killed workers, a temp dir swapped for a symlink."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import ExitStack
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from django_tempstore import sweep as sweep_module
from django_tempstore.models import QuotaCounter, State, SweepRun, TempUpload
from django_tempstore.storage import new_name
from tests.servers import child_env, run_server, wait_until
from tests.utils import multipart, pid_gone, request_head

pytestmark = pytest.mark.django_db(transaction=True)

MiB = 1024 * 1024
QUOTA = 20 * MiB


@pytest.mark.server
@pytest.mark.parametrize("entry", ["command", "service", "celery_task"])
def test_periodic_sweep_frees_workers_killed_mid_body(entry, settings, tmp_path, tempstore_dirs):
    settings.TEMPSTORE_QUOTA = QUOTA
    settings.TEMPSTORE_STALE_AFTER = 3600  # The stale pass must not be what frees them.
    body, content_type = multipart({"file": ("big.bin", os.urandom(8 * MiB))})
    with (
        run_server(
            "gunicorn", tmp_path, args=("--workers", "3"), TEMPSTORE_TEST_QUOTA=str(QUOTA)
        ) as server,
        ExitStack() as clients,
    ):
        for _ in range(3):
            sock = clients.enter_context(socket.create_connection(("127.0.0.1", server.port)))
            sock.sendall(request_head("/accept/", content_type, len(body), server.port))
            sock.sendall(body[: 2 * MiB])  # ... and then nothing: a slow client.
        assert wait_until(
            lambda: (
                TempUpload.objects.filter(state=State.RECEIVING).count() == 3
                and all(
                    (tempstore_dirs / row.name).exists()
                    and (tempstore_dirs / row.name).stat().st_size > 0
                    for row in TempUpload.objects.all()
                )
            ),
            timeout=90,  # Three workers start under load.
        )
        rows = list(TempUpload.objects.all())
        assert len({row.pid for row in rows}) == 3
        for row in rows:
            os.kill(row.pid, signal.SIGKILL)  # What gunicorn's --timeout does at last.
        assert wait_until(lambda: all(pid_gone(row.pid) for row in rows))
        assert QuotaCounter.objects.get().used > 0

        if entry == "command":
            call_command("sweep_temp", stdout=StringIO())
        elif entry == "service":
            sweep_module.sweep()
        else:
            from django_tempstore.tasks import sweep_temp_uploads

            sweep_temp_uploads.apply().get()

    assert list(tempstore_dirs.iterdir()) == []
    assert QuotaCounter.objects.get().used == 0
    assert set(TempUpload.objects.values_list("state", flat=True)) == {State.FAILED}
    assert SweepRun.objects.get().report["counts"]["dead"] == 3


def make_decoys(directory) -> list:
    """Temp-named, old files with no row: what any sweep deletes as orphans."""
    directory.mkdir(parents=True, exist_ok=True)
    decoys = []
    for _ in range(3):
        path = directory / new_name()
        path.write_bytes(b"not yours")
        old = time.time() - 10 * 24 * 3600
        os.utime(path, (old, old))
        decoys.append(path)
    return decoys


@pytest.fixture
def swapped_dir(settings, tmp_path, tempstore_dirs):
    """TEMPSTORE_DIR replaced by a symlink to a directory full of temp-named files."""
    settings.TEMPSTORE_ORPHAN_GRACE = 60
    elsewhere = tmp_path / "elsewhere"
    decoys = make_decoys(elsewhere)
    os.symlink(elsewhere, tempstore_dirs)
    yield decoys
    assert all(path.exists() for path in decoys)


def test_service_refuses_a_symlinked_dir(swapped_dir):
    from django_tempstore.storage import UnsafeTempDir

    with pytest.raises(UnsafeTempDir, match="symbolic link"):
        sweep_module.sweep()
    assert "symbolic link" in SweepRun.objects.get().error


def test_command_refuses_a_symlinked_dir(swapped_dir):
    with pytest.raises(CommandError, match="symbolic link"):
        call_command("sweep_temp", "--skip-checks", stdout=StringIO())


def test_celery_task_refuses_a_symlinked_dir(swapped_dir):
    from django_tempstore.tasks import sweep_temp_uploads

    result = sweep_temp_uploads.apply()
    assert result.failed()
    assert "symbolic link" in str(result.result)
    assert "symbolic link" in SweepRun.objects.get(trigger="celery").error


def test_admin_sweep_refuses_a_symlinked_dir(admin_client, swapped_dir):
    from tests.test_admin import CHANGELIST

    for response in (
        admin_client.get(CHANGELIST + "sweep/", follow=True),
        admin_client.post(CHANGELIST + "sweep/", {"post": "yes"}, follow=True),
    ):
        assert response.status_code == 200
        [message] = [str(m) for m in response.context["messages"]]
        assert "symbolic link" in message


GUNICORN_CONF = """
def on_starting(server):
    import django

    django.setup()
    from django_tempstore.sweep import sweep

    report = sweep(startup=True, trigger="startup")
    server.log.info("django-tempstore: %s", report.summary())
"""


@pytest.mark.server
def test_gunicorn_on_starting_hook_refuses_a_symlinked_dir(swapped_dir, tmp_path):
    conf_file = tmp_path / "gunicorn.conf.py"
    conf_file.write_text(GUNICORN_CONF)
    cmd = [sys.executable, "-m", "gunicorn", "tests.wsgi:application", "-c", str(conf_file),
           "--bind", "127.0.0.1:0", "--no-control-socket"]  # fmt: skip
    result = subprocess.run(
        cmd, env=child_env(), capture_output=True, text=True, timeout=60, cwd=os.getcwd()
    )

    assert result.returncode != 0
    assert "symbolic link" in result.stdout + result.stderr


def row_is_quiet() -> bool:
    """Whether the only row's updated_at stayed the same for 0.3 s."""
    before = TempUpload.objects.get().updated_at
    time.sleep(0.3)
    return TempUpload.objects.get().updated_at == before


@pytest.mark.server
def test_client_silent_for_stale_after_loses_its_upload_with_409(settings, tmp_path):
    settings.TEMPSTORE_QUOTA = QUOTA
    body, content_type = multipart({"file": ("slow.bin", os.urandom(4 * MiB))})
    env = {
        "TEMPSTORE_TEST_QUOTA": str(QUOTA),
        "TEMPSTORE_TEST_SETTINGS": '{"TEMPSTORE_HEARTBEAT_INTERVAL": 0}',
    }
    with (
        run_server("gunicorn", tmp_path, **env) as server,
        socket.create_connection(("127.0.0.1", server.port)) as sock,
    ):
        sock.sendall(request_head("/accept/", content_type, len(body), server.port))
        sock.sendall(body[:MiB])
        assert wait_until(lambda: TempUpload.objects.filter(size__gt=0).exists(), timeout=60)
        # The chunk's heartbeat commits after the reservation that recorded the size: wait
        # until the row is quiet (the handler waits for the rest), or it would undo the aging.
        assert wait_until(row_is_quiet, timeout=30)
        # The client has now sent nothing for TEMPSTORE_STALE_AFTER (aged, not waited).
        TempUpload.objects.update(updated_at=timezone.now() - timedelta(seconds=301))
        call_command("sweep_temp", stdout=StringIO())
        row = TempUpload.objects.get()
        assert row.state == State.FAILED
        assert QuotaCounter.objects.get().used == 0

        with contextlib.suppress(OSError):  # The server may answer before all is read.
            sock.sendall(body[MiB:])
        sock.settimeout(30)
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    assert response.startswith(b"HTTP/1.1 409")
    assert b"Send it again" in response
    assert not row.path.exists()
