"""A database that stops answering mid-upload: 503 with Retry-After, nothing left held."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from typing import Any

import pytest
from django.db import connection

from django_tempstore import quota
from django_tempstore.models import State, TempUpload
from tests.conftest import temp_files
from tests.quota_utils import post
from tests.servers import run_server, wait_until
from tests.utils import content_type, multipart_one

pytestmark = [pytest.mark.server, pytest.mark.django_db(transaction=True)]

MiB = 1024 * 1024
SERVERS = {
    "sync": ("--workers", "1"),
    "gthread": ("--workers", "1", "--worker-class", "gthread", "--threads", "4"),
}


def settled(directory) -> bool:
    return (
        not TempUpload.objects.pending().exists()
        and temp_files(directory) == []
        and quota.counter_value() == 0
    )


def gunicorn(tmp_path, settings, worker: str, **extra):
    settings.TEMPSTORE_QUOTA = 256 * MiB
    extra.setdefault("TEMPSTORE_QUOTA", 256 * MiB)
    return run_server(
        "gunicorn", tmp_path, args=SERVERS[worker], TEMPSTORE_TEST_SETTINGS=json.dumps(extra)
    )


def terminate_other_backends() -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


@pytest.mark.parametrize("worker", sorted(SERVERS))
def test_connection_lost_mid_upload_is_503_and_frees_everything(
    tmp_path, settings, tempstore_dirs, worker
):
    if connection.vendor != "postgresql":
        pytest.skip("pg_terminate_backend needs PostgreSQL")
    with gunicorn(tmp_path, settings, worker) as server:
        assert_database_loss_answers_503(server, tempstore_dirs)
    assert "Traceback" not in server.log.read_text()


def assert_database_loss_answers_503(server: Any, tempstore_dirs: Any) -> None:
    """PostgreSQL drops the server's connection halfway through a 24 MiB body."""
    body = multipart_one("big.bin", os.urandom(24 * MiB))
    answer = post(
        server.port, "/accept/", body, content_type(), pause=0.002,
        midway=terminate_other_backends,
    )  # fmt: skip
    assert answer.status == 503, answer.body
    assert answer.headers["retry-after"]
    assert answer.json()["code"] == "service_unavailable"
    assert wait_until(lambda: settled(tempstore_dirs)), server.log.read_text()
    assert list(TempUpload.objects.values_list("state", flat=True)) == [State.FAILED]
    # The worker answers the next upload on a fresh connection.
    again = post(server.port, "/accept/", multipart_one("a.bin", b"x" * 1000), content_type())
    assert again.status == 200, again.body


@pytest.mark.parametrize("worker", sorted(SERVERS))
def test_sqlite_locked_longer_than_the_timeout_is_503(tmp_path, settings, tempstore_dirs, worker):
    if connection.vendor != "sqlite":
        pytest.skip("SQLite's write lock")
    name = str(connection.settings_dict["NAME"])
    # DATABASES as a user writes them by hand: no transaction_mode, a short timeout.
    databases = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": name,
            "OPTIONS": {"timeout": 0.5},
        }
    }
    with gunicorn(tmp_path, settings, worker, DATABASES=databases) as server:
        warm = post(server.port, "/accept/", multipart_one("w.bin", b"w" * 100), content_type())
        assert warm.status == 200, warm.body
        holder = sqlite3.connect(name, isolation_level=None, check_same_thread=False)
        try:
            holder.execute("BEGIN IMMEDIATE")
            holder.execute("UPDATE django_tempstore_tempupload SET reason = reason")
            answers = []
            threads = [
                threading.Thread(
                    target=lambda i=i: answers.append(
                        post(
                            server.port,
                            "/accept/",
                            multipart_one(f"f{i}.bin", os.urandom(MiB)),
                            content_type(),
                        )  # fmt: skip
                    )
                )
                for i in range(4)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert sorted(a.status for a in answers) == [503] * 4, [a.body for a in answers]
        assert all(a.headers.get("retry-after") for a in answers)
        assert wait_until(lambda: settled(tempstore_dirs)), server.log.read_text()
    assert "Traceback" not in server.log.read_text()
