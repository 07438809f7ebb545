"""Every way a request can end leaves no temp file and no pending row."""

from __future__ import annotations

import hashlib
import os
import stat
from functools import partial

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.files.uploadhandler import FileUploadHandler, SkipFile, StopUpload
from django.test import override_settings

from django_tempstore import signals
from django_tempstore.models import State, TempUpload
from tests import utils
from tests.models import Document
from tests.utils import connected

pytestmark = pytest.mark.django_db(transaction=True)

PAYLOAD = os.urandom(300_000)


upload = partial(utils.upload, content=PAYLOAD)


def test_unused_upload_is_discarded_at_request_end(client, assert_clean):
    response = client.post("/accept/", {"file": upload()})

    body = response.json()["file"][0]
    assert body["size"] == len(PAYLOAD)
    assert body["sha256"] == hashlib.sha256(PAYLOAD).hexdigest()
    row = TempUpload.objects.get()
    assert row.state == State.DISCARDED
    assert row.size == len(PAYLOAD)
    assert row.original_name == "data.bin"
    assert row.field_name == "file"
    assert row.request_path == "/accept/"
    assert row.closed_at is not None
    assert_clean()


def test_file_is_0600_in_a_0700_dir_while_the_view_runs(client, tempstore_dirs):
    seen = {}

    def spy(sender, upload, **kwargs):
        seen["file"] = stat.S_IMODE(os.stat(upload.path).st_mode)
        seen["dir"] = stat.S_IMODE(os.stat(tempstore_dirs).st_mode)

    with connected(signals.upload_received, spy):
        client.post("/accept/", {"file": upload()})
    assert seen == {"file": 0o600, "dir": 0o700}


def test_exception_in_view_discards(client, assert_clean):
    client.raise_request_exception = False
    response = client.post("/explode/", {"file": upload()})

    assert response.status_code == 500
    assert TempUpload.objects.get().state == State.DISCARDED
    assert_clean()


def test_persist_moves_the_file_and_closes_the_row(client, settings, assert_clean):
    response = client.post("/persist/", {"file": upload("report.bin")})

    name = response.json()["name"]
    final = settings.MEDIA_ROOT / name
    assert final.read_bytes() == PAYLOAD
    assert stat.S_IMODE(final.stat().st_mode) == 0o644
    row = TempUpload.objects.get()
    assert row.state == State.PERSISTED
    assert row.persisted_name == name
    assert_clean()


def test_persist_never_overwrites(client, settings, assert_clean):
    first = client.post("/persist/", {"file": upload("same.bin")}).json()["name"]
    second = client.post("/persist/", {"file": upload("same.bin", content=b"other")}).json()["name"]

    assert first != second
    assert (settings.MEDIA_ROOT / first).read_bytes() == PAYLOAD
    assert (settings.MEDIA_ROOT / second).read_bytes() == b"other"
    assert_clean()


def test_keep_survives_the_request_then_discard(client, tempstore_dirs, assert_clean):
    response = client.post("/keep/", {"file": upload()})

    row = TempUpload.objects.get(pk=response.json()["id"])
    assert row.state == State.KEPT
    assert row.expires_at is not None
    assert row.path.read_bytes() == PAYLOAD
    row.discard()
    assert_clean()


def test_model_field_save_marks_the_row_persisted(client, settings, assert_clean):
    response = client.post("/model-save/", {"file": upload("doc.bin")})

    name = response.json()["name"]
    assert (settings.MEDIA_ROOT / name).read_bytes() == PAYLOAD
    assert Document.objects.get().file.name == name
    row = TempUpload.objects.get()
    assert row.state == State.PERSISTED
    assert row.persisted_name == str(settings.MEDIA_ROOT / name)
    assert_clean()


def test_default_storage_save_marks_the_row_persisted(client, settings, assert_clean):
    response = client.post("/storage-save/", {"file": upload()})

    assert (settings.MEDIA_ROOT / response.json()["name"]).read_bytes() == PAYLOAD
    assert TempUpload.objects.get().state == State.PERSISTED
    assert_clean()


def test_model_form_success_persists(client, settings, assert_clean):
    response = client.post("/model-form/", {"file": upload("notes.txt", content=b"hello")})

    assert response.status_code == 200
    assert (settings.MEDIA_ROOT / response.json()["name"]).read_bytes() == b"hello"
    assert TempUpload.objects.get().state == State.PERSISTED
    assert_clean()


def test_model_form_validation_failure_discards(client, assert_clean):
    response = client.post("/model-form/", {"file": upload("evil.exe")})

    assert response.status_code == 400
    assert "Only .txt" in response.content.decode()
    assert TempUpload.objects.get().state == State.DISCARDED
    assert Document.objects.count() == 0
    assert_clean()


def test_persist_in_rolled_back_transaction_leaves_nothing(client, settings, assert_clean):
    response = client.post("/rollback/", {"file": upload("gone.bin")})

    name = response.json()["name"]
    assert not (settings.MEDIA_ROOT / name).exists()
    assert TempUpload.objects.get().state == State.DISCARDED
    assert_clean()


def test_several_files_in_one_request(client, assert_clean):
    response = client.post("/accept/", {"a": [upload("1.bin"), upload("2.bin")], "b": upload()})

    body = response.json()
    assert len(body["a"]) == 2
    assert len({f["path"] for f in body["a"] + body["b"]}) == 3
    assert TempUpload.objects.filter(state=State.DISCARDED).count() == 3
    assert_clean()


class _StopAfterFirstChunk(FileUploadHandler):
    exception: type[Exception] = StopUpload

    def receive_data_chunk(self, raw_data, start):
        if start > 0:
            raise self.exception()
        return raw_data

    def file_complete(self, file_size):
        return None


class StopUploadHandler(_StopAfterFirstChunk):
    exception = StopUpload


class SkipFileHandler(_StopAfterFirstChunk):
    exception = SkipFile


@pytest.mark.parametrize("handler", ["StopUploadHandler", "SkipFileHandler"])
def test_stop_or_skip_from_a_later_handler_fails_the_upload(client, handler, assert_clean):
    # Ours consumes every chunk, so the other handler must come first to see them.
    handlers = [
        f"tests.test_lifecycle.{handler}",
        "django_tempstore.handlers.TempStoreUploadHandler",
    ]
    with override_settings(FILE_UPLOAD_HANDLERS=handlers, TEMPSTORE_CHUNK_SIZE=65536):
        response = client.post("/accept/", {"file": upload()})

    assert response.json() == {}
    assert TempUpload.objects.get().state == State.FAILED
    assert_clean()


def test_works_after_memory_handler(client, settings, assert_clean):
    settings.FILE_UPLOAD_HANDLERS = [
        "django.core.files.uploadhandler.MemoryFileUploadHandler",
        "django_tempstore.handlers.TempStoreUploadHandler",
    ]
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 1000
    small = client.post("/accept/", {"small": upload("s", content=b"x" * 10)})
    big = client.post("/accept/", {"big": upload()})

    assert small.status_code == 200  # in memory: describe() has no temp path to give
    assert big.json()["big"][0]["size"] == len(PAYLOAD)
    assert TempUpload.objects.count() == 1
    assert_clean()


def test_digest_can_be_changed_or_turned_off(client, settings):
    settings.TEMPSTORE_DIGEST = "blake2b"
    client.post("/accept/", {"file": upload()})
    settings.TEMPSTORE_DIGEST = None
    client.post("/accept/", {"file": upload()})

    digests = dict(TempUpload.objects.values_list("digest_algorithm", "digest"))
    assert digests == {"blake2b": hashlib.blake2b(PAYLOAD).hexdigest(), "": ""}


def test_pending_lists_only_live_states(db):
    for state in State.values:
        TempUpload.objects.create(name=f"tsu-{state:0<32}"[:36], state=state, host="h", pid=1)

    assert set(TempUpload.objects.pending().values_list("state", flat=True)) == {
        "receiving",
        "complete",
        "kept",
    }


def test_persist_without_upload_permissions_uses_the_umask(client, settings, assert_clean):
    settings.FILE_UPLOAD_PERMISSIONS = None
    old = os.umask(0o027)
    try:
        name = client.post("/persist/", {"file": upload("m.bin")}).json()["name"]
    finally:
        os.umask(old)

    assert stat.S_IMODE((settings.MEDIA_ROOT / name).stat().st_mode) == 0o640
    assert_clean()


def test_persist_to_an_overwriting_storage_replaces_the_file(client, settings, assert_clean):
    from django.core.files.storage import FileSystemStorage

    storage = FileSystemStorage(location=settings.MEDIA_ROOT, allow_overwrite=True)
    storage.save("same.bin", SimpleUploadedFile("same.bin", b"old"))
    row = TempUpload.objects.get(pk=client.post("/keep/", {"file": upload()}).json()["id"])

    # With allow_overwrite, get_available_name() returns the taken name every time.
    assert row.persist("same.bin", storage) == "same.bin"

    assert (settings.MEDIA_ROOT / "same.bin").read_bytes() == PAYLOAD
    assert TempUpload.objects.get(pk=row.pk).state == State.PERSISTED
    assert_clean()


def test_persist_gives_up_when_no_name_is_ever_free(client, settings):
    from django.core.files.storage import FileSystemStorage

    class SameName(FileSystemStorage):
        def get_available_name(self, name, max_length=None):
            return name

    storage = SameName(location=settings.MEDIA_ROOT)
    storage.save("same.bin", SimpleUploadedFile("same.bin", b"old"))
    row = TempUpload.objects.get(pk=client.post("/keep/", {"file": upload()}).json()["id"])

    with pytest.raises(FileExistsError):
        row.persist("same.bin", storage)

    assert (settings.MEDIA_ROOT / "same.bin").read_bytes() == b"old"
    assert TempUpload.objects.get(pk=row.pk).state == State.KEPT
    row.discard()


class ClosedBySweep:
    """Does to the row what a sweep does to a stale upload, at one handler step."""

    def __init__(self, hook: str) -> None:
        self.hook = hook

    def _sweep(self, upload):
        from django_tempstore import lifecycle

        lifecycle.fail(TempUpload.objects.get(pk=upload.pk), "swept as stale")

    def start(self, upload, request):
        pass

    def chunk(self, upload, data, offset):
        if self.hook == "chunk":
            self._sweep(upload)

    def complete(self, upload, size):
        if self.hook == "complete":
            self._sweep(upload)

    def parsed(self, upload, request):
        pass


@pytest.mark.parametrize("hook", ["chunk", "complete"])
def test_upload_swept_while_receiving_answers_409(client, settings, hook, assert_clean):
    settings.TEMPSTORE_VALIDATORS = [ClosedBySweep(hook)]
    settings.TEMPSTORE_HEARTBEAT_INTERVAL = 0  # A heartbeat after every chunk.

    response = client.post("/persist/", {"file": upload()})

    assert response.status_code == 409
    assert "Send it again" in response.content.decode()
    row = TempUpload.objects.get()
    assert row.state == State.FAILED
    assert row.reason == "swept as stale"
    assert_clean()


def test_same_filesystem_persist_fsyncs_the_data_before_linking(client, settings, monkeypatch):
    real_fsync = os.fsync
    synced = []

    def spy(fd):
        st = os.fstat(fd)
        synced.append(((st.st_dev, st.st_ino), st.st_nlink))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    response = client.post("/persist/", {"file": upload("durable.bin")})

    st = (settings.MEDIA_ROOT / response.json()["name"]).stat()
    # The file's inode was flushed while it had one link: before the link was made.
    assert ((st.st_dev, st.st_ino), 1) in synced


@pytest.mark.skipif(
    os.environ.get("TEMPSTORE_TEST_DB") != "postgres",
    reason="SQLite locks the whole file: a second alias would wait for the view's transaction",
)
@pytest.mark.django_db(transaction=True, databases=["default", "tempstore"])
def test_persist_rolled_back_on_another_alias_leaves_nothing(client, settings, assert_clean):
    settings.TEMPSTORE_DATABASE = "tempstore"  # Not in the view's transaction (W004's advice).

    response = client.post("/rollback/", {"file": upload("gone.bin")})

    name = response.json()["name"]
    assert not (settings.MEDIA_ROOT / name).exists()
    row = TempUpload.objects.get()
    assert row.state == State.DISCARDED
    assert row.persisted_name == ""
    assert_clean()
