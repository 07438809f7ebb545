"""TEMPSTORE_MAX_FILE_SIZE and TEMPSTORE_QUOTA against a real gunicorn."""

from __future__ import annotations

import json
import os
import random
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connections

from django_tempstore import quota
from django_tempstore.models import State, TempUpload
from tests.conftest import temp_files
from tests.quota_utils import disk_bytes, post
from tests.servers import run_server, wait_until
from tests.utils import content_type, multipart_head, multipart_one, request_head

pytestmark = [pytest.mark.server, pytest.mark.django_db(transaction=True)]

MiB = 1024 * 1024


def gunicorn_with(tmp_path, settings, *, workers: int = 1, threads: int = 1, **tempstore):
    for key, value in tempstore.items():
        setattr(settings, f"TEMPSTORE_{key}", value)
    args = ("--workers", str(workers))
    if threads > 1:
        args += ("--worker-class", "gthread", "--threads", str(threads))
    extra = json.dumps({f"TEMPSTORE_{key}": value for key, value in tempstore.items()})
    return run_server("gunicorn", tmp_path, args=args, TEMPSTORE_TEST_SETTINGS=extra)


def settled(directory) -> bool:
    return (
        not TempUpload.objects.pending().exists()
        and temp_files(directory) == []
        and quota.counter_value() == 0
    )


def test_file_over_max_size_gets_413_without_the_rest_being_read(
    tmp_path, settings, tempstore_dirs
):
    limit = 2 * MiB
    declared = 1024 * MiB
    boundary = "b0undary7f3a"
    prefix = multipart_head(boundary, "huge.bin") + os.urandom(limit + 4 * MiB)
    with gunicorn_with(tmp_path, settings, MAX_FILE_SIZE=limit, QUOTA=None) as server:
        answer = post(server.port, "/accept/", prefix, content_type(boundary), declared=declared)

        assert answer.status == 413
        assert answer.json()["code"] == "file_too_large"
        # Answered while at most a few MiB past the limit had been sent: the
        # rest of the declared GiB was never needed.
        assert answer.sent <= len(prefix) < declared
        assert wait_until(lambda: settled(tempstore_dirs))
        row = TempUpload.objects.get()
        assert row.state == State.FAILED
        assert "TEMPSTORE_MAX_FILE_SIZE" in row.reason
        assert limit < row.size + 2 * MiB or row.size == 0


def test_content_length_over_the_free_quota_is_refused_before_the_body(
    tmp_path, settings, tempstore_dirs
):
    with gunicorn_with(tmp_path, settings, QUOTA=1 * MiB) as server:
        held = post(server.port, "/keep/?ttl=600", multipart_one("a.bin", b"x" * 700_000),
                    content_type())  # fmt: skip
        assert held.status == 200
        for declared, status in ((600_000, 507), (5 * MiB, 413)):
            # Only the headers are sent: the answer comes without any body byte.
            with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
                sock.sendall(request_head("/accept/", content_type(), declared, server.port))
                data = b""
                while chunk := sock.recv(65536):
                    data += chunk
            assert data.startswith(f"HTTP/1.1 {status}".encode()), data[:200]
            if status == 507:
                assert b"Retry-After: " in data
        assert TempUpload.objects.count() == 1  # No row for the refused requests.
        TempUpload.objects.get().discard()
        assert settled(tempstore_dirs)


def test_client_disconnect_mid_body_releases_the_reservation(tmp_path, settings, tempstore_dirs):
    boundary = "b0undary7f3a"
    with gunicorn_with(tmp_path, settings, QUOTA=8 * MiB, CHUNK_SIZE=65536) as server:
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(request_head("/accept/", content_type(boundary), 4 * MiB, server.port))
            sock.sendall(multipart_head(boundary, "cut.bin") + b"y" * MiB)
            assert wait_until(lambda: quota.counter_value() > 0)
        assert wait_until(lambda: settled(tempstore_dirs))
        assert TempUpload.objects.get().state == State.FAILED


def test_quota_is_strict_across_worker_processes(tmp_path, settings, tempstore_dirs):
    """Sixteen clients together send about three times the quota to three worker
    processes; a monitor checks the counter and the disk all along."""
    limit = 2 * MiB
    rng = random.Random(1234)
    jobs = [(f"c{c:02d}.bin", rng.randrange(256 * 1024, 512 * 1024)) for c in range(16)]
    total = sum(size for _, size in jobs)
    assert 2.5 * limit < total < 3.5 * limit

    tempstore_dirs.mkdir(mode=0o700)

    # Every client sends half its body, then waits for the others, and for the
    # server to fill the quota: all are in flight together, however slow the
    # machine is.
    def filled() -> None:
        try:
            wait_until(lambda: quota.counter_value() > limit - 64 * 1024, timeout=30)
        finally:
            connections.close_all()

    halfway = threading.Barrier(len(jobs), action=filled, timeout=60)
    samples: list[tuple[int, int | None]] = []
    stop = threading.Event()

    def monitor() -> None:
        try:
            while not stop.is_set():
                samples.append((quota.counter_value(), disk_bytes(tempstore_dirs)))
                time.sleep(0.005)
        finally:
            connections.close_all()

    def client(job: tuple[str, int]):
        name, size = job
        body = multipart_one(name, os.urandom(size))
        # /keep/ holds every accepted upload until the end: the demand on the
        # quota only grows, so some uploads must be refused, however the
        # clients interleave.
        return name, size, post(server.port, "/keep/?ttl=600", body, content_type(),
                                piece=16384, midway=halfway.wait)  # fmt: skip

    with gunicorn_with(
        tmp_path, settings, workers=3, threads=16, QUOTA=limit, CHUNK_SIZE=16384
    ) as server:
        watcher = threading.Thread(target=monitor)
        watcher.start()
        try:
            with ThreadPoolExecutor(16) as pool:
                results = list(pool.map(client, jobs))
        finally:
            stop.set()
            watcher.join()
        for row in TempUpload.objects.filter(state=State.KEPT):
            row.discard()
        assert wait_until(lambda: settled(tempstore_dirs))

    accepted = [(n, s) for n, s, a in results if a.status == 200]
    rejected = [(n, a) for n, s, a in results if a.status == 507]
    assert len(accepted) + len(rejected) == len(jobs), [a.status for *_, a in results]
    assert accepted and rejected
    for _name, size, answer in results:
        if answer.status == 200:
            assert TempUpload.objects.get(pk=answer.json()["id"]).size == size
        else:
            assert answer.headers["retry-after"]
            assert answer.json()["code"] == "insufficient_storage"

    rows = {row.original_name: row for row in TempUpload.objects.all()}
    for name, size in accepted:
        assert (rows[name].state, rows[name].size) == (State.DISCARDED, size)
    for name, _ in rejected:
        # Refused on its Content-Length (no row), or mid-body (a failed row).
        assert name not in rows or rows[name].state == State.FAILED
    assert all(row.reserved == 0 for row in rows.values())

    sure = [disk for _, disk in samples if disk is not None]
    assert len(sure) > 50
    assert max(counter for counter, _ in samples) <= limit
    assert max(sure) <= limit
    # The monitor saw real pressure: the quota was nearly full at some point.
    assert max(counter for counter, _ in samples) > limit // 2
    print(
        f"\nrace: {len(accepted)} accepted, {len(rejected)} refused, "
        f"{sum(1 for n, _ in rejected if n in rows)} of them mid-body; "
        f"{len(samples)} samples ({len(sure)} of the disk); "
        f"max counter {max(c for c, _ in samples)}, max disk {max(sure)}, quota {limit}"
    )
