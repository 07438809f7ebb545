"""Each public signal is sent once per upload, with exactly the documented kwargs."""

from __future__ import annotations

import os
from functools import partial

import pytest
from django.core.files.storage import FileSystemStorage

from django_tempstore import signals
from django_tempstore.models import State, TempUpload
from tests import utils

pytestmark = pytest.mark.django_db(transaction=True)

PAYLOAD = os.urandom(100_000)
SIGNALS = {
    "received": (signals.upload_received, set()),
    "persisted": (signals.upload_persisted, {"name", "storage"}),
    "discarded": (signals.upload_discarded, {"reason"}),
    "failed": (signals.upload_failed, {"reason"}),
}


@pytest.fixture
def sent():
    """Every lifecycle signal sent during the test, as (name, kwargs) in order."""
    log: list[tuple[str, dict]] = []
    receivers = []
    for label, (signal, extra) in SIGNALS.items():
        # Bound as defaults so each receiver keeps its own; "_"-prefixed so they
        # cannot collide with a signal's kwargs (upload_persisted sends name=).
        def receiver(sender, _label=label, _extra=extra, **kwargs):
            assert sender is TempUpload
            assert set(kwargs) == {"signal", "upload", *_extra}, (_label, set(kwargs))
            assert isinstance(kwargs["upload"], TempUpload)
            log.append((_label, kwargs))

        signal.connect(receiver)
        receivers.append((signal, receiver))
    yield log
    for signal, receiver in receivers:
        signal.disconnect(receiver)


def names(log) -> list[str]:
    return [name for name, _ in log]


upload = partial(utils.upload, content=PAYLOAD)


def test_unused_upload_sends_received_then_discarded(client, sent):
    client.post("/accept/", {"file": upload()})

    assert names(sent) == ["received", "discarded"]
    row = TempUpload.objects.get()
    assert {kwargs["upload"].pk for _, kwargs in sent} == {row.pk}
    assert sent[1][1]["reason"] == ""
    # The row passed is in the state the signal announces.
    assert sent[1][1]["upload"].state == State.DISCARDED


def test_persist_sends_received_then_persisted_with_name_and_storage(client, settings, sent):
    name = client.post("/persist/", {"file": upload()}).json()["name"]

    assert names(sent) == ["received", "persisted"]
    kwargs = sent[1][1]
    assert kwargs["name"] == name
    assert isinstance(kwargs["storage"], FileSystemStorage)
    assert kwargs["storage"].location == str(settings.MEDIA_ROOT)
    assert kwargs["upload"].state == State.PERSISTED


def test_django_moving_the_file_sends_persisted_with_no_storage(client, settings, sent):
    name = client.post("/model-save/", {"file": upload()}).json()["name"]

    assert names(sent) == ["received", "persisted"]
    assert sent[1][1]["storage"] is None
    assert sent[1][1]["name"] == str(settings.MEDIA_ROOT / name)


def test_application_discard_sends_discarded_once_with_its_reason(client, sent):
    pk = client.post("/keep/", {"file": upload()}).json()["id"]
    assert names(sent) == ["received"]

    row = TempUpload.objects.get(pk=pk)
    row.discard(reason="no longer needed")
    row.discard(reason="twice")  # Already closed: nothing more is sent.

    assert names(sent) == ["received", "discarded"]
    assert sent[1][1]["reason"] == "no longer needed"


def test_aborted_upload_sends_failed_once_with_a_reason(client, settings, sent):
    settings.TEMPSTORE_MAX_FILE_SIZE = 1000

    response = client.post("/accept/", {"file": upload()})

    assert response.status_code == 413
    assert names(sent) == ["failed"]
    assert "TEMPSTORE_MAX_FILE_SIZE" in sent[0][1]["reason"]
    assert sent[0][1]["upload"].state == State.FAILED


def test_exception_in_view_sends_discarded_once(client, sent):
    client.raise_request_exception = False
    client.post("/explode/", {"file": upload()})

    assert names(sent) == ["received", "discarded"]


def test_persist_in_rolled_back_transaction_never_announces_persisted(client, sent):
    client.post("/rollback/", {"file": upload()})

    # The persist was undone with the transaction: only the discard happened.
    assert names(sent) == ["received", "discarded"]


def test_persist_in_committed_transaction_announces_after_commit(client, sent):
    from django.db import transaction

    pk = client.post("/keep/", {"file": upload()}).json()["id"]
    row = TempUpload.objects.get(pk=pk)
    with transaction.atomic():
        row.persist("committed/data.bin")
        assert names(sent) == ["received"]

    assert names(sent) == ["received", "persisted"]
    assert not row.path.exists()
