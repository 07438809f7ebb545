"""Random interleavings of request end, sweep, promotion task and admin actions.

Each actor works as it does in production: the request keeps its own (possibly
stale) copy of the row, the task, the admin and the sweep read the row afresh.
Whatever the order, each row leaves the pending states once, each signal fires
once, the quota counter equals the sum of the reservations, and a closed row
leaves no temp file.
"""

from __future__ import annotations

import contextlib
import io
import shutil
from collections import Counter
from datetime import timedelta

import pytest
from django.db import transaction
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)

from django_tempstore import admin as tempstore_admin
from django_tempstore import lifecycle, promotion, quota, signals, validators
from django_tempstore.exceptions import (
    InsufficientStorage,
    UploadClosed,
    UploadStateError,
    ValidationRejected,
)
from django_tempstore.files import TempStoreUploadedFile
from django_tempstore.models import PENDING_STATES, QuotaCounter, State, SweepRun, TempUpload
from django_tempstore.storage import create_temp
from django_tempstore.sweep import sweep

ENDING = ("persisted", "discarded", "failed", "rejected", "quarantined")
SIGNALS = {name: getattr(signals, f"upload_{name}") for name in (*ENDING, "received")}


class Rollback(Exception):
    pass


class Row:
    """One upload and its request's copy of the row."""

    def __init__(self, upload: TempUpload) -> None:
        self.pk = upload.pk
        self.request_copy = upload
        self.request_ended = False

    def fresh(self) -> TempUpload | None:
        return TempUpload.objects.filter(pk=self.pk).first()


class Interleavings(RuleBasedStateMachine):
    rows = Bundle("rows")

    def __init__(self) -> None:
        super().__init__()
        TempUpload.objects.all().delete()
        QuotaCounter.objects.all().delete()
        SweepRun.objects.all().delete()
        for directory in (self.dirs["temp"], self.dirs["media"]):
            shutil.rmtree(directory, ignore_errors=True)
        self.sent.clear()
        self.known: dict[object, Row] = {}
        self.terminal_seen: dict[object, str] = {}

    # The request.

    @rule(target=rows, size=st.integers(0, 3000), complete=st.booleans())
    def new_upload(self, size, complete):
        upload = lifecycle.start(original_name="f.bin")
        with create_temp(upload.name) as fh:
            fh.write(b"x" * size)
        with contextlib.suppress(InsufficientStorage):
            quota.reserve(upload, size)
        if complete:
            lifecycle.complete(upload, size, "")
        row = Row(upload)
        self.known[row.pk] = row
        return row

    @rule(row=rows, extra=st.integers(1, 2000))
    def request_receives_more(self, row, extra):
        upload = row.request_copy
        if row.request_ended or upload.state != State.RECEIVING:
            return
        try:
            lifecycle.heartbeat(upload, upload.size)
            quota.reserve(upload, extra)
        except (UploadClosed, InsufficientStorage):
            pass

    @rule(row=rows)
    def request_completes(self, row):
        upload = row.request_copy
        if row.request_ended or upload.state != State.RECEIVING:
            return
        with contextlib.suppress(UploadClosed):
            lifecycle.complete(upload, upload.size, "")

    @rule(row=rows)
    def view_keeps(self, row):
        if row.request_ended:
            return
        with contextlib.suppress(UploadStateError):
            lifecycle.keep(row.request_copy, 60)

    @rule(row=rows, commit=st.booleans())
    def view_persists(self, row, commit):
        if row.request_ended:
            return
        try:
            with transaction.atomic():
                lifecycle.persist(row.request_copy, "out.bin")
                if not commit:
                    raise Rollback
        except (UploadStateError, Rollback):
            pass

    @rule(row=rows)
    def request_ends(self, row):
        if row.request_ended:
            return
        row.request_ended = True
        TempStoreUploadedFile(row.request_copy, io.BytesIO(), "f.bin", "", None).end_of_request()

    # The promotion task.

    @rule(row=rows)
    def task_promotes(self, row):
        with contextlib.suppress(UploadStateError):
            promotion.promote(row.pk, "promoted.bin", validators=[])

    @rule(row=rows)
    def task_rejects(self, row):
        upload = row.fresh()
        if upload is not None:
            validators.reject(upload, ValidationRejected(), state=State.DISCARDED)

    @rule(row=rows)
    def task_quarantines(self, row):
        upload = row.fresh()
        if upload is not None:
            lifecycle.quarantine(upload, "Eicar-Test-Signature")

    @rule(row=rows)
    def task_gives_up(self, row):
        promotion.give_up(row.pk, "too many retries")

    # The admin.

    @rule(row=rows, hours=st.sampled_from([-2, 1]))
    def admin_extends_expiry(self, row, hours):
        tempstore_admin.extend_expiry(TempUpload.objects.filter(pk=row.pk), timedelta(hours=hours))

    @rule(row=rows)
    def admin_deletes(self, row):
        tempstore_admin.delete_uploads(TempUpload.objects.filter(pk=row.pk), "deleted by admin")

    # The sweep.

    @rule(stale=st.booleans())
    def sweep_runs(self, stale):
        sweep(older_than=timedelta(0) if stale else None)

    # What must hold after every step.

    @invariant()
    def each_row_leaves_pending_once_and_stays_where_it_ended(self):
        for pk, state in TempUpload.objects.values_list("pk", "state"):
            if pk in self.terminal_seen:
                assert state == self.terminal_seen[pk]
            elif state not in PENDING_STATES:
                self.terminal_seen[pk] = state

    @invariant()
    def each_signal_fires_once(self):
        counts = Counter(self.sent)
        assert all(n == 1 for n in counts.values()), counts
        ended = Counter(pk for pk, name in self.sent if name in ENDING)
        states = dict(TempUpload.objects.values_list("pk", "state"))
        for pk in self.known:
            if pk not in states:  # Deleted by the admin: discarded first, if it was pending.
                assert ended[pk] == 1
            elif states[pk] in PENDING_STATES:
                assert ended[pk] == 0
            else:
                assert ended[pk] == 1

    @invariant()
    def quota_counter_equals_the_reservations(self):
        pending_held = sum(TempUpload.objects.pending().values_list("reserved", flat=True))
        assert quota.counter_value() == pending_held
        assert not TempUpload.objects.terminal().exclude(reserved=0).exists()

    @invariant()
    def a_closed_row_has_no_temp_file(self):
        for upload in TempUpload.objects.terminal():
            assert not upload.path.exists(), (upload.state, upload.reason)


@pytest.mark.django_db(transaction=True)
def test_random_interleavings_keep_the_invariants(settings_, tempstore_dirs):
    sent: list[tuple[object, str]] = []
    receivers = {}
    for name, signal in SIGNALS.items():

        def receiver(sender, upload, _name=name, **kwargs):
            sent.append((upload.pk, _name))

        receivers[name] = receiver
        signal.connect(receiver)
    Interleavings.sent = sent
    Interleavings.dirs = {"temp": tempstore_dirs, "media": settings_.MEDIA_ROOT}
    try:
        run_state_machine_as_test(
            Interleavings,
            settings=settings(
                max_examples=30,
                stateful_step_count=25,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
    finally:
        for name, signal in SIGNALS.items():
            signal.disconnect(receivers[name])


@pytest.fixture
def settings_(settings):
    settings.TEMPSTORE_QUOTA = 20_000
    return settings
