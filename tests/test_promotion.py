"""promote_upload on a real Celery worker and Redis: persisted, refused, quarantined, retried."""

from __future__ import annotations

import os

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from django_tempstore.models import State, TempUpload
from tests.celery_utils import celery_env
from tests.clamd_utils import EICAR_LIKE, SIGNATURE, clamd_daemon, run_clamd
from tests.servers import wait_until
from tests.tus_utils import create, upload_path
from tests.utils import starts

pytestmark = [pytest.mark.celery, pytest.mark.django_db(transaction=True)]

PAYLOAD = os.urandom(200_000)


@pytest.fixture
@starts("celery")
def celery(tmp_path):
    """A worker env whose queue also receives the tasks this test process sends."""
    with celery_env(tmp_path) as env, env.sending():
        yield env


@pytest.fixture(scope="module")
@starts("clamd")
def clamd(tmp_path_factory):
    yield from clamd_daemon(tmp_path_factory)


def scanner_at(address: str) -> dict[str, object]:
    return {
        "BACKEND": "django_tempstore.scanners.ClamAVScanner",
        "OPTIONS": {"address": address, "timeout": 5},
    }


def promote(client, name: str, content: bytes) -> str:
    response = client.post("/promote/", {"file": SimpleUploadedFile(name, content)})
    assert response.status_code == 200, response.content
    return response.json()["id"]


def closed(upload_id: str) -> TempUpload:
    assert wait_until(lambda: not TempUpload.objects.get(pk=upload_id).is_pending, 60)
    return TempUpload.objects.get(pk=upload_id)


def test_clean_upload_is_scanned_and_persisted(client, clamd, settings, celery, assert_clean):
    with celery.worker(settings={"TEMPSTORE_SCANNER": scanner_at(str(clamd.socket))}):
        row = closed(promote(client, "report.bin", PAYLOAD))

    assert row.state == State.PERSISTED, row.reason
    assert row.persisted_name == "promoted/report.bin"
    assert (settings.MEDIA_ROOT / row.persisted_name).read_bytes() == PAYLOAD
    assert_clean()


def test_infected_upload_is_quarantined_and_not_stored(
    client, clamd, settings, celery, assert_clean
):
    with celery.worker(settings={"TEMPSTORE_SCANNER": scanner_at(clamd.tcp_address)}):
        row = closed(promote(client, "bad.bin", EICAR_LIKE))

    assert row.state == State.QUARANTINED
    assert row.reason == f"infected: {SIGNATURE}.UNOFFICIAL"
    assert not (settings.MEDIA_ROOT / "promoted").exists()
    assert_clean()


def test_upload_refused_by_the_workers_validators_is_discarded(
    client, settings, celery, assert_clean
):
    validators = [
        {"NAME": "django_tempstore.validators.AllowedContentTypes",
         "OPTIONS": {"types": ["image/png"]}},
    ]  # fmt: skip
    with celery.worker(settings={"TEMPSTORE_VALIDATORS": validators}):
        row = closed(promote(client, "a.png", b"GIF89a" + PAYLOAD))

    assert row.state == State.DISCARDED
    assert row.reason.startswith("rejected: The file's content is image/gif")
    assert not (settings.MEDIA_ROOT / "promoted").exists()
    assert_clean()


@pytest.mark.clamd
def test_scanner_down_is_retried_until_it_answers(client, settings, celery, tmp_path, assert_clean):
    directory = tmp_path / "late-clamd"
    worker_settings = {
        "TEMPSTORE_SCANNER": scanner_at(str(directory / "clamd.sock")),
        "TEMPSTORE_PROMOTE_RETRY_DELAY": 0.2,
        "TEMPSTORE_PROMOTE_RETRIES": 8,
    }
    with celery.worker(settings=worker_settings) as worker:
        upload_id = promote(client, "late.bin", PAYLOAD)
        assert wait_until(lambda: "Retry in" in worker.output(), 60), worker.output()
        assert TempUpload.objects.get(pk=upload_id).state == State.KEPT
        with run_clamd(directory):
            row = closed(upload_id)

    assert row.state == State.PERSISTED, row.reason
    assert (settings.MEDIA_ROOT / row.persisted_name).read_bytes() == PAYLOAD
    assert_clean()


def test_final_failure_discards_after_the_last_retry(
    client, settings, celery, tmp_path, assert_clean
):
    worker_settings = {
        "TEMPSTORE_SCANNER": scanner_at(str(tmp_path / "never.sock")),
        "TEMPSTORE_PROMOTE_RETRY_DELAY": 0.05,
        "TEMPSTORE_PROMOTE_RETRIES": 2,
    }
    with celery.worker(settings=worker_settings) as worker:
        row = closed(promote(client, "lost.bin", PAYLOAD))
        output = worker.output()

    assert row.state == State.DISCARDED
    assert row.reason.startswith("promotion failed: clamd at ")
    assert output.count("Retry in") == 2
    assert not (settings.MEDIA_ROOT / "promoted").exists()
    assert_clean()


def test_claimed_tus_upload_is_kept_then_promoted_by_the_worker(
    client, settings, celery, assert_clean
):
    upload_id = upload_path(create(client, len(PAYLOAD), data=PAYLOAD)).rpartition("/")[2]
    with celery.worker():
        response = client.post(f"/claim/{upload_id}/?action=promote")
        assert response.status_code == 200, response.content
        assert response.json()["id"] == upload_id
        row = closed(upload_id)

    assert row.state == State.PERSISTED, row.reason
    assert row.persisted_name == "tus/a.bin"
    assert (settings.MEDIA_ROOT / row.persisted_name).read_bytes() == PAYLOAD
    assert_clean()
