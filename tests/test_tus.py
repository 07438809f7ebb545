"""The tus protocol through Django's test client: every status, quota, expiry, locks."""

from __future__ import annotations

import hashlib
import os
import subprocess
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from django_tempstore import process, quota
from django_tempstore.models import State, TempUpload
from django_tempstore.sweep import sweep
from django_tempstore.tus import uploads
from tests.servers import wait_until
from tests.tus_utils import TUS, checksum, create, head, metadata, patch, upload_path

pytestmark = pytest.mark.django_db(transaction=True)


def row(response) -> TempUpload:
    return TempUpload.objects.get(pk=upload_path(response).rpartition("/")[2])


def test_options_advertises_version_extensions_and_max_size(client, settings):
    settings.TEMPSTORE_MAX_FILE_SIZE = 1000
    response = client.options("/files/")
    assert response.status_code == 204
    assert response["Tus-Version"] == "1.0.0"
    assert set(response["Tus-Extension"].split(",")) >= {
        "creation",
        "creation-with-upload",
        "creation-defer-length",
        "expiration",
        "termination",
        "checksum",
        "concatenation",
    }
    assert response["Tus-Max-Size"] == "1000"
    assert "sha256" in response["Tus-Checksum-Algorithm"]
    assert "Upload-Offset" in response["Access-Control-Expose-Headers"]
    assert "Location" in response["Access-Control-Expose-Headers"]


def test_create_then_patch_then_head_completes(client, tempstore_dirs):
    data = os.urandom(3000)
    created = create(client, len(data))
    assert created.status_code == 201
    path = upload_path(created)
    assert head(client, path)["Upload-Offset"] == "0"
    first = patch(client, path, data[:1000], 0)
    assert first.status_code == 204
    assert first["Upload-Offset"] == "1000"
    probe = head(client, path)
    assert probe.status_code == 200
    assert probe["Upload-Offset"] == "1000"
    assert probe["Upload-Length"] == "3000"
    assert probe["Cache-Control"] == "no-store"
    assert "GMT" in probe["Upload-Expires"]
    assert patch(client, path, data[1000:], 1000).status_code == 204
    upload = row(created)
    assert upload.state == State.COMPLETE
    assert upload.original_name == "a.bin"
    assert upload.digest == hashlib.sha256(data).hexdigest()
    assert upload.path.read_bytes() == data


def test_creation_with_upload(client):
    created = create(client, 10, data=b"0123456789")
    assert created.status_code == 201
    assert created["Upload-Offset"] == "10"
    assert row(created).state == State.COMPLETE


def test_wrong_tus_resumable_is_412(client):
    response = client.post("/files/", headers={"Upload-Length": "10"})
    assert response.status_code == 412
    assert response["Tus-Version"] == "1.0.0"
    assert TempUpload.objects.count() == 0


def test_offset_mismatch_is_409_and_changes_nothing(client):
    created = create(client, 100)
    path = upload_path(created)
    patch(client, path, b"x" * 10, 0)
    response = patch(client, path, b"y" * 10, 5)
    assert response.status_code == 409
    assert head(client, path)["Upload-Offset"] == "10"
    assert row(created).path.read_bytes() == b"x" * 10


def test_wrong_content_type_is_415(client):
    path = upload_path(create(client, 100))
    assert patch(client, path, b"x", 0, content_type="text/plain").status_code == 415


def test_missing_length_is_400(client):
    response = client.post("/files/", headers=TUS)
    assert response.status_code == 400


def test_bad_metadata_is_400(client):
    assert create(client, 10, **{"Upload-Metadata": "filename !!!"}).status_code == 400


def test_above_max_file_size_is_413(client, settings):
    settings.TEMPSTORE_MAX_FILE_SIZE = 1000
    assert create(client, 1001).status_code == 413
    assert TempUpload.objects.count() == 0


def test_body_past_upload_length_is_413(client):
    path = upload_path(create(client, 5))
    assert patch(client, path, b"x" * 6, 0).status_code == 413
    assert head(client, path)["Upload-Offset"] == "0"


def test_creation_reserves_the_length_and_507_when_no_room(client, settings):
    settings.TEMPSTORE_QUOTA = 1000
    first = create(client, 700)
    assert first.status_code == 201
    assert quota.counter_value() == 700
    second = create(client, 400)
    assert second.status_code == 507
    assert second["Retry-After"]
    assert quota.counter_value() == 700
    assert TempUpload.objects.pending().count() == 1


def test_delete_terminates_and_releases_quota(client, settings, assert_clean):
    settings.TEMPSTORE_QUOTA = 1000
    created = create(client, 700)
    path = upload_path(created)
    patch(client, path, b"x" * 100, 0)
    response = client.delete(path, headers=TUS)
    assert response.status_code == 204
    assert quota.counter_value() == 0
    assert head(client, path).status_code == 410
    assert patch(client, path, b"x", 100).status_code == 410
    assert_clean()


def test_unknown_upload_is_404(client):
    assert head(client, "/files/7b7f3c3e-0000-4000-8000-000000000000").status_code == 404
    assert head(client, "/files/not-a-uuid").status_code == 404


def test_expired_upload_is_410_then_swept_with_its_quota(client, settings, assert_clean):
    settings.TEMPSTORE_QUOTA = 1000
    created = create(client, 500)
    path = upload_path(created)
    patch(client, path, b"x" * 100, 0)
    TempUpload.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert head(client, path).status_code == 410
    assert patch(client, path, b"x", 100).status_code == 410
    report = sweep()
    assert report.counts["expired"] == 1
    assert quota.counter_value() == 0
    assert TempUpload.objects.get().state == State.FAILED
    assert_clean()


def test_idle_partial_upload_survives_stale_and_startup_sweeps(client, settings):
    created = create(client, 500)
    path = upload_path(created)
    patch(client, path, b"x" * 100, 0)
    # Quiet for longer than TEMPSTORE_STALE_AFTER, created by a process now gone.
    TempUpload.objects.update(updated_at=timezone.now() - timedelta(days=1), pid=999_999)
    sweep(startup=True)
    assert TempUpload.objects.get().state == State.RECEIVING
    assert patch(client, path, b"x" * 400, 100).status_code == 204


def test_progress_renews_expiry(client):
    created = create(client, 500)
    path = upload_path(created)
    TempUpload.objects.update(expires_at=timezone.now() + timedelta(seconds=30))
    patch(client, path, b"x" * 100, 0)
    assert row(created).expires_at > timezone.now() + timedelta(hours=1)


def test_checksum_mismatch_is_460_and_leaves_offset_and_file(client):
    created = create(client, 100)
    path = upload_path(created)
    patch(client, path, b"a" * 10, 0)
    bad = patch(client, path, b"b" * 10, 10, **{"Upload-Checksum": checksum("sha1", b"c" * 10)})
    assert bad.status_code == 460
    assert head(client, path)["Upload-Offset"] == "10"
    assert row(created).path.read_bytes() == b"a" * 10


@pytest.mark.parametrize("algorithm", ["sha1", "sha256", "md5"])
def test_matching_checksum_is_accepted(client, algorithm):
    path = upload_path(create(client, 100))
    good = patch(client, path, b"b" * 10, 0, **{"Upload-Checksum": checksum(algorithm, b"b" * 10)})
    assert good.status_code == 204
    assert good["Upload-Offset"] == "10"


def test_unsupported_checksum_algorithm_is_400(client):
    path = upload_path(create(client, 100))
    response = patch(client, path, b"b", 0, **{"Upload-Checksum": "crc32 AAAA"})
    assert response.status_code == 400


def test_deferred_length_reserves_as_bytes_arrive(client, settings):
    settings.TEMPSTORE_QUOTA = 100 * 1024 * 1024
    created = create(client)
    assert created.status_code == 201
    path = upload_path(created)
    assert quota.counter_value() == 0
    assert head(client, path)["Upload-Defer-Length"] == "1"
    patch(client, path, b"x" * 1000, 0)
    assert quota.counter_value() >= 1000
    done = patch(client, path, b"y" * 500, 1000, **{"Upload-Length": "1500"})
    assert done.status_code == 204
    upload = row(created)
    assert upload.state == State.COMPLETE
    assert upload.upload_length == 1500


def test_deferred_length_507_when_quota_runs_out(client, settings):
    settings.TEMPSTORE_QUOTA = 1000
    path = upload_path(create(client))
    response = patch(client, path, b"x" * 2000, 0)
    assert response.status_code == 507


def test_concatenation_joins_partials_and_final_refuses_patch(client):
    a = create(client, 3, data=b"abc", **{"Upload-Concat": "partial"})
    b = create(client, 2, data=b"de", **{"Upload-Concat": "partial"})
    assert head(client, upload_path(a))["Upload-Concat"] == "partial"
    final = client.post(
        "/files/",
        headers=dict(
            TUS,
            **{
                "Upload-Concat": f"final;{a['Location']} {b['Location']}",
                "Upload-Metadata": metadata(filename="joined.txt"),
            },
        ),
    )
    assert final.status_code == 201
    upload = row(final)
    assert upload.state == State.COMPLETE
    assert upload.path.read_bytes() == b"abcde"
    assert upload.original_name == "joined.txt"
    assert row(a).state == State.DISCARDED
    assert patch(client, upload_path(final), b"x", 5).status_code == 403


def test_validators_run_on_completion(client, settings):
    settings.TEMPSTORE_VALIDATORS = [
        "tests.test_tus.png_only",
    ]
    created = create(client, 10, data=b"not a png!")
    assert created.status_code == 415
    assert TempUpload.objects.get().state == State.FAILED


def png_only():
    from django_tempstore.validators import AllowedContentTypes

    return AllowedContentTypes(["image/png"])


def test_claim_persists_the_finished_upload(client, settings):
    created = create(client, 10, data=b"0123456789")
    upload_id = upload_path(created).rpartition("/")[2]
    response = client.post(f"/claim/{upload_id}/?action=persist")
    assert response.status_code == 200
    assert response.json()["size"] == 10
    upload = TempUpload.objects.get()
    assert upload.state == State.PERSISTED
    assert (settings.MEDIA_ROOT / upload.persisted_name).read_bytes() == b"0123456789"


def test_claim_then_discard_releases_quota(client, settings, assert_clean):
    settings.TEMPSTORE_QUOTA = 1000
    created = create(client, 10, data=b"0123456789")
    upload_id = upload_path(created).rpartition("/")[2]
    assert client.post(f"/claim/{upload_id}/?action=discard").status_code == 200
    assert quota.counter_value() == 0
    assert client.post(f"/claim/{upload_id}/").status_code == 404
    assert_clean()


def test_unclaimed_finished_upload_is_discarded_at_request_end(client, assert_clean):
    created = create(client, 10, data=b"0123456789")
    upload_id = upload_path(created).rpartition("/")[2]
    assert client.post(f"/claim/{upload_id}/").status_code == 200
    assert TempUpload.objects.get().state == State.DISCARDED
    assert_clean()


def test_other_user_can_neither_resume_nor_claim(client, django_user_model):
    owner = django_user_model.objects.create_user("owner", password="x")
    other = django_user_model.objects.create_user("other", password="x")
    client.force_login(owner)
    created = create(client, 10)
    path = upload_path(created)
    assert TempUpload.objects.get().user_id == owner.pk
    client.force_login(other)
    assert head(client, path).status_code == 404
    assert patch(client, path, b"x" * 10, 0).status_code == 404
    client.logout()
    assert patch(client, path, b"x" * 10, 0).status_code == 404
    client.force_login(owner)
    assert patch(client, path, b"x" * 10, 0).status_code == 204
    client.force_login(other)
    assert client.post(f"/claim/{path.rpartition('/')[2]}/").status_code == 404


def test_login_required_permission(client, settings):
    settings.TEMPSTORE_TUS_PERMISSION = "django_tempstore.tus.permissions.login_required"
    assert create(client, 10).status_code == 403


def test_lock_held_by_live_process_is_423(client):
    created = create(client, 100)
    upload = row(created)
    # This test's own parent process: alive, on this host.
    TempUpload.objects.update(
        lock_owner=f"{uploads.conf.HOSTNAME}:{os.getppid()}:x",
        locked_until=timezone.now() + timedelta(minutes=1),
    )
    assert patch(client, upload_path(created), b"x", 0).status_code == 423
    assert upload.path.read_bytes() == b""


def test_lock_of_dead_process_is_taken_over(client):
    created = create(client, 100)
    dead = subprocess.Popen(["true"])
    dead.wait()
    TempUpload.objects.update(
        lock_owner=f"{uploads.conf.HOSTNAME}:{dead.pid}:x",
        locked_until=timezone.now() + timedelta(minutes=1),
    )
    assert patch(client, upload_path(created), b"x", 0).status_code == 204
    assert row(created).lock_owner == ""


def test_expired_lock_of_stalled_client_is_taken_over(client):
    created = create(client, 100)
    TempUpload.objects.update(
        lock_owner="another-host:1:x", locked_until=timezone.now() - timedelta(seconds=1)
    )
    assert patch(client, upload_path(created), b"x", 0).status_code == 204


def test_bytes_past_the_recorded_offset_are_dropped_on_resume(client):
    created = create(client, 20)
    path = upload_path(created)
    patch(client, path, b"a" * 5, 0)
    # What a worker killed before its checkpoint leaves: bytes the row never counted.
    with open(row(created).path, "ab") as fh:
        fh.write(b"garbage")
    assert head(client, path)["Upload-Offset"] == "5"
    assert patch(client, path, b"b" * 15, 5).status_code == 204
    assert row(created).path.read_bytes() == b"a" * 5 + b"b" * 15


def assert_refused_as_not_png(client, path, response, assert_clean) -> None:
    """A 415 naming the allowed type; the upload failed and gone, its quota returned."""
    assert response.status_code == 415
    assert "image/png" in response.content.decode()
    assert TempUpload.objects.get().state == State.FAILED
    assert quota.counter_value() == 0
    assert head(client, path).status_code == 410
    assert_clean()


def test_magic_byte_check_refuses_on_the_first_bytes(client, settings, assert_clean):
    settings.TEMPSTORE_VALIDATORS = ["tests.test_tus.png_only"]
    settings.TEMPSTORE_QUOTA = 1_000_000
    created = create(client, 100_000)
    path = upload_path(created)
    response = patch(client, path, b"%PDF-1.4\n" + b"x" * 9000, 0)
    assert_refused_as_not_png(client, path, response, assert_clean)


def test_a_png_passes_the_early_and_final_checks(client, settings):
    settings.TEMPSTORE_VALIDATORS = ["tests.test_tus.png_only"]
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 20000
    created = create(client, len(png))
    path = upload_path(created)
    assert patch(client, path, png[:9000], 0).status_code == 204
    assert patch(client, path, png[9000:], 9000).status_code == 204
    assert row(created).state == State.COMPLETE


def test_magic_byte_check_refuses_after_small_first_patches(client, settings, assert_clean):
    settings.TEMPSTORE_VALIDATORS = ["tests.test_tus.png_only"]
    settings.TEMPSTORE_QUOTA = 1_000_000
    path = upload_path(create(client, 100_000))
    pdf = b"%PDF-1.4\n" + b"x" * 9000
    # Too few bytes to tell a type from: kept, and given to the check with the next ones.
    assert patch(client, path, pdf[:100], 0).status_code == 204
    assert patch(client, path, pdf[100:4000], 100).status_code == 204

    response = patch(client, path, pdf[4000:], 4000)

    assert_refused_as_not_png(client, path, response, assert_clean)


def test_a_png_sent_in_small_patches_passes_the_early_and_final_checks(client, settings):
    settings.TEMPSTORE_VALIDATORS = ["tests.test_tus.png_only"]
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 20000
    path = upload_path(create(client, len(png)))
    for start in range(0, len(png), 1000):
        assert patch(client, path, png[start : start + 1000], start).status_code == 204
    assert row_of(path).state == State.COMPLETE


def test_lock_of_a_zombie_is_taken_over(client):
    # A worker killed with its arbiter is reparented, and may never be reaped
    # where PID 1 does not reap: it still answers kill(pid, 0) but holds nothing.
    created = create(client, 100)
    zombie = subprocess.Popen(["true"])
    assert wait_until(lambda: process.start_ticks(zombie.pid) is None)
    os.kill(zombie.pid, 0)  # Not reaped: the signal still reaches it.
    TempUpload.objects.update(
        lock_owner=f"{uploads.conf.HOSTNAME}:{zombie.pid}:x",
        locked_until=timezone.now() + timedelta(minutes=1),
    )
    assert patch(client, upload_path(created), b"x", 0).status_code == 204
    zombie.wait()
    assert row(created).lock_owner == ""


def test_lock_of_a_reused_pid_is_taken_over(client):
    # The token records when its process started: a live process that started
    # later under the same pid is not the holder.
    created = create(client, 100)
    TempUpload.objects.update(
        lock_owner=f"{uploads.conf.HOSTNAME}:{os.getppid()}.1:x",
        locked_until=timezone.now() + timedelta(minutes=1),
    )
    assert patch(client, upload_path(created), b"x", 0).status_code == 204


def test_creation_is_bounded_by_the_users_own_quota(client, settings, django_user_model):
    settings.TEMPSTORE_QUOTA_PER_KEY = 1000
    first = django_user_model.objects.create_user("first", password="x")
    second = django_user_model.objects.create_user("second", password="x")
    client.force_login(first)
    assert create(client, 800).status_code == 201
    refused = create(client, 800)
    assert refused.status_code == 507
    assert "Your upload quota" in refused.content.decode()
    client.force_login(second)
    assert create(client, 800).status_code == 201
    assert quota.counter_value(f"key:user:{second.pk}") == 800


def test_patches_in_one_process_complete_without_reading_the_file_again(client, monkeypatch):
    data = os.urandom(3 * 100_000 + 7)
    path = upload_path(create(client, len(data)))
    assert patch(client, path, data[:100_000], 0).status_code == 204
    assert patch(client, path, data[100_000:200_000], 100_000).status_code == 204

    def no_read(self, mode="rb"):
        raise AssertionError("the digest was carried across the PATCHes: no read")

    monkeypatch.setattr(TempUpload, "open", no_read)
    assert patch(client, path, data[200_000:], 200_000).status_code == 204
    upload = TempUpload.objects.get()
    assert upload.state == State.COMPLETE
    assert upload.digest == hashlib.sha256(data).hexdigest()


def test_digest_is_read_from_the_file_when_another_process_wrote_the_start(client, monkeypatch):
    data = os.urandom(5000)
    path = upload_path(create(client, len(data)))
    assert patch(client, path, data[:2000], 0).status_code == 204
    # What a PATCH that lands in another worker sees: no digest for this offset.
    monkeypatch.setattr(uploads, "running_digests", uploads.RunningDigests())
    assert patch(client, path, data[2000:4000], 2000).status_code == 204
    assert patch(client, path, data[4000:], 4000).status_code == 204
    assert TempUpload.objects.get().digest == hashlib.sha256(data).hexdigest()


def test_digest_is_right_after_a_checksum_mismatch_and_a_resend(client):
    data = os.urandom(3000)
    path = upload_path(create(client, len(data)))
    assert patch(client, path, data[:1000], 0).status_code == 204
    wrong = {"Upload-Checksum": checksum("sha1", b"not these bytes")}
    assert patch(client, path, data[1000:2000], 1000, **wrong).status_code == 460
    assert patch(client, path, data[1000:], 1000).status_code == 204
    assert TempUpload.objects.get().digest == hashlib.sha256(data).hexdigest()


def test_a_running_digest_at_another_offset_is_not_used():
    digests = uploads.RunningDigests()
    upload = TempUpload(pk=uuid.uuid4())
    digests.put(upload, 10, hashlib.sha256(b"x" * 10))
    assert digests.take(upload, 20) is None
    digests.put(upload, 10, hashlib.sha256(b"x" * 10))
    assert digests.take(upload, 10).hexdigest() == hashlib.sha256(b"x" * 10).hexdigest()
    assert digests.take(upload, 10) is None


def test_running_digests_forget_the_oldest_upload_past_the_limit(monkeypatch):
    monkeypatch.setattr(uploads.RunningDigests, "LIMIT", 2)
    digests = uploads.RunningDigests()
    first, second, third = (TempUpload(pk=uuid.uuid4()) for _ in range(3))
    for upload in (first, second, third):
        digests.put(upload, 1, hashlib.sha256(b"x"))
    assert digests.take(first, 1) is None
    assert digests.take(second, 1) is not None
    assert digests.take(third, 1) is not None


def test_a_patch_takes_one_read_and_two_updates(client, django_assert_num_queries):
    path = upload_path(create(client, 100))
    # The row; the lock; the offset with the lock's release. A PATCH of at most
    # 4 MiB: a larger one also records its bytes received per block (below).
    with django_assert_num_queries(3):
        assert patch(client, path, b"x" * 10, 0).status_code == 204
    assert row_of(path).lock_owner == ""


def row_of(path: str) -> TempUpload:
    return TempUpload.objects.get(pk=path.rpartition("/")[2])


def test_post_with_method_override_patch_appends(client):
    path = upload_path(create(client, 10))
    response = client.generic(
        "POST",
        path,
        b"0123456789",
        content_type="application/offset+octet-stream",
        headers=dict(TUS, **{"X-HTTP-Method-Override": "PATCH", "Upload-Offset": "0"}),
    )
    assert response.status_code == 204
    assert response["Upload-Offset"] == "10"
    assert row_of(path).state == State.COMPLETE


def test_post_with_method_override_delete_terminates(client, assert_clean):
    path = upload_path(create(client, 10))
    response = client.post(path, headers=dict(TUS, **{"X-HTTP-Method-Override": "DELETE"}))
    assert response.status_code == 204
    assert not row_of(path).is_pending
    assert head(client, path).status_code == 410
    assert_clean()


def test_head_of_an_expired_finished_upload_is_410_before_the_sweep(client):
    created = create(client, 10, data=b"0123456789")
    path = upload_path(created)
    assert head(client, path).status_code == 200
    TempUpload.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert row(created).state == State.COMPLETE  # Not swept yet.
    assert head(client, path).status_code == 410


@pytest.mark.parametrize("heartbeat", [0, 3600], ids=["checkpoint", "last-record"])
def test_a_patch_whose_lock_was_taken_over_does_not_move_the_offset(
    client, settings, monkeypatch, heartbeat
):
    settings.TEMPSTORE_HEARTBEAT_INTERVAL = heartbeat
    settings.TEMPSTORE_CHUNK_SIZE = 1000
    path = upload_path(create(client, 10_000))
    intruder = "another-host:1:takeover"
    real_write = uploads._pwrite_all

    def write_then_lose_the_lock(fd, data, offset):
        real_write(fd, data, offset)
        # Another request took the lock over (it thought this one stalled).
        TempUpload.objects.update(lock_owner=intruder)

    monkeypatch.setattr(uploads, "_pwrite_all", write_then_lose_the_lock)
    response = patch(client, path, b"x" * 5000, 0)
    assert response.status_code == 409
    upload = row_of(path)
    assert upload.size == 0
    assert upload.lock_owner == intruder
    assert uploads.running_digests.take(upload, 5000) is None


MiB = 1024 * 1024


def test_a_large_patch_shows_its_bytes_per_block_but_moves_the_offset_at_the_end(client, settings):
    settings.TEMPSTORE_VALIDATORS = ["tests.test_tus.RowWatcher"]
    RowWatcher.seen = []
    path = upload_path(create(client, 20 * MiB))

    assert patch(client, path, b"x" * (9 * MiB), 0).status_code == 204

    # Before each 1 MiB chunk: (offset, durable size, received) of the row.
    seen = {offset // MiB: (size, received) for offset, size, received in RowWatcher.seen}
    assert seen[3] == (0, 0)  # Not before a whole block arrived.
    assert seen[4] == seen[7] == (0, 4 * MiB)
    assert seen[8] == (0, 8 * MiB)
    upload = row_of(path)
    assert (upload.size, upload.received, upload.arrived) == (9 * MiB, 9 * MiB, 9 * MiB)


class RowWatcher:
    seen: list[tuple[int, int, int]] = []

    def start(self, upload, request):
        pass

    def chunk(self, upload, data, offset):
        fresh = TempUpload.objects.get(pk=upload.pk)
        RowWatcher.seen.append((offset, fresh.size, fresh.received))

    def complete(self, upload, size):
        pass


def test_a_large_patch_adds_one_statement_per_block_after_the_first(
    client, django_assert_num_queries
):
    path = upload_path(create(client, 20 * MiB))
    # The row; the lock; bytes received at 4 and 8 MiB; the offset with the lock's release.
    with django_assert_num_queries(5):
        assert patch(client, path, b"x" * (9 * MiB), 0).status_code == 204


def test_a_failed_patch_shows_only_the_durable_offset_again(client):
    path = upload_path(create(client, 20 * MiB))
    body = b"x" * (9 * MiB)
    bad = checksum("sha1", b"y" * (9 * MiB))

    assert patch(client, path, body, 0, **{"Upload-Checksum": bad}).status_code == 460
    upload = row_of(path)
    assert (upload.size, upload.received, upload.arrived) == (0, 0, 0)


def test_taking_the_lock_forgets_what_a_killed_patch_showed(client):
    path = upload_path(create(client, 20 * MiB))
    assert patch(client, path, b"x" * 10, 0).status_code == 204
    TempUpload.objects.filter(pk=row_of(path).pk).update(received=5 * MiB)  # kill -9 mid-PATCH
    assert row_of(path).arrived == 5 * MiB

    upload = row_of(path)
    uploads.acquire(upload)  # As the next PATCH does, before its first byte.

    assert row_of(path).arrived == upload.arrived == 10
