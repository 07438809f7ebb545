"""Two sweeps at once: no error, no double count, no live upload touched."""

from __future__ import annotations

import threading

import pytest
from django.db import connections

from django_tempstore.models import QuotaCounter, State, SweepRun, TempUpload
from django_tempstore.sweep import KINDS, sweep
from tests.sweep_utils import dead_pid, make_orphan, make_upload

pytestmark = pytest.mark.django_db(transaction=True)


def run_sweeps_at_once(count: int, **kwargs):
    barrier = threading.Barrier(count)
    reports, errors = [], []

    def run() -> None:
        try:
            barrier.wait()
            reports.append(sweep(**kwargs))
        except BaseException as exc:  # noqa: BLE001  (reported to the test)
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return reports, errors


def test_two_sweeps_at_once_count_each_item_exactly_once(settings, tempstore_dirs, monkeypatch):
    monkeypatch.setattr("django_tempstore.sweep.BATCH_SIZE", 7)  # many interleaved batches
    settings.TEMPSTORE_QUOTA = 10**12
    settings.TEMPSTORE_STALE_AFTER = 60
    settings.TEMPSTORE_HISTORY = 3600
    pid = dead_pid()
    expired = [make_upload(State.KEPT, size=10, expires_in=-1, reserved=10) for _ in range(40)]
    stale = [
        make_upload(State.RECEIVING, size=20, age=120, expires_in=None, reserved=20)
        for _ in range(30)
    ]
    dead = [make_upload(State.COMPLETE, size=30, pid=pid, reserved=30) for _ in range(20)]
    orphans = [make_orphan(size=40) for _ in range(50)]
    for _ in range(25):
        make_upload(State.DISCARDED, age=7200, with_file=False)
    live = [make_upload(State.RECEIVING, size=5, expires_in=None, reserved=5) for _ in range(10)]
    live += [make_upload(State.KEPT, size=5, expires_in=600, reserved=5) for _ in range(10)]
    QuotaCounter.objects.create(scope="default", used=40 * 10 + 30 * 20 + 20 * 30 + 20 * 5)

    reports, errors = run_sweeps_at_once(2, startup=True)

    assert errors == []
    totals = {kind: sum(r.counts[kind] for r in reports) for kind in KINDS}
    assert totals == {
        "expired": 40,
        "stale": 30,
        "dead": 20,
        "missing": 0,
        "orphan": 50,
        "history": 25,
    }
    assert sum(r.total_bytes for r in reports) == 40 * 10 + 30 * 20 + 20 * 30 + 50 * 40
    assert sorted(p.name for p in tempstore_dirs.iterdir()) == sorted(u.name for u in live)
    assert TempUpload.objects.pending().count() == len(live)
    assert TempUpload.objects.filter(state=State.RECEIVING).count() == 10
    assert QuotaCounter.objects.get().used == 20 * 5
    assert SweepRun.objects.filter(error="", finished_at__isnull=False).count() == 2
    assert len(expired) + len(stale) + len(dead) + len(orphans) == 140
