"""persist() inside atomic() away from any request (a task, the shell): a rollback undoes it.

Django has no rollback hook; ``lifecycle.UndoLog`` registers each persist with
the connection whose transaction it belongs to (see docs/lifecycle.md).
"""

from __future__ import annotations

import os

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connections, transaction

from django_tempstore import lifecycle, quota, signals
from django_tempstore.models import State, TempUpload

pytestmark = pytest.mark.django_db(transaction=True)

SIZE = 300_000


class Boom(Exception):
    pass


@pytest.fixture
def kept(client, settings):
    """A kept upload as a task finds it: its request is over, the row read afresh."""
    settings.TEMPSTORE_QUOTA = 64 * 1024 * 1024
    response = client.post("/keep/?ttl=3600", {"file": SimpleUploadedFile("k.bin", b"k" * SIZE)})
    assert response.status_code == 200
    upload = TempUpload.objects.get(pk=response.json()["id"])
    assert upload.state == State.KEPT
    assert upload.reserved >= SIZE
    assert upload.reserved == quota.counter_value()
    upload.reserved_before = upload.reserved
    return upload


def reserved_by_pending_rows() -> int:
    return sum(TempUpload.objects.pending().values_list("reserved", flat=True))


def assert_back_to_kept(upload: TempUpload) -> None:
    """The row is as before the persist: kept, with its file and its reservation."""
    row = TempUpload.objects.get(pk=upload.pk)
    assert (row.state, row.persisted_name, row.closed_at) == (State.KEPT, "", None)
    reserved = upload.reserved_before
    assert row.reserved == reserved == quota.counter_value() == reserved_by_pending_rows()
    assert upload.path.exists()
    assert (upload.state, upload.persisted_name, upload.reserved) == (State.KEPT, "", reserved)


def assert_hooks_removed(alias: str = "default") -> None:
    connection = connections[alias]
    assert "set_autocommit" not in connection.__dict__
    assert "close" not in connection.__dict__
    assert lifecycle.UndoLog.of(alias).entries == []


def test_rollback_of_the_atomic_block_deletes_the_stored_file(kept, settings, signal_spy):
    persisted = signal_spy(signals.upload_persisted)
    with pytest.raises(Boom), transaction.atomic():
        name = lifecycle.persist(kept, "outside/report.bin")
        assert (settings.MEDIA_ROOT / name).exists()  # readable inside the transaction
        raise Boom

    assert not (settings.MEDIA_ROOT / name).exists()
    assert_back_to_kept(kept)
    assert persisted == []
    assert_hooks_removed()


def test_set_rollback_without_an_exception_also_undoes(kept, settings):
    with transaction.atomic():
        name = lifecycle.persist(kept, "outside/report.bin")
        transaction.set_rollback(True)

    assert not (settings.MEDIA_ROOT / name).exists()
    assert_back_to_kept(kept)


def test_a_connection_closed_mid_transaction_undoes(kept, settings):
    # What Django does when the database goes away: the server rolls back.
    with transaction.atomic():
        name = lifecycle.persist(kept, "outside/report.bin")
        connections["default"].close()

    assert not (settings.MEDIA_ROOT / name).exists()
    kept.refresh_from_db()  # not read again on a lost connection
    assert_back_to_kept(kept)
    assert_hooks_removed()


def test_after_a_rollback_the_task_can_persist_again(kept, settings, signal_spy):
    persisted = signal_spy(signals.upload_persisted)
    with pytest.raises(Boom), transaction.atomic():
        lifecycle.persist(kept, "outside/report.bin")
        raise Boom

    with transaction.atomic():
        name = lifecycle.persist(kept, "outside/report.bin")
        assert persisted == []  # only once it commits

    assert (settings.MEDIA_ROOT / name).read_bytes() == b"k" * SIZE
    assert persisted == [kept.pk]
    row = TempUpload.objects.get(pk=kept.pk)
    assert (row.state, row.persisted_name, row.reserved) == (State.PERSISTED, name, 0)
    assert quota.counter_value() == 0
    assert not kept.path.exists()
    assert_hooks_removed()


def test_a_rolled_back_savepoint_in_a_committed_transaction_undoes(kept, settings):
    with transaction.atomic():
        with pytest.raises(Boom), transaction.atomic():
            name = lifecycle.persist(kept, "outside/report.bin")
            raise Boom
        TempUpload.objects.filter(pk=kept.pk).update(content_type="text/plain")

    assert not (settings.MEDIA_ROOT / name).exists()
    assert_back_to_kept(kept)
    assert kept.content_type == "text/plain"  # read again: the rest committed
    assert_hooks_removed()


def test_a_released_savepoint_in_a_rolled_back_transaction_undoes(kept, settings):
    with pytest.raises(Boom), transaction.atomic():
        with transaction.atomic():
            name = lifecycle.persist(kept, "outside/report.bin")
        raise Boom

    assert not (settings.MEDIA_ROOT / name).exists()
    assert_back_to_kept(kept)


def test_of_two_persists_only_the_rolled_back_one_is_undone(client, kept, settings):
    response = client.post("/keep/?ttl=3600", {"file": SimpleUploadedFile("b.bin", b"b" * 10)})
    other = TempUpload.objects.get(pk=response.json()["id"])
    with transaction.atomic():
        kept_name = lifecycle.persist(kept, "outside/a.bin")
        with pytest.raises(Boom), transaction.atomic():
            other_name = lifecycle.persist(other, "outside/b.bin")
            raise Boom

    assert (settings.MEDIA_ROOT / kept_name).exists()
    assert not kept.path.exists()
    assert TempUpload.objects.get(pk=kept.pk).state == State.PERSISTED
    assert not (settings.MEDIA_ROOT / other_name).exists()
    assert TempUpload.objects.get(pk=other.pk).state == State.KEPT
    assert other.path.exists()
    assert_hooks_removed()


def test_a_committed_persist_stands_when_an_earlier_callback_raises(kept, settings):
    def fails():
        raise Boom

    with pytest.raises(Boom), transaction.atomic():
        transaction.on_commit(fails)  # Django skips the callbacks after it
        name = lifecycle.persist(kept, "outside/report.bin")
    assert_hooks_removed()
    # A later rollback on the same connection must not take the committed file.
    with pytest.raises(Boom), transaction.atomic():
        raise Boom

    assert (settings.MEDIA_ROOT / name).exists()
    row = TempUpload.objects.get(pk=kept.pk)
    assert (row.state, row.persisted_name) == (State.PERSISTED, name)


@pytest.mark.skipif(
    os.environ.get("TEMPSTORE_TEST_DB") != "postgres",
    reason="SQLite locks the whole file: a second alias would wait for the transaction",
)
@pytest.mark.django_db(transaction=True, databases=["default", "tempstore"])
def test_on_a_separate_alias_the_row_takes_the_undo_transition(kept, settings, signal_spy):
    settings.TEMPSTORE_DATABASE = "tempstore"  # Committed outside the task's transaction.
    persisted = signal_spy(signals.upload_persisted)
    discarded = signal_spy(signals.upload_discarded, "reason")
    with pytest.raises(Boom), transaction.atomic():
        name = lifecycle.persist(kept, "outside/report.bin")
        assert TempUpload.objects.using("tempstore").get(pk=kept.pk).state == State.PERSISTED
        raise Boom

    assert not (settings.MEDIA_ROOT / name).exists()
    row = TempUpload.objects.get(pk=kept.pk)
    assert (row.state, row.persisted_name, row.reserved) == (State.DISCARDED, "", 0)
    assert row.reason == "the transaction that persisted it rolled back"
    assert quota.counter_value() == 0
    assert not kept.path.exists()
    assert persisted == []
    assert discarded == [(kept.pk, row.reason)]
    assert kept.state == State.DISCARDED
    assert_hooks_removed()
