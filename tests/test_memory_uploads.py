"""Files of a small request wait in memory: no row, no temp file, until the view needs one."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time

import pytest

from django_tempstore import files, lifecycle, quota, signals
from django_tempstore.exceptions import InsufficientStorage, UploadStateError
from django_tempstore.files import TempStoreUploadedFile
from django_tempstore.models import QuotaCounter, State, TempUpload
from tests import utils
from tests.conftest import temp_files
from tests.servers import run_server

pytestmark = pytest.mark.django_db(transaction=True)

KiB = 1024
PAYLOAD = os.urandom(10 * KiB)
SHA256 = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture(autouse=True)
def in_memory(settings):
    """tests/settings.py turns the memory path off; here it has Django's default threshold."""
    del settings.TEMPSTORE_MAX_MEMORY_SIZE


@pytest.fixture
def sent():
    """Every signal sent during the test, as (signal name, upload state) pairs."""
    seen: list[tuple[str, str]] = []
    names = ["received", "persisted", "discarded", "failed", "rejected", "quarantined"]
    receivers = {}
    for name in names:

        def receiver(sender, upload, _signal=name, **kwargs):
            seen.append((_signal, upload.state))

        receivers[name] = receiver
        getattr(signals, "upload_" + name).connect(receiver, weak=False)
    yield seen
    for name, receiver in receivers.items():
        getattr(signals, "upload_" + name).disconnect(receiver)


def upload(name: str = "small.bin", content: bytes = PAYLOAD, **kwargs):
    return utils.upload(name, content, **kwargs)


def test_a_view_that_does_nothing_leaves_no_row_no_file_and_sends_no_signal(
    client, tempstore_dirs, sent, django_assert_num_queries
):
    with django_assert_num_queries(0):
        response = client.post("/sizes/", {"file": upload()})

    assert response.json()["file"] == {
        "size": len(PAYLOAD),
        "sha256": SHA256,
        "content_sha256": SHA256,
        "in_memory": True,
    }
    assert TempUpload.objects.count() == 0
    assert temp_files(tempstore_dirs) == []
    assert sent == []


def test_a_request_above_the_threshold_is_tracked_from_its_first_byte(
    client, settings, assert_clean
):
    settings.TEMPSTORE_MAX_MEMORY_SIZE = 4 * KiB

    response = client.post("/sizes/", {"file": upload()})

    assert response.json()["file"]["in_memory"] is False
    assert response.json()["file"]["sha256"] == SHA256
    assert TempUpload.objects.get().state == State.DISCARDED
    assert_clean()


def test_threshold_defaults_to_file_upload_max_memory_size(client, settings):
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 4 * KiB

    response = client.post("/sizes/", {"file": upload()})

    assert response.json()["file"]["in_memory"] is False


def test_temporary_file_path_writes_the_row_then_the_file(client, sent, assert_clean, monkeypatch):
    order = []
    create_temp = files.create_temp

    def spy(name):
        order.append(("row", TempUpload.objects.filter(name=name, state=State.RECEIVING).exists()))
        return create_temp(name)

    monkeypatch.setattr(files, "create_temp", spy)
    response = client.post("/accept/", {"file": upload()})

    body = response.json()["file"][0]
    assert body["sha256"] == SHA256
    assert order == [("row", True)]
    row = TempUpload.objects.get()
    assert str(row.pk) == body["id"]
    assert (row.state, row.size, row.digest) == (State.DISCARDED, len(PAYLOAD), SHA256)
    assert sent == [("received", State.COMPLETE), ("discarded", State.DISCARDED)]
    assert_clean()


def test_persist_spills_and_stores_the_content(client, settings, sent, assert_clean):
    response = client.post("/persist/", {"file": upload("report.bin")})

    name = response.json()["name"]
    assert (settings.MEDIA_ROOT / name).read_bytes() == PAYLOAD
    row = TempUpload.objects.get()
    assert (row.state, row.persisted_name, row.digest) == (State.PERSISTED, name, SHA256)
    assert [s for s, _ in sent] == ["received", "persisted"]
    assert_clean()


def test_a_file_closed_by_the_view_can_still_be_persisted(client, settings, assert_clean):
    # As a file on disk can: closing a BytesIO would drop the bytes.
    response = client.post("/read-close-persist/", {"file": upload("closed.bin")})

    assert response.status_code == 200, response.content
    assert response.json()["head"] == PAYLOAD[:4].hex()
    assert (settings.MEDIA_ROOT / response.json()["name"]).read_bytes() == PAYLOAD
    assert TempUpload.objects.get().state == State.PERSISTED
    assert_clean()


def test_a_model_save_moves_the_spilled_file(client, settings, assert_clean):
    response = client.post("/model-save/", {"file": upload("doc.bin")})

    name = response.json()["name"]
    assert (settings.MEDIA_ROOT / name).read_bytes() == PAYLOAD
    assert TempUpload.objects.get().state == State.PERSISTED
    assert_clean()


def test_a_spill_rolled_back_with_the_views_transaction_leaves_nothing(
    client, settings, sent, assert_clean
):
    # The view persists inside transaction.atomic() on TEMPSTORE_DATABASE, then
    # rolls back: the spill's row goes with it, so the request end removes the files,
    # and upload_received, which waits for the commit, is never sent.
    response = client.post("/rollback/", {"file": upload("gone.bin")})

    name = response.json()["name"]
    assert not (settings.MEDIA_ROOT / name).exists()
    assert TempUpload.objects.count() == 0
    assert sent == []
    assert_clean()


@pytest.mark.skipif(
    os.environ.get("TEMPSTORE_TEST_DB") != "postgres",
    reason="SQLite locks the whole file: a second alias would wait for the view's transaction",
)
@pytest.mark.django_db(transaction=True, databases=["default", "tempstore"])
def test_a_spill_on_another_alias_is_undone_like_any_persist(client, settings, assert_clean):
    settings.TEMPSTORE_DATABASE = "tempstore"  # Not in the view's transaction (W004's advice).

    response = client.post("/rollback/", {"file": upload("gone.bin")})

    assert not (settings.MEDIA_ROOT / response.json()["name"]).exists()
    row = TempUpload.objects.get()
    assert (row.state, row.persisted_name) == (State.DISCARDED, "")
    assert_clean()


def test_keep_spills_and_the_file_outlives_the_request(client, tempstore_dirs):
    response = client.post("/keep/", {"file": upload()})

    row = TempUpload.objects.get(pk=response.json()["id"])
    assert row.state == State.KEPT
    assert row.path.read_bytes() == PAYLOAD
    assert temp_files(tempstore_dirs) == [row.path]


def test_a_discarded_file_in_memory_cannot_be_kept(client, assert_clean, sent):
    client.raise_request_exception = False

    response = client.post("/discard-then-keep/", {"file": upload()})

    assert response.status_code == 409
    assert TempUpload.objects.count() == 0
    assert sent == []
    assert_clean()


def test_a_validated_view_tracks_its_files_and_validators_still_refuse(client, sent, assert_clean):
    response = client.post("/png-only/", {"file": upload("a.png", content_type="text/plain")})

    assert response.status_code == 415
    assert TempUpload.objects.get().state == State.FAILED
    assert sent == [("rejected", State.FAILED)]
    assert_clean()


def test_a_validated_view_gets_a_tracked_file(client, assert_clean):
    png = b"\x89PNG\r\n\x1a\n" + PAYLOAD
    response = client.post("/png-only/", {"file": upload("a.png", png, content_type="image/png")})

    assert response.status_code == 200
    assert response.json()["file"][0]["sha256"] == hashlib.sha256(png).hexdigest()
    assert TempUpload.objects.get().state == State.DISCARDED
    assert_clean()


def test_max_file_size_still_refuses_a_file_in_memory(client, settings, assert_clean, sent):
    settings.TEMPSTORE_MAX_FILE_SIZE = 4 * KiB

    response = client.post("/sizes/", {"file": upload()})

    assert response.status_code == 413
    assert TempUpload.objects.count() == 0
    assert sent == []
    assert_clean()


def test_files_in_memory_reserve_nothing(client, settings):
    settings.TEMPSTORE_QUOTA = 1024 * KiB

    client.post("/sizes/", {"file": upload()})

    assert quota.counter_value() == 0
    assert TempUpload.objects.count() == 0


def test_a_spill_reserves_its_bytes_and_the_close_releases_them(client, settings, assert_clean):
    settings.TEMPSTORE_QUOTA = 1024 * KiB

    response = client.post("/keep/", {"file": upload()})

    row = TempUpload.objects.get(pk=response.json()["id"])
    assert row.reserved == len(PAYLOAD) == quota.counter_value()
    row.discard()
    assert quota.counter_value() == 0
    assert_clean()


def in_memory_file(content: bytes) -> TempStoreUploadedFile:
    """A file as the handler leaves it after the last chunk of a small request."""
    file = TempStoreUploadedFile.in_memory_file(
        lambda: lifecycle.prepare(original_name="small.bin"),
        "small.bin",
        "text/plain",
        None,
        digest_algorithm="sha256",
    )
    file.file.write(content)
    file.set_fields(state=State.COMPLETE, size=len(content), digest=SHA256)
    return file


def test_a_spill_the_quota_has_no_room_for_is_507_and_leaves_nothing(
    settings, tempstore_dirs, sent
):
    settings.TEMPSTORE_QUOTA = 16 * KiB
    QuotaCounter.objects.create(scope=quota.SCOPE, used=8 * KiB)
    file = in_memory_file(PAYLOAD)

    with pytest.raises(InsufficientStorage):
        file.temporary_file_path()

    row = TempUpload.objects.get()
    assert (row.state, row.reserved) == (State.FAILED, 0)
    assert quota.counter_value() == 8 * KiB
    assert temp_files(tempstore_dirs) == []
    assert sent == [("failed", State.FAILED)]


def test_a_spill_keeps_the_read_position(settings):
    file = in_memory_file(PAYLOAD)
    file.seek(100)

    file.spill()

    assert file.in_memory is False
    assert file.read(10) == PAYLOAD[100:110]
    file.discard()


def test_a_spilled_file_is_on_disk_and_tracked(settings):
    file = in_memory_file(PAYLOAD)
    file.spill()

    with file.temp_upload.open() as fh:
        assert fh.read() == PAYLOAD
    file.discard()
    assert TempUpload.objects.get().state == State.DISCARDED


def test_spill_of_a_discarded_file_is_refused(settings):
    file = in_memory_file(PAYLOAD)
    file.discard()

    with pytest.raises(UploadStateError):
        file.spill()
    assert TempUpload.objects.count() == 0


def test_promote_later_spills_and_keeps(settings, monkeypatch):
    from django_tempstore import tasks

    queued = []
    monkeypatch.setattr(tasks.promote_upload, "delay", lambda *a, **kw: queued.append(a))
    file = in_memory_file(PAYLOAD)

    upload_id = tasks.promote_later(file, "promoted/x.bin")

    row = TempUpload.objects.get(pk=upload_id)
    assert row.state == State.KEPT
    assert row.path.read_bytes() == PAYLOAD
    assert queued == [(upload_id, "promoted/x.bin")]
    file.close()
    row.discard()


@pytest.mark.server
def test_a_server_killed_mid_upload_leaves_nothing_untracked(tmp_path, tempstore_dirs):
    # Past the first 1 MiB read (TEMPSTORE_CHUNK_SIZE), below the 2.5 MiB threshold.
    body, content_type = utils.multipart({"file": ("small.bin", os.urandom(2048 * KiB))})
    memory = json.dumps({"TEMPSTORE_MAX_MEMORY_SIZE": None})
    with run_server("gunicorn", tmp_path, TEMPSTORE_TEST_SETTINGS=memory) as server:
        # A first upload loads Django in the worker, and shows it is held in memory.
        small, small_type = utils.multipart({"file": ("small.bin", PAYLOAD)})
        _, answer = utils.raw_post(server.port, "/sizes/", small, small_type)
        assert json.loads(answer) == {
            "file": {
                "size": len(PAYLOAD),
                "sha256": SHA256,
                "content_sha256": SHA256,
                "in_memory": True,
            }
        }
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(utils.request_head("/sizes/", content_type, len(body), server.port))
            sock.sendall(body[: 1536 * KiB])
            time.sleep(1)  # The worker holds the first chunk in memory.
            server.kill()

    assert TempUpload.objects.count() == 0
    assert temp_files(tempstore_dirs) == []
