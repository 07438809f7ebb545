"""The admin pages: pending uploads first, usage summary, actions that go through the lifecycle."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from django_tempstore import signals
from django_tempstore.models import QuotaCounter, State, SweepRun, TempUpload

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/django_tempstore/tempupload/"


def kept_upload(client, name: str = "kept.bin", size: int = 1000, ttl: int = 60) -> TempUpload:
    """Upload through the real handler to a view that keeps the file."""
    response = client.post(f"/keep/?ttl={ttl}", {"file": SimpleUploadedFile(name, b"k" * size)})
    assert response.status_code == 200
    return TempUpload.objects.get(pk=response.json()["id"])


def closed_upload(client, name: str = "gone.bin") -> TempUpload:
    client.post("/accept/", {"file": SimpleUploadedFile(name, b"g" * 10)})
    return TempUpload.objects.get(original_name=name)


def run_action(admin_client, action: str, *rows: TempUpload):
    return admin_client.post(
        CHANGELIST,
        {"action": action, ACTION_CHECKBOX_NAME: [str(row.pk) for row in rows]},
        follow=True,
    )


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def test_changelist_lists_pending_uploads_first(client, admin_client):
    old_closed = closed_upload(client, "closed.bin")
    kept = kept_upload(client, "kept.bin")
    new_closed = closed_upload(client, "closed-later.bin")
    TempUpload.objects.filter(pk=kept.pk).update(created_at=timezone.now() - timedelta(days=1))

    response = admin_client.get(CHANGELIST)

    assert response.status_code == 200
    assert [row.pk for row in response.context["cl"].result_list] == [
        kept.pk,
        new_closed.pk,
        old_closed.pk,
    ]
    assert b"kept.bin" in response.content
    assert b"1000\xc2\xa0bytes" in response.content  # the human size


def test_changelist_shows_usage_bar_counts_and_oldest_pending(client, admin_client, settings):
    settings.TEMPSTORE_QUOTA = 10 * 1024 * 1024
    kept = kept_upload(client, "waiting.bin", size=4000)
    closed_upload(client)

    response = admin_client.get(CHANGELIST)

    html = response.content.decode()
    assert 'role="progressbar"' in html
    reserved = QuotaCounter.objects.get().used
    assert reserved >= 4000
    percent = round(100 * reserved / settings.TEMPSTORE_QUOTA, 1)
    assert f'aria-valuenow="{percent}"' in html
    assert "Free space on the temp disk" in html
    counts = {value: n for value, _label, n in response.context["state_counts"]}
    assert counts[State.KEPT] == 1
    assert counts[State.DISCARDED] == 1
    assert response.context["oldest_pending"] == kept
    assert "waiting.bin</a>" in html


def test_changelist_without_quota_says_so(admin_client):
    html = admin_client.get(CHANGELIST).content.decode()

    assert 'role="progressbar"' not in html
    assert "No quota is set" in html
    assert "No pending upload." in html
    assert "No sweep has run yet." in html


def test_changelist_shows_the_last_real_sweep(admin_client):
    now = timezone.now()
    SweepRun.objects.create(
        started_at=now - timedelta(minutes=5),
        finished_at=now - timedelta(minutes=5),
        host="web-1",
        trigger="beat",
        report={"total_files": 3, "total_bytes": 3072},
    )
    SweepRun.objects.create(started_at=now, host="web-1", trigger="admin", dry_run=True)

    html = admin_client.get(CHANGELIST).content.decode()

    assert "beat, web-1" in html
    assert "Removed 3 files, 3\xa0KiB." in html


def test_filters_by_state_and_host_and_searches_digest(client, admin_client):
    kept = kept_upload(client, "needle.bin")
    closed_upload(client, "hay.bin")
    TempUpload.objects.filter(pk=kept.pk).update(host="other-host")

    by_state = admin_client.get(CHANGELIST, {"state__exact": "kept"}).context["cl"].result_list
    by_host = admin_client.get(CHANGELIST, {"host": "other-host"}).context["cl"].result_list
    by_digest = admin_client.get(CHANGELIST, {"q": kept.digest[:12]}).context["cl"].result_list
    by_name = admin_client.get(CHANGELIST, {"q": "needle"}).context["cl"].result_list

    assert [r.pk for r in by_state] == [kept.pk]
    assert [r.pk for r in by_host] == [kept.pk]
    assert [r.pk for r in by_digest] == [kept.pk]
    assert [r.pk for r in by_name] == [kept.pk]


def test_uploads_cannot_be_added_or_edited(client, admin_client):
    kept = kept_upload(client)
    change_url = f"{CHANGELIST}{kept.pk}/change/"

    assert admin_client.get(CHANGELIST + "add/").status_code == 403
    page = admin_client.get(change_url)
    assert page.status_code == 200
    assert b'name="original_name"' not in page.content
    assert b"kept.bin" in page.content
    assert admin_client.post(change_url, {"original_name": "x"}).status_code == 403
    assert admin_client.post(f"{CHANGELIST}{kept.pk}/delete/").status_code == 403
    kept.refresh_from_db()
    assert kept.original_name == "kept.bin"


def test_django_delete_selected_is_replaced_by_delete_now(admin_client):
    actions = admin_client.get(CHANGELIST).context["action_form"].fields["action"].choices
    names = [name for name, _label in actions]

    assert "delete_selected" not in names
    assert "delete_now" in names
    assert "extend_expiry" in names


def test_delete_now_removes_file_row_and_reservation(client, admin_client, settings, signal_spy):
    settings.TEMPSTORE_QUOTA = 10 * 1024 * 1024
    kept = kept_upload(client)
    closed = closed_upload(client)
    assert kept.path.exists()
    discarded = signal_spy(signals.upload_discarded)
    response = run_action(admin_client, "delete_now", kept, closed)

    assert messages_of(response) == ["Deleted 2 temp uploads and their files."]
    assert not kept.path.exists()
    assert not TempUpload.objects.exists()
    assert QuotaCounter.objects.get().used == 0
    assert discarded == [kept.pk]


def test_delete_now_skips_an_upload_in_flight(client, admin_client, tempstore_dirs):
    kept = kept_upload(client)
    live = kept_upload(client, "live.bin")
    TempUpload.objects.filter(pk=live.pk).update(state=State.RECEIVING, updated_at=timezone.now())

    response = run_action(admin_client, "delete_now", kept, live)

    assert messages_of(response) == [
        "Deleted 1 temp upload and its file.",
        "Skipped 1 upload that a request is still handling; try again when it is done.",
    ]
    assert list(TempUpload.objects.values_list("pk", flat=True)) == [live.pk]
    assert live.path.exists()


def test_extend_expiry_pushes_kept_uploads_by_the_keep_ttl(client, admin_client, settings):
    settings.TEMPSTORE_KEEP_TTL = 7200
    kept = kept_upload(client, ttl=60)
    closed = closed_upload(client)
    before = kept.expires_at

    response = run_action(admin_client, "extend_expiry", kept, closed)

    kept.refresh_from_db()
    assert kept.expires_at == before + timedelta(hours=2)
    assert kept.state == State.KEPT
    closed.refresh_from_db()
    assert closed.expires_at != kept.expires_at
    assert messages_of(response) == [
        "Extended the expiry of 1 upload by 2\xa0hours.",
        "1 selected upload is not complete or kept; its expiry was left alone.",
    ]


def test_extend_expiry_of_an_expired_upload_starts_from_now(client, admin_client):
    kept = kept_upload(client)
    TempUpload.objects.filter(pk=kept.pk).update(expires_at=timezone.now() - timedelta(days=1))

    run_action(admin_client, "extend_expiry", kept)

    kept.refresh_from_db()
    assert kept.expires_at > timezone.now() + timedelta(minutes=59)


def test_sweep_runs_are_read_only(admin_client):
    run = SweepRun.objects.create(
        host="web-1", trigger="command", report={"total_files": 1, "total_bytes": 5}
    )
    base = "/admin/django_tempstore/sweeprun/"

    listing = admin_client.get(base)
    detail = admin_client.get(f"{base}{run.pk}/change/")

    assert listing.status_code == 200
    assert b"1 file, 5\xc2\xa0bytes" in listing.content
    assert detail.status_code == 200
    assert b"&quot;total_files&quot;: 1" in detail.content
    assert admin_client.get(base + "add/").status_code == 403
    assert admin_client.post(f"{base}{run.pk}/change/", {"host": "x"}).status_code == 403
    assert admin_client.post(f"{base}{run.pk}/delete/", {"post": "yes"}).status_code == 403
    assert SweepRun.objects.get().host == "web-1"


SWEEP = CHANGELIST + "sweep/"


def expired_upload(client, name: str = "expired.bin") -> TempUpload:
    upload = kept_upload(client, name)
    TempUpload.objects.filter(pk=upload.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    return upload


def test_sweep_page_shows_the_dry_run_and_deletes_nothing(client, admin_client):
    expired = expired_upload(client)

    response = admin_client.get(SWEEP)

    assert response.status_code == 200
    assert "Would delete 1 temp file" in response.context["summary"]
    assert ("expired", 1, 1000) in response.context["kinds"]
    assert b'value="Yes, sweep now"' in response.content
    assert expired.path.exists()
    assert TempUpload.objects.get(pk=expired.pk).state == State.KEPT


def test_sweep_confirmation_page_records_no_sweep_run(client, admin_client):
    expired_upload(client)

    assert admin_client.get(SWEEP).status_code == 200
    assert admin_client.post(CHANGELIST + "sweep/").status_code == 200  # No post=yes: dry.

    assert not SweepRun.objects.exists()


def test_confirmed_sweep_deletes_expired_uploads_only(client, admin_client):
    expired = expired_upload(client)
    kept = kept_upload(client, "still-wanted.bin")

    response = admin_client.post(SWEEP, {"post": "yes"}, follow=True)

    assert messages_of(response) == ["Swept the temp store: deleted 1 temp file, 1000\xa0bytes."]
    assert not expired.path.exists()
    assert not TempUpload.objects.get(pk=expired.pk).is_pending
    assert kept.path.exists()
    assert TempUpload.objects.get(pk=kept.pk).state == State.KEPT
    run = response.context["last_sweep"]
    assert (run.trigger, run.dry_run) == ("admin", False)
    assert "Removed 1 file, 1000\xa0bytes." in response.content.decode()


def test_sweep_action_asks_for_confirmation_first(client, admin_client):
    expired = expired_upload(client)

    response = admin_client.post(
        CHANGELIST, {"action": "sweep_now", ACTION_CHECKBOX_NAME: [str(expired.pk)]}
    )

    assert response.status_code == 200
    assert response.templates[0].name == "admin/django_tempstore/sweep_confirmation.html"
    assert f'action="{SWEEP}"' in response.content.decode()
    assert expired.path.exists()


def test_sweep_needs_the_delete_permission(client, django_user_model):
    from django.contrib.auth.models import Permission

    viewer = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_tempupload"))
    client.force_login(viewer)

    assert client.get(SWEEP).status_code == 403
    assert client.post(SWEEP, {"post": "yes"}).status_code == 403
    assert b"Sweep now" not in client.get(CHANGELIST).content
    assert not SweepRun.objects.exists()


def test_a_failing_sweep_is_reported_not_a_500(admin_client, settings, tmp_path):
    settings.TEMPSTORE_DIR = tmp_path / "not-a-dir"
    settings.TEMPSTORE_DIR.write_text("a file where the temp dir should be")

    dry = admin_client.get(SWEEP, follow=True)
    real = admin_client.post(SWEEP, {"post": "yes"}, follow=True)

    for response in (dry, real):
        assert response.status_code == 200
        [message] = messages_of(response)
        assert message.startswith("The sweep failed: ")
    assert SweepRun.objects.exclude(error="").count() == 2


def test_changelist_title_does_not_offer_to_change_rows(admin_client):
    response = admin_client.get(CHANGELIST)

    assert b"Select temp upload to change" not in response.content
    assert b"<h1>Temp uploads</h1>" in response.content


def test_detail_page_shows_sizes_in_binary_units(client, admin_client):
    kept = kept_upload(client, "six.bin", size=6291634)

    response = admin_client.get(f"{CHANGELIST}{kept.pk}/change/")

    html = response.content.decode()
    assert "6.0\xa0MiB" in html
    assert "6291634" not in html


def test_terminal_rows_show_no_expiry(client, admin_client):
    closed = closed_upload(client, "closed.bin")
    assert closed.expires_at is not None

    detail = admin_client.get(f"{CHANGELIST}{closed.pk}/change/").content.decode()
    listing = admin_client.get(CHANGELIST)

    assert 'class="field-expiry">—<' in listing.content.decode()
    shown = re.search(r'field-expiry.*?class="readonly">(.*?)</div>', detail, re.DOTALL)
    assert shown is not None
    assert shown.group(1).strip() == "—"


def test_detail_page_formats_the_expiry_as_the_list_does(client, admin_client):
    kept = kept_upload(client, "later.bin")

    detail = admin_client.get(f"{CHANGELIST}{kept.pk}/change/").content.decode()
    listing = admin_client.get(CHANGELIST).content.decode()

    shown = re.search(r'field-expiry.*?class="readonly">(.*?)</div>', detail, re.DOTALL)
    assert shown is not None
    assert str(kept.expires_at.year) in shown.group(1)
    assert str(kept.expires_at) not in detail  # not "2026-12-03 03:25:27.766785+00:00"
    assert f'class="field-expiry">{shown.group(1).strip()}<' in listing
