"""A server killed mid-upload leaves a partial file and a receiving row: the sweep removes them."""

from __future__ import annotations

import os
import socket
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from django_tempstore.models import QuotaCounter, State, SweepRun, TempUpload
from tests.conftest import temp_files
from tests.servers import run_server, wait_until
from tests.utils import multipart, pid_gone, request_head

pytestmark = [pytest.mark.server, pytest.mark.django_db(transaction=True)]

QUOTA = 10**9


@pytest.mark.parametrize(
    ("args", "kind"),
    [(["--startup"], "dead"), (["--older-than", "20"], "stale")],
    ids=["startup", "stale-heartbeat"],
)
def test_sweep_after_sigkill_mid_upload(args, kind, settings, tmp_path, tempstore_dirs):
    settings.TEMPSTORE_QUOTA = QUOTA
    body, content_type = multipart({"file": ("big.bin", os.urandom(4 * 1024 * 1024))})
    with (
        run_server("gunicorn", tmp_path, TEMPSTORE_TEST_QUOTA=str(QUOTA)) as server,
        socket.create_connection(("127.0.0.1", server.port)) as sock,
    ):
        sock.sendall(request_head("/accept/", content_type, len(body), server.port))
        sock.sendall(body[: 2 * 1024 * 1024])
        assert wait_until(
            lambda: any(
                (tempstore_dirs / row.name).exists() and (tempstore_dirs / row.name).stat().st_size
                for row in TempUpload.objects.all()
            )
        )
        server.kill()

    row = TempUpload.objects.get()
    assert row.state == State.RECEIVING
    assert row.reserved > 0
    assert QuotaCounter.objects.get().used == row.reserved
    partial = tempstore_dirs / row.name
    partial_size = partial.stat().st_size
    assert 0 < partial_size < len(body)
    assert wait_until(lambda: pid_gone(row.pid))
    if kind == "stale":
        # The heartbeat stopped with the kill; age it past --older-than (two
        # heartbeat intervals, the least the command accepts) instead of waiting.
        TempUpload.objects.filter(pk=row.pk).update(
            updated_at=timezone.now() - timedelta(seconds=60)
        )

    out = StringIO()
    call_command("sweep_temp", *args, "-v", "2", stdout=out)

    assert not partial.exists()
    row.refresh_from_db()
    assert row.state == State.FAILED
    assert row.reserved == 0
    assert QuotaCounter.objects.get().used == 0
    report = SweepRun.objects.get().report
    assert report["counts"][kind] == 1
    assert report["bytes"][kind] == partial_size
    assert report["quota_drift"] == 0
    assert row.name in out.getvalue()


GUNICORN_CONF = """
def on_starting(server):
    import django

    django.setup()
    from django_tempstore.sweep import sweep

    report = sweep(startup=True, trigger="startup")
    server.log.info("django-tempstore: %s", report.summary())
"""


def test_gunicorn_on_starting_hook_sweeps_what_a_killed_server_left(tmp_path, tempstore_dirs):
    body, content_type = multipart({"file": ("big.bin", os.urandom(4 * 1024 * 1024))})
    with (
        run_server("gunicorn", tmp_path) as server,
        socket.create_connection(("127.0.0.1", server.port)) as sock,
    ):
        sock.sendall(request_head("/accept/", content_type, len(body), server.port))
        sock.sendall(body[: 2 * 1024 * 1024])
        # The row comes first, then the folder and the file: poll both.
        assert wait_until(lambda: TempUpload.objects.exists() and temp_files(tempstore_dirs))
        server.kill()
    row = TempUpload.objects.get()
    assert wait_until(lambda: pid_gone(row.pid))
    conf_file = tmp_path / "gunicorn.conf.py"
    conf_file.write_text(GUNICORN_CONF)

    with run_server("gunicorn", tmp_path, args=("-c", str(conf_file))) as server:
        run = SweepRun.objects.get()
        assert (run.trigger, run.report["counts"]["dead"]) == ("startup", 1)
        # The hook's log line may reach the file a moment after the port opens.
        assert wait_until(lambda: "django-tempstore: Deleted 1 temp file" in server.log.read_text())
    assert TempUpload.objects.get().state == State.FAILED
    assert list(tempstore_dirs.iterdir()) == []
