"""Per-key quota scopes (TEMPSTORE_QUOTA_PER_KEY) beside the global quota."""

from __future__ import annotations

import os
import threading

import pytest
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection, connections
from django.test import Client

from django_tempstore import lifecycle, quota
from django_tempstore.exceptions import InsufficientStorage
from django_tempstore.models import QuotaCounter, State, TempUpload, Transitions

pytestmark = pytest.mark.django_db(transaction=True)

KiB = 1024


def upload(size: int) -> SimpleUploadedFile:
    return SimpleUploadedFile("d.bin", os.urandom(size), content_type="application/octet-stream")


def logged_in(name: str) -> tuple[Client, str]:
    user = get_user_model().objects.create_user(name, password="x")
    client = Client()
    client.force_login(user)
    return client, "user:" + str(user.pk)


def reservations() -> dict[str, int]:
    result: dict[str, int] = {}
    for row in TempUpload.objects.pending():
        result[row.quota_key] = result.get(row.quota_key, 0) + row.reserved
    return result


def test_one_user_filling_their_scope_gets_507_naming_it_the_other_still_uploads(settings):
    settings.TEMPSTORE_QUOTA = 2000 * KiB
    settings.TEMPSTORE_QUOTA_PER_KEY = 500 * KiB
    alice, alice_key = logged_in("alice")
    bob, bob_key = logged_in("bob")

    kept = alice.post("/keep/", {"file": upload(300 * KiB)}).json()["id"]
    refused = alice.post("/accept/", {"file": upload(300 * KiB)}, HTTP_ACCEPT="application/json")
    accepted = bob.post("/keep/", {"file": upload(300 * KiB)})

    assert refused.status_code == 507
    assert "Your upload quota" in refused.json()["error"]
    assert accepted.status_code == 200
    assert TempUpload.objects.get(pk=kept).quota_key == alice_key
    held = reservations()
    assert set(held) == {alice_key, bob_key}
    assert quota.counter_value() == sum(held.values())
    assert quota.counter_value(quota.key_scope(alice_key)) == held[alice_key]
    assert quota.counter_value(quota.key_scope(bob_key)) == held[bob_key]
    for row in TempUpload.objects.pending():
        row.discard()
    assert quota.counter_value() == 0
    assert quota.counter_value(quota.key_scope(alice_key)) == 0
    assert quota.counter_value(quota.key_scope(bob_key)) == 0


def test_the_global_quota_507_says_it_is_the_servers(settings):
    settings.TEMPSTORE_QUOTA = 500 * KiB
    settings.TEMPSTORE_QUOTA_PER_KEY = 2000 * KiB
    alice, _ = logged_in("alice")
    bob, _ = logged_in("bob")
    kept = alice.post("/keep/", {"file": upload(300 * KiB)}).json()["id"]

    refused = bob.post("/accept/", {"file": upload(300 * KiB)}, HTTP_ACCEPT="application/json")

    assert refused.status_code == 507
    assert "server's upload quota" in refused.json()["error"]
    TempUpload.objects.get(pk=kept).discard()
    assert quota.counter_value() == 0


def test_anonymous_clients_have_no_per_key_limit(settings):
    settings.TEMPSTORE_QUOTA_PER_KEY = 100 * KiB
    response = Client().post("/keep/", {"file": upload(300 * KiB)})
    assert response.status_code == 200
    row = TempUpload.objects.get(pk=response.json()["id"])
    assert row.quota_key == ""
    assert quota.counter_value() == row.reserved  # The global counter still counts it.
    row.discard()
    assert quota.counter_value() == 0


def test_reserve_and_unreserve_for_an_existing_row_move_both_scopes(settings):
    settings.TEMPSTORE_QUOTA_PER_KEY = 1000 * KiB
    row = lifecycle.start(original_name="r.bin")
    TempUpload.objects.filter(pk=row.pk).update(quota_key="tus:1")
    row.quota_key = "tus:1"

    quota.reserve(row, 600 * KiB)
    with pytest.raises(InsufficientStorage) as refusal:
        quota.reserve(row, 600 * KiB)
    assert "TEMPSTORE_QUOTA_PER_KEY" in refusal.value.reason
    assert quota.unreserve(row, 100 * KiB) == 100 * KiB

    assert TempUpload.objects.get(pk=row.pk).reserved == 500 * KiB
    assert quota.counter_value() == quota.counter_value("key:tus:1") == 500 * KiB
    assert lifecycle.close(row, Transitions.DISCARD)
    assert quota.counter_value() == quota.counter_value("key:tus:1") == 0


def test_close_many_releases_every_scope_once(settings):
    settings.TEMPSTORE_QUOTA = 10_000 * KiB
    settings.TEMPSTORE_QUOTA_PER_KEY = 1000 * KiB
    rows = []
    for key in ("a", "a", "b"):
        row = lifecycle.start(original_name="r.bin")
        TempUpload.objects.filter(pk=row.pk).update(quota_key=key)
        row.quota_key = key
        quota.reserve(row, 100 * KiB)
        rows.append(row)

    assert len(lifecycle.close_many(rows, State.DISCARDED, "test")) == 3
    assert lifecycle.close_many(rows, State.DISCARDED, "test") == []

    assert quota.counter_value() == 0
    assert quota.counter_value("key:a") == quota.counter_value("key:b") == 0


def test_reconcile_fixes_the_key_counters(settings):
    settings.TEMPSTORE_QUOTA_PER_KEY = 1000 * KiB
    row = lifecycle.start(original_name="r.bin")
    TempUpload.objects.filter(pk=row.pk).update(quota_key="k")
    row.quota_key = "k"
    quota.reserve(row, 100 * KiB)
    QuotaCounter.objects.filter(scope="key:k").update(used=999)
    QuotaCounter.objects.create(scope="key:gone", used=5)

    quota.reconcile()

    assert quota.counter_value("key:k") == 100 * KiB
    assert quota.counter_value("key:gone") == 0
    lifecycle.close(row, Transitions.DISCARD)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="needs concurrent writers")
def test_concurrent_reservations_never_pass_the_key_limit(settings):
    settings.TEMPSTORE_QUOTA = 100_000 * KiB
    settings.TEMPSTORE_QUOTA_PER_KEY = 1000 * KiB
    rows = []
    for _ in range(16):
        row = lifecycle.start(original_name="r.bin")
        TempUpload.objects.filter(pk=row.pk).update(quota_key="k")
        row.quota_key = "k"
        rows.append(row)
    quota.reserve(rows[0], 1)  # Creates the counters.
    granted = []
    barrier = threading.Barrier(len(rows))

    def take(row: TempUpload) -> None:
        try:
            barrier.wait()
            quota.reserve(row, 100 * KiB)
            granted.append(row)
        except InsufficientStorage:
            pass
        finally:
            connections.close_all()

    threads = [threading.Thread(target=take, args=(row,)) for row in rows]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(granted) == 9  # 1 byte + 9 x 100 KiB fit in 1000 KiB, a tenth does not.
    assert quota.counter_value("key:k") == sum(reservations().values())
    assert quota.counter_value() == sum(reservations().values())
    assert len(lifecycle.close_many(rows, State.DISCARDED, "test")) == 16
    assert quota.counter_value() == quota.counter_value("key:k") == 0


def test_the_ledger_is_chosen_by_the_settings(settings):
    settings.TEMPSTORE_QUOTA = None
    settings.TEMPSTORE_QUOTA_PER_KEY = None
    assert isinstance(quota.ledger(), quota.NoQuotaLedger)
    settings.TEMPSTORE_QUOTA_PER_KEY = 1
    assert isinstance(quota.ledger(), quota.DatabaseLedger)


def test_a_request_larger_than_the_whole_per_key_quota_is_413_before_its_body(settings):
    settings.TEMPSTORE_QUOTA_PER_KEY = 100 * KiB
    alice, _ = logged_in("alice")
    response = alice.post("/accept/", {"file": upload(300 * KiB)}, HTTP_ACCEPT="application/json")
    assert response.status_code == 413
    assert "your upload quota" in response.json()["error"]
    assert not TempUpload.objects.exists()


def test_a_project_quota_key_callable_groups_requests(settings):
    settings.TEMPSTORE_QUOTA_PER_KEY = 500 * KiB
    settings.TEMPSTORE_QUOTA_KEY = lambda request: request.headers.get("X-Tenant")
    client = Client(headers={"X-Tenant": "acme"})
    kept = client.post("/keep/", {"file": upload(300 * KiB)}).json()["id"]
    refused = client.post("/accept/", {"file": upload(300 * KiB)})
    assert refused.status_code == 507
    assert TempUpload.objects.get(pk=kept).quota_key == "acme"
    TempUpload.objects.get(pk=kept).discard()
    assert quota.counter_value("key:acme") == 0
