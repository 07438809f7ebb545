"""The Prometheus exposition, scraped over HTTP from a running gunicorn."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from prometheus_client.parser import text_string_to_metric_families

from django_tempstore import sweep
from django_tempstore.models import State, TempUpload
from tests.servers import run_server

pytestmark = [pytest.mark.server, pytest.mark.django_db(transaction=True)]


def scrape(server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(server.url("/metrics/"), timeout=30) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=")
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_a_scrape_reports_bytes_states_refusals_and_the_last_sweep(client, settings, tmp_path):
    settings.TEMPSTORE_QUOTA = 10 * 1024 * 1024
    kept = client.post("/keep/?ttl=3600", {"file": SimpleUploadedFile("k.bin", b"k" * 5000)})
    assert kept.status_code == 200
    sweep.sweep(trigger="test")
    upload = TempUpload.objects.get()

    limit = json.dumps({"TEMPSTORE_MAX_FILE_SIZE": 1024 * 1024})
    with run_server("gunicorn", tmp_path, TEMPSTORE_TEST_SETTINGS=limit) as server:
        big = b"x" * (2 * 1024 * 1024)
        boundary = "b0undary"
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
                f'filename="big.bin"\r\n\r\n'
            ).encode()
            + big
            + f"\r\n--{boundary}--\r\n".encode()
        )
        refused = urllib.request.Request(
            server.url("/accept/"),
            data=body,
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(refused, timeout=30)
        assert error.value.code == 413
        error.value.close()
        samples = scrape(server)

    assert samples[("tempstore_uploads", (("state", "kept"),))] == 1
    assert samples[("tempstore_uploads", (("state", "failed"),))] == 1
    assert samples[("tempstore_on_disk_bytes", (("host", upload.host),))] == 5000
    assert sum(v for (name, _), v in samples.items() if name == "tempstore_reserved_bytes") >= 5000
    assert (
        samples[("tempstore_refusals_total", (("code", "file_too_large"), ("status", "413")))] == 1
    )
    assert samples[("tempstore_tus_uploads_in_progress", ())] == 0
    assert samples[("tempstore_last_sweep_failed", ())] == 0
    assert samples[("tempstore_last_sweep_duration_seconds", ())] >= 0
    assert ("tempstore_last_sweep_files", ()) in samples
    assert TempUpload.objects.filter(state=State.KEPT).count() == 1
