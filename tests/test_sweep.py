"""Each kind of leftover the sweep removes, and what it must never touch."""

from __future__ import annotations

import json
import os
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from django_tempstore import signals
from django_tempstore.models import QuotaCounter, State, SweepRun, TempUpload
from django_tempstore.sweep import KINDS, SweepReport, sweep
from tests.sweep_utils import dead_pid, make_orphan, make_upload
from tests.utils import connected

pytestmark = pytest.mark.django_db


def test_kept_upload_past_expiry_is_discarded(tempstore_dirs):
    upload = make_upload(State.KEPT, size=1234, expires_in=-1)

    report = sweep()

    assert report.counts["expired"] == 1
    assert report.bytes["expired"] == 1234
    assert not upload.path.exists()
    row = TempUpload.objects.get()
    assert row.state == State.DISCARDED
    assert row.reason == "the upload expired"


def test_complete_upload_past_expiry_is_discarded():
    upload = make_upload(State.COMPLETE, expires_in=-1)

    assert sweep().counts["expired"] == 1
    assert not upload.path.exists()


def test_upload_not_yet_expired_stays():
    upload = make_upload(State.KEPT, expires_in=60)

    report = sweep()

    assert report.total_files == 0
    assert upload.path.exists()
    assert TempUpload.objects.get().state == State.KEPT


def test_receiving_upload_with_stopped_heartbeat_fails(settings):
    settings.TEMPSTORE_STALE_AFTER = 60
    upload = make_upload(State.RECEIVING, size=10, age=61, expires_in=None)

    report = sweep()

    assert report.counts["stale"] == 1
    assert not upload.path.exists()
    row = TempUpload.objects.get()
    assert row.state == State.FAILED
    assert row.reason == "the upload's heartbeat stopped"


def test_receiving_upload_with_a_recent_heartbeat_stays(settings):
    settings.TEMPSTORE_STALE_AFTER = 60
    upload = make_upload(State.RECEIVING, age=30, expires_in=None)

    assert sweep(startup=True).total_files == 0
    assert upload.path.exists()
    assert TempUpload.objects.get().state == State.RECEIVING


def test_older_than_overrides_stale_after(settings):
    settings.TEMPSTORE_STALE_AFTER = 600
    upload = make_upload(State.RECEIVING, age=30, expires_in=None)

    assert sweep(older_than=timedelta(seconds=10)).counts["stale"] == 1
    assert not upload.path.exists()


def test_startup_removes_uploads_of_dead_processes_of_this_host():
    pid = dead_pid()
    receiving = make_upload(State.RECEIVING, pid=pid, expires_in=None)
    complete = make_upload(State.COMPLETE, pid=pid)
    kept = make_upload(State.KEPT, pid=pid)
    alive = make_upload(State.RECEIVING, pid=os.getpid(), expires_in=None)
    other_host = make_upload(State.RECEIVING, pid=pid, host="elsewhere", expires_in=None)
    # Rows without a process identity (written before it was recorded): their
    # pid alone is trusted at startup only. Rows with one: tests/test_dead_process.py.
    TempUpload.objects.update(process_start="")

    assert sweep().counts["dead"] == 0  # not at startup
    report = sweep(startup=True)

    assert report.counts["dead"] == 2
    states = dict(TempUpload.objects.values_list("pk", "state"))
    assert states[receiving.pk] == State.FAILED
    assert states[complete.pk] == State.DISCARDED
    assert states[kept.pk] == State.KEPT
    assert states[alive.pk] == State.RECEIVING
    assert states[other_host.pk] == State.RECEIVING
    assert [p.exists() for p in (receiving.path, complete.path, kept.path, alive.path)] == [
        False,
        False,
        True,
        True,
    ]


def test_orphan_file_older_than_grace_is_deleted(settings, tempstore_dirs):
    settings.TEMPSTORE_ORPHAN_GRACE = 3600
    old = make_orphan(size=77, age=3700)
    young = make_orphan(age=60)

    report = sweep()

    assert report.counts["orphan"] == 1
    assert report.bytes["orphan"] == 77
    assert not (tempstore_dirs / old).exists()
    assert (tempstore_dirs / young).exists()


def test_file_of_a_terminal_row_is_an_orphan(settings):
    upload = make_upload(State.DISCARDED)
    os.utime(upload.path, (0, 0))

    assert sweep().counts["orphan"] == 1
    assert not upload.path.exists()


def test_old_file_of_a_pending_row_is_not_an_orphan():
    upload = make_upload(State.KEPT, expires_in=3600)
    os.utime(upload.path, (0, 0))

    assert sweep(older_than=timedelta(0)).counts["orphan"] == 0
    assert upload.path.exists()


def test_orphans_in_many_lookup_batches_spare_every_file_with_a_pending_row(
    monkeypatch, tempstore_dirs
):
    monkeypatch.setattr("django_tempstore.sweep.ORPHAN_BATCH_SIZE", 7)
    kept = [make_upload(State.KEPT, expires_in=3600) for _ in range(6)]
    for upload in kept:
        os.utime(upload.path, (0, 0))
    orphans = [make_orphan(size=10) for _ in range(30)]
    items = []

    report = sweep(older_than=timedelta(0), on_item=lambda *item: items.append(item))

    assert (report.counts["orphan"], report.bytes["orphan"]) == (30, 300)
    assert sorted(items) == sorted(("orphan", name, 10) for name in orphans)
    assert sorted(p.name for p in tempstore_dirs.iterdir()) == sorted(u.name for u in kept)


def test_orphans_are_unlinked_in_inode_order(monkeypatch, tempstore_dirs):
    orphans = [make_orphan() for _ in range(40)]
    inodes = {name: os.stat(tempstore_dirs / name).st_ino for name in orphans}
    unlinked = []
    unlink = os.unlink

    def recording_unlink(path, *, dir_fd=None):
        unlinked.append(inodes.get(path))
        unlink(path, dir_fd=dir_fd)

    monkeypatch.setattr(os, "unlink", recording_unlink)

    assert sweep().counts["orphan"] == 40
    assert unlinked == sorted(inodes.values())


def test_upload_started_as_the_orphan_scan_begins_is_not_an_orphan(monkeypatch, tempstore_dirs):
    orphans = [make_orphan() for _ in range(5)]
    started = []
    scandir = os.scandir

    class ScanThatLetsAnUploadStart:
        def __init__(self, path):
            # After anything the sweep read before its scan: row first, then its
            # file, with an mtime that no age cutoff spares. The scan sees it.
            # Once: Python 3.13's Path.iterdir() below calls os.scandir too.
            if not started:
                started.append(make_upload(State.RECEIVING, expires_in=None))
                os.utime(started[0].path, (0, 0))
            self.entries = scandir(path)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.entries.close()

        def __iter__(self):
            yield from self.entries

    monkeypatch.setattr(os, "scandir", ScanThatLetsAnUploadStart)

    report = sweep(older_than=timedelta(0))

    assert report.counts["orphan"] == 5
    assert [p.name for p in tempstore_dirs.iterdir()] == [started[0].name]
    assert all(not (tempstore_dirs / name).exists() for name in orphans)


def test_pending_names_of_thousands_of_names_take_one_query(django_assert_num_queries):
    pending = [make_upload(State.RECEIVING, with_file=False) for _ in range(3)]
    odd = make_upload(State.KEPT, with_file=False)
    TempUpload.objects.filter(pk=odd.pk).update(name='it\'s "odd", \\ [1]')
    closed = make_upload(State.DISCARDED, with_file=False)
    names = [f"tsu-{i:032x}" for i in range(3000)]
    names += [u.name for u in pending] + [closed.name, 'it\'s "odd", \\ [1]']
    # Django asks SQLite once per connection whether it has JSON1 (a query of its own).
    assert connection.features.supports_json_field

    with django_assert_num_queries(1):
        found = TempUpload.objects.pending_names(names)

    assert found == {u.name for u in pending} | {'it\'s "odd", \\ [1]'}
    assert TempUpload.objects.pending_names([]) == set()


def test_pending_names_without_json_binds_the_names_in_slices(
    monkeypatch, django_assert_num_queries
):
    # Another database (or SQLite without JSON1), at most 2 parameters a statement.
    monkeypatch.setattr(connection.features, "supports_json_field", False)
    # A property on SQLite since Django 6.0 (cached on PostgreSQL's): replaced on the class.
    monkeypatch.setattr(type(connection.features), "max_query_params", 2, raising=False)
    monkeypatch.delitem(connection.features.__dict__, "max_query_params", raising=False)
    monkeypatch.setattr(connection, "vendor", "other")
    pending = [make_upload(State.RECEIVING, with_file=False) for _ in range(3)]
    names = [u.name for u in pending] + ["tsu-none"]

    with django_assert_num_queries(2):
        found = TempUpload.objects.pending_names(names)

    assert found == {u.name for u in pending}


def test_row_whose_file_vanished_is_closed(settings):
    settings.TEMPSTORE_STALE_AFTER = 60
    upload = make_upload(State.KEPT, age=120, with_file=False)
    recent = make_upload(State.COMPLETE, age=0, with_file=False)

    report = sweep()

    assert report.counts["missing"] == 1
    assert report.total_files == 0
    assert TempUpload.objects.get(pk=upload.pk).state == State.FAILED
    assert TempUpload.objects.get(pk=upload.pk).reason == "the temp file vanished"
    assert TempUpload.objects.get(pk=recent.pk).state == State.COMPLETE


def test_terminal_rows_past_history_are_deleted(settings):
    settings.TEMPSTORE_HISTORY = 3600
    old = make_upload(State.PERSISTED, age=3700, with_file=False)
    young = make_upload(State.FAILED, age=100, with_file=False)
    pending = make_upload(State.KEPT, age=7200, expires_in=3600)

    report = sweep()

    assert report.counts["history"] == 1
    assert set(TempUpload.objects.values_list("pk", flat=True)) == {young.pk, pending.pk}
    assert not TempUpload.objects.filter(pk=old.pk).exists()


def test_quota_counter_is_reconciled(settings):
    settings.TEMPSTORE_QUOTA = 10**9
    make_upload(State.KEPT, reserved=5000, expires_in=3600)
    expired = make_upload(State.KEPT, reserved=3000, expires_in=-1)
    QuotaCounter.objects.create(scope="default", used=5000 + 3000 + 999)

    report = sweep()

    # Closing the expired upload released its 3000; the 999 nobody holds were drift.
    assert TempUpload.objects.get(pk=expired.pk).state == State.DISCARDED
    assert report.quota_drift == 999
    assert QuotaCounter.objects.get().used == 5000


def test_dry_run_changes_nothing_and_reports_the_same(settings, tempstore_dirs):
    settings.TEMPSTORE_QUOTA = 10**9
    expired = make_upload(State.KEPT, size=100, expires_in=-1, reserved=100)
    orphan = make_orphan(size=50)
    QuotaCounter.objects.create(scope="default", used=100 + 7)

    dry = sweep(dry_run=True)

    assert dry.dry_run
    assert (dry.counts["expired"], dry.counts["orphan"], dry.quota_drift) == (1, 1, 7)
    assert dry.total_bytes == 150
    assert expired.path.exists()
    assert (tempstore_dirs / orphan).exists()
    assert QuotaCounter.objects.get().used == 107
    assert TempUpload.objects.get().state == State.KEPT
    assert dry.summary().startswith("Would delete 2 temp files")

    real = sweep()
    assert real.counts == dry.counts
    assert real.bytes == dry.bytes
    assert real.summary().startswith("Deleted 2 temp files")


def test_every_call_records_a_sweep_run():
    make_orphan()
    sweep(dry_run=True, trigger="admin")
    sweep(trigger="command")

    dry, real = SweepRun.objects.order_by("started_at")
    assert (dry.trigger, dry.dry_run, real.trigger, real.dry_run) == (
        "admin",
        True,
        "command",
        False,
    )
    assert dry.report["counts"]["orphan"] == 1
    assert real.report["total_files"] == 1
    assert real.finished_at >= real.started_at
    assert real.error == ""
    assert json.loads(json.dumps(real.report)) == real.report


def test_a_failed_sweep_records_its_error():
    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    upload = make_upload(State.KEPT, expires_in=-1)
    with pytest.raises(RuntimeError):
        sweep(on_item=broken)
    assert not upload.path.exists()
    run = SweepRun.objects.get()
    assert "disk on fire" in run.error
    assert run.finished_at is not None
    assert run.report["counts"]["expired"] == 1


def test_a_raising_receiver_leaves_no_file_behind_and_is_logged(caplog):
    def broken(sender, upload, reason, **kwargs):
        raise RuntimeError("receiver on fire")

    expired = [make_upload(State.KEPT, size=10, expires_in=-1) for _ in range(3)]
    with (
        connected(signals.upload_discarded, broken),
        caplog.at_level("ERROR", logger="django_tempstore"),
    ):
        report = sweep()

    assert [upload.path.exists() for upload in expired] == [False, False, False]
    assert (report.counts["expired"], report.bytes["expired"]) == (3, 30)
    assert set(TempUpload.objects.values_list("state", flat=True)) == {State.DISCARDED}
    failures = [r for r in caplog.records if r.name == "django_tempstore"]
    assert len(failures) == 3
    assert all("receiver on fire" in str(r.exc_info[1]) for r in failures)
    assert SweepRun.objects.get().error == ""


def test_report_round_trips_through_as_dict():
    report = SweepReport()
    report.add("orphan", 10)
    report.add("expired", 5)
    report.add("history")
    report.add_foreign("notes.txt")

    again = SweepReport.from_dict(json.loads(json.dumps(report.as_dict())))

    assert again == report
    assert (again.total_files, again.total_bytes, again.total_rows) == (2, 15, 1)
    assert set(report.as_dict()["counts"]) == set(KINDS)


def test_signals_are_sent_once_per_closed_upload(signal_spy):
    expired = make_upload(State.KEPT, expires_in=-1)
    seen = signal_spy(signals.upload_discarded, "reason")
    sweep()
    sweep()
    assert seen == [(expired.pk, "the upload expired")]


def test_rows_of_another_host_are_not_judged_without_a_shared_dir(settings):
    settings.TEMPSTORE_SHARED_DIR = False
    theirs = make_upload(State.KEPT, expires_in=-1, host="other-host")

    assert sweep().counts["expired"] == 0
    assert TempUpload.objects.get(pk=theirs.pk).state == State.KEPT

    settings.TEMPSTORE_SHARED_DIR = True
    assert sweep().counts["expired"] == 1
    assert TempUpload.objects.get(pk=theirs.pk).state == State.DISCARDED


def test_expires_at_in_the_future_is_compared_with_now():
    make_upload(State.KEPT, expires_in=None)
    TempUpload.objects.update(expires_at=timezone.now() + timedelta(days=1))
    assert sweep().counts["expired"] == 0
