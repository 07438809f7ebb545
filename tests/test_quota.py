"""MAX_FILE_SIZE, QUOTA and MIN_FREE_SPACE: the answers, the accounting, the usage API."""

from __future__ import annotations

import os
from unittest import mock

import pytest
from django.db import connections
from django.db.models.signals import post_save
from django.test import Client
from django.test.utils import CaptureQueriesContext

from django_tempstore import lifecycle, quota, signals
from django_tempstore.models import QuotaCounter, State, TempUpload
from tests.quota_utils import small_tmpfs
from tests.utils import upload

pytestmark = pytest.mark.django_db

KiB = 1024
MiB = 1024 * KiB


def held() -> tuple[int, int]:
    """(the counter, the sum of pending rows' reservations)."""
    return quota.counter_value(), quota.usage().held


@pytest.fixture
def settled(assert_clean):
    """Call at the end of a test: nothing left on disk, nothing pending, nothing reserved."""

    def check() -> None:
        assert_clean()
        assert quota.counter_value() == 0
        assert list(TempUpload.objects.filter(reserved__gt=0)) == []

    return check


# 1. TEMPSTORE_MAX_FILE_SIZE


def test_file_over_max_file_size_is_413_and_leaves_nothing(client, settings, settled):
    settings.TEMPSTORE_MAX_FILE_SIZE = 100 * KiB
    settings.TEMPSTORE_QUOTA = 10 * MiB
    settings.TEMPSTORE_CHUNK_SIZE = 16 * KiB

    response = client.post("/accept/", {"file": upload(size=300 * KiB)})

    assert response.status_code == 413
    assert "100\xa0KiB" in response.content.decode()
    row = TempUpload.objects.get()
    assert row.state == State.FAILED
    assert "TEMPSTORE_MAX_FILE_SIZE" in row.reason
    assert row.size <= 100 * KiB
    settled()


def test_file_of_exactly_max_file_size_is_accepted(client, settings, settled):
    settings.TEMPSTORE_MAX_FILE_SIZE = 100 * KiB
    response = client.post("/accept/", {"file": upload(size=100 * KiB)})
    assert response.json()["file"][0]["size"] == 100 * KiB
    settled()


# 2. TEMPSTORE_QUOTA


def test_reservation_is_cut_to_the_content_length(client, settings, settled):
    settings.TEMPSTORE_QUOTA = 10 * MiB
    seen = []
    signals.upload_received.connect(
        lambda upload, **kw: seen.append(held()), weak=False, dispatch_uid="t-cut"
    )
    try:
        client.post("/accept/", {"file": upload(size=300 * KiB)})
    finally:
        signals.upload_received.disconnect(dispatch_uid="t-cut")
    counter, rows = seen[0]
    # The whole body's length, not a 4 MiB block: small uploads do not crowd each other out.
    assert counter == rows
    assert 300 * KiB < counter < 301 * KiB
    settled()


def test_near_the_quota_a_block_that_does_not_fit_falls_back_to_what_is_needed(
    client, settings, settled
):
    # Each file first asks for the whole body (both files); the second one
    # cannot have that, but its own 200 KiB fit.
    settings.TEMPSTORE_QUOTA = 450 * KiB
    response = client.post("/accept/", {"a": upload(size=200 * KiB), "b": upload(size=200 * KiB)})
    assert [f[0]["size"] for f in response.json().values()] == [200 * KiB, 200 * KiB]
    settled()


def test_a_request_larger_than_the_whole_quota_is_413_before_its_body(client, settings, settled):
    settings.TEMPSTORE_QUOTA = 100 * KiB
    response = client.post("/accept/", {"file": upload(size=300 * KiB)})
    assert response.status_code == 413
    assert not TempUpload.objects.exists()  # Refused before any file was started.
    settled()


def test_a_request_that_does_not_fit_now_is_507_before_its_body(client, settings, settled):
    settings.TEMPSTORE_QUOTA = 500 * KiB
    kept = client.post("/keep/", {"file": upload(size=300 * KiB)}).json()["id"]

    response = client.post("/accept/", {"file": upload(size=300 * KiB)})

    assert response.status_code == 507
    assert response["Retry-After"] == "60"
    assert TempUpload.objects.count() == 1
    TempUpload.objects.get(pk=kept).discard()
    settled()


def test_quota_taken_by_another_upload_mid_request_is_507(client, settings, settled):
    """The Content-Length fits when the request starts; another process takes the room."""
    settings.TEMPSTORE_QUOTA = 1 * MiB
    settings.TEMPSTORE_CHUNK_SIZE = 64 * KiB
    other = lifecycle.start(original_name="other.bin")

    def take_the_rest(instance, created, **kwargs):
        if created and instance.original_name == "b.bin":
            quota.reserve(other, settings.TEMPSTORE_QUOTA - quota.counter_value())

    post_save.connect(take_the_rest, sender=TempUpload, weak=False, dispatch_uid="t-take")
    try:
        response = client.post(
            "/accept/", {"a": upload("a.bin", size=300 * KiB), "b": upload("b.bin", size=300 * KiB)}
        )
    finally:
        post_save.disconnect(sender=TempUpload, dispatch_uid="t-take")

    assert response.status_code == 507
    other.refresh_from_db()
    assert quota.counter_value() == other.reserved  # a.bin and b.bin gave theirs back.
    states = dict(TempUpload.objects.values_list("original_name", "state"))
    assert states == {"a.bin": State.DISCARDED, "b.bin": State.FAILED, "other.bin": "receiving"}
    lifecycle.fail(other, "test over")
    settled()


# 3. TEMPSTORE_MIN_FREE_SPACE and a full disk


def test_below_min_free_space_is_507(client, settings, settled):
    settings.TEMPSTORE_MIN_FREE_SPACE = 2**62  # More than any disk has.
    response = client.post(
        "/accept/", {"file": upload(size=10 * KiB)}, HTTP_ACCEPT="application/json"
    )
    assert response.status_code == 507
    assert response.json()["code"] == "insufficient_storage"
    settled()


@pytest.mark.root
def test_min_free_space_counts_the_upload_on_a_small_tmpfs(client, settings, tmp_path, settled):
    with small_tmpfs(tmp_path / "small", "2m") as directory:
        settings.TEMPSTORE_DIR = directory
        settings.TEMPSTORE_MIN_FREE_SPACE = 1 * MiB
        # 2 MiB free: 300 KiB leaves more than 1 MiB, 1.5 MiB would not.
        assert client.post("/accept/", {"file": upload(size=300 * KiB)}).status_code == 200
        assert client.post("/accept/", {"file": upload(size=1536 * KiB)}).status_code == 507
        settled()


@pytest.mark.root
def test_a_full_disk_while_writing_is_507_and_the_partial_file_goes(
    client, settings, tmp_path, settled
):
    with small_tmpfs(tmp_path / "small", "2m") as directory:
        settings.TEMPSTORE_DIR = directory
        settings.TEMPSTORE_QUOTA = 100 * MiB  # The quota would allow it; the disk does not.

        response = client.post("/accept/", {"file": upload(size=3 * MiB)})

        assert response.status_code == 507
        assert response["Retry-After"]
        row = TempUpload.objects.get()
        assert (row.state, row.reason) == (State.FAILED, "the temp disk is full")
        assert list(directory.iterdir()) == []
        settled()


# 4. Every exit path gives the reservation back


# persist() moves the file on commit: a test transaction never commits.
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("path", "data", "status", "state"),
    [
        ("/accept/", {"file": upload(size=200 * KiB)}, 200, State.DISCARDED),
        ("/persist/", {"file": upload(size=200 * KiB)}, 200, State.PERSISTED),
        ("/explode/", {"file": upload(size=200 * KiB)}, 500, State.DISCARDED),
        ("/model-form/", {"file": upload("x.bin", size=200 * KiB)}, 400, State.DISCARDED),
        ("/rollback/", {"file": upload(size=200 * KiB)}, 200, State.DISCARDED),
    ],
    ids=["success", "persist", "exception", "validation-failure", "rollback"],
)
def test_every_exit_path_releases_the_reservation(client, settings, settled, path, data, status,
                                                  state):  # fmt: skip
    settings.TEMPSTORE_QUOTA = 10 * MiB
    client.raise_request_exception = False
    for value in data.values():
        value.seek(0)
    assert client.post(path, data).status_code == status
    assert TempUpload.objects.get().state == state
    settled()


def test_keep_holds_the_reservation_until_discard(client, settings, settled):
    settings.TEMPSTORE_QUOTA = 10 * MiB
    pk = client.post("/keep/", {"file": upload(size=200 * KiB)}).json()["id"]
    row = TempUpload.objects.get(pk=pk)
    assert held() == (row.reserved, row.reserved)
    assert 200 * KiB <= row.reserved < 201 * KiB
    row.discard()
    settled()


def test_close_releases_exactly_once(settings, settled):
    settings.TEMPSTORE_QUOTA = 10 * MiB
    row = lifecycle.start(original_name="a.bin")
    quota.reserve(row, 1000)
    stale = TempUpload.objects.get(pk=row.pk)
    quota.reserve(row, 500)  # The other copy does not know.

    assert lifecycle.fail(stale, "closed by one")
    assert not lifecycle.fail(row, "closed by the other")
    settled()


# 5. The same answer wherever the body is first parsed


@pytest.mark.parametrize("where", ["view", "csrf", "drf"])
@pytest.mark.parametrize("refusal", ["413", "507"])
@pytest.mark.parametrize("accept", ["application/json", "text/html"])
def test_refusal_is_the_same_wherever_the_body_is_parsed(settings, settled, where, refusal,
                                                         accept):  # fmt: skip
    settings.TEMPSTORE_CHUNK_SIZE = 64 * KiB
    if refusal == "413":
        settings.TEMPSTORE_MAX_FILE_SIZE = 100 * KiB
    else:
        settings.TEMPSTORE_MIN_FREE_SPACE = 2**62  # More than any disk has.
    path = {"view": "/accept/", "csrf": "/csrf/", "drf": "/drf/"}[where]
    client = Client(enforce_csrf_checks=True, raise_request_exception=False)
    # With its cookie, the CSRF check reads the body to look for the token.
    client.cookies[settings.CSRF_COOKIE_NAME] = "k" * 32

    response = client.post(path, {"file": upload(size=300 * KiB)}, HTTP_ACCEPT=accept)

    status = int(refusal)
    assert response.status_code == status
    if refusal == "413":
        message = "data.bin is larger than the 100\xa0KiB this site accepts. Send a smaller file."
    else:
        message = "The server has no room for this upload right now. Try again later."
    if accept == "application/json":
        assert response["Content-Type"] == "application/json"
        code = "file_too_large" if status == 413 else "insufficient_storage"
        assert response.json() == {"error": message, "code": code, "status": status}
    else:
        assert response["Content-Type"] == "text/plain; charset=utf-8"
        assert response.content.decode() == message + "\n"
    assert response.has_header("Retry-After") == (status == 507)
    settled()


def test_csrf_protected_view_still_refuses_a_missing_token(settings, settled):
    client = Client(enforce_csrf_checks=True)
    assert client.post("/csrf/", {"file": upload(size=10 * KiB)}).status_code == 403
    settled()


def test_drf_view_accepts_an_upload(settings, settled):
    settings.TEMPSTORE_QUOTA = 10 * MiB
    response = Client().post("/drf/", {"file": upload(size=10 * KiB)})
    assert response.json() == {"file": [{"name": "data.bin", "size": 10 * KiB}]}
    settled()


# 6. Usage and reconcile


def test_usage_reports_bytes_quota_disk_counts_and_oldest(client, settings, settled):
    settings.TEMPSTORE_QUOTA = 10 * MiB
    settings.TEMPSTORE_MAX_FILE_SIZE = 1 * MiB
    settings.TEMPSTORE_MIN_FREE_SPACE = 1
    first = client.post("/keep/", {"file": upload(size=100 * KiB)}).json()["id"]
    client.post("/keep/", {"file": upload(size=50 * KiB)})
    client.post("/accept/", {"file": upload(size=10 * KiB)})
    client.post("/accept/", {"file": upload(size=2 * MiB)})  # 413: failed

    usage = quota.usage()

    rows = TempUpload.objects.pending()
    assert usage.used == 150 * KiB
    assert usage.reserved == usage.held == sum(row.reserved for row in rows)
    assert usage.drift == 0
    assert usage.quota == 10 * MiB
    assert usage.percent == pytest.approx(100 * usage.reserved / (10 * MiB))
    # Free space moves with everything else on the disk: check it is statvfs's.
    st = os.statvfs(settings.TEMPSTORE_DIR)
    assert 0 < usage.free_disk <= st.f_blocks * st.f_frsize
    assert usage.free_disk % st.f_frsize == 0
    assert usage.counts == {
        "receiving": 0, "complete": 0, "kept": 2, "persisted": 0,
        "discarded": 1, "failed": 1, "quarantined": 0,
    }  # fmt: skip
    assert usage.pending == 2
    assert str(usage.oldest_pending_id) == first
    assert usage.oldest_pending == TempUpload.objects.get(pk=first).created_at
    assert (usage.max_file_size, usage.min_free_space) == (1 * MiB, 1)
    for row in rows:
        row.discard()
    settled()


def test_usage_of_an_empty_store(settings):
    usage = quota.usage()
    assert (usage.used, usage.reserved, usage.pending, usage.quota) == (0, 0, 0, None)
    assert usage.percent is None
    assert usage.oldest_pending is None


def test_reconcile_brings_the_counter_back_to_the_rows(client, settings, settled):
    settings.TEMPSTORE_QUOTA = 10 * MiB
    pk = client.post("/keep/", {"file": upload(size=100 * KiB)}).json()["id"]
    reserved = TempUpload.objects.get(pk=pk).reserved
    # A row deleted behind the app's back (a bulk delete, a restored backup).
    other = client.post("/keep/", {"file": upload(size=50 * KiB)}).json()["id"]
    TempUpload.objects.get(pk=other).path.unlink()
    TempUpload.objects.filter(pk=other).delete()
    assert quota.usage().drift > 0

    drift = quota.reconcile()

    assert drift > 0
    assert quota.counter_value() == reserved
    assert quota.reconcile() == 0
    TempUpload.objects.get(pk=pk).discard()
    settled()


def test_reconcile_creates_the_counter(settings):
    assert quota.reconcile() == 0
    assert QuotaCounter.objects.get(scope=quota.SCOPE).used == 0


# Cost per request in database round trips


def count_round_trips(client, **settings_values):
    """(queries, commits) for one upload of one small file to a view that ignores it."""
    connection = connections["default"]
    with (
        mock.patch.object(connection, "commit", wraps=connection.commit) as commits,
        CaptureQueriesContext(connection) as queries,
    ):
        response = client.post("/accept/", {"file": upload(size=100 * KiB)})
    assert response.status_code == 200
    statements = [q["sql"] for q in queries.captured_queries]
    return [
        s for s in statements if not s.startswith(("BEGIN", "COMMIT", "SAVEPOINT", "RELEASE"))
    ], (commits.call_count)


@pytest.mark.django_db(transaction=True)  # counts real commits
def test_round_trips_per_upload(client, settings, settled):
    settings.TEMPSTORE_QUOTA = None
    without, commits_without = count_round_trips(client)
    settings.TEMPSTORE_QUOTA = 10 * MiB
    count_round_trips(client)  # The first upload creates the counter row.
    with_quota, commits_with = count_round_trips(client)

    print(f"\nround trips: no quota {len(without)} + {commits_without} commits; "
          f"quota {len(with_quota)} + {commits_with} commits")  # fmt: skip
    # INSERT the row, UPDATE to complete, UPDATE to discarded.
    assert len(without) == 3
    assert commits_without == 0
    # Plus: SELECT the counter (Content-Length check); reserve = UPDATE counter +
    # UPDATE row in one transaction; close = UPDATE counter + UPDATE row in one.
    assert len(with_quota) == 7
    assert commits_with == 2
    settled()
