"""The antivirus hook against a real clamd loaded with a one-hash signature database."""

from __future__ import annotations

import io
import os
import stat

import pytest

from django_tempstore import quota, signals
from django_tempstore.models import State, TempUpload
from django_tempstore.scanners import (
    Antivirus,
    ClamAVScanner,
    ScannerError,
    ScanResult,
    scan,
)
from django_tempstore.tus import claim
from tests import tus_utils as tus
from tests.clamd_utils import EICAR_LIKE, SIGNATURE, clamd_daemon
from tests.utils import starts, upload

pytestmark = pytest.mark.django_db(transaction=True)

CLEAN = os.urandom(3 * 1024 * 1024 + 17)  # Several INSTREAM chunks.
FOUND = SIGNATURE + ".UNOFFICIAL"


@pytest.fixture(scope="module")
@starts("clamd")
def clamd(tmp_path_factory):
    yield from clamd_daemon(tmp_path_factory)


@pytest.fixture
def quarantines(signal_spy):
    return signal_spy(signals.upload_quarantined, "reason", "signature")


def kept(client, content: bytes) -> TempUpload:
    response = client.post("/keep/", {"file": upload("f.bin", content)})
    return TempUpload.objects.get(pk=response.json()["id"])


def test_clean_file_over_the_unix_socket(clamd):
    assert ClamAVScanner(str(clamd.socket)).scan(io.BytesIO(CLEAN)) == ScanResult(clean=True)


def test_infected_file_over_tcp_names_the_signature(clamd):
    result = ClamAVScanner(clamd.tcp_address).scan(io.BytesIO(EICAR_LIKE))

    assert result == ScanResult(clean=False, signature=FOUND)


def test_one_byte_more_is_clean(clamd):
    # The signature is a hash of the whole file: the scanner really looked.
    result = ClamAVScanner(str(clamd.socket)).scan(io.BytesIO(EICAR_LIKE + b"x"))

    assert result.clean


def test_unreachable_clamd_raises_scanner_error(tmp_path):
    with pytest.raises(ScannerError, match="unreachable"):
        ClamAVScanner(str(tmp_path / "nothing.sock")).scan(io.BytesIO(b"x"))


def test_scan_quarantines_an_infected_kept_upload(
    client, clamd, settings, assert_clean, quarantines
):
    settings.TEMPSTORE_SCANNER = {
        "BACKEND": "django_tempstore.scanners.ClamAVScanner",
        "OPTIONS": {"address": str(clamd.socket)},
    }
    row = kept(client, EICAR_LIKE)

    assert scan(row) == ScanResult(clean=False, signature=FOUND)
    row.refresh_from_db()
    assert row.state == State.QUARANTINED
    assert row.reason == f"infected: {FOUND}"
    assert quarantines == [(row.pk, row.reason, FOUND)]
    assert_clean()


def test_scan_leaves_a_clean_upload_pending(client, clamd, settings):
    settings.TEMPSTORE_SCANNER = ClamAVScanner(str(clamd.socket))
    row = kept(client, CLEAN)

    assert scan(row).clean
    row.refresh_from_db()
    assert row.state == State.KEPT
    assert row.path.read_bytes() == CLEAN
    row.discard()


def test_quarantine_dir_keeps_the_evidence(client, clamd, settings, tmp_path, assert_clean):
    settings.TEMPSTORE_QUARANTINE_DIR = tmp_path / "quarantine"
    row = kept(client, EICAR_LIKE)

    scan(row, ClamAVScanner(str(clamd.socket)))

    kept_aside = tmp_path / "quarantine" / row.name
    assert kept_aside.read_bytes() == EICAR_LIKE
    assert stat.S_IMODE(kept_aside.stat().st_mode) == 0o600
    assert_clean()


def test_antivirus_validator_refuses_an_infected_upload(
    client, clamd, settings, assert_clean, quarantines
):
    settings.TEMPSTORE_VALIDATORS = [Antivirus(ClamAVScanner(str(clamd.socket)))]
    response = client.post("/accept/", {"file": upload("f.bin", EICAR_LIKE)})

    assert response.status_code == 422
    assert "infected" in response.content.decode()
    row = TempUpload.objects.get()
    assert row.state == State.QUARANTINED
    assert quarantines == [(row.pk, f"infected: {FOUND}", FOUND)]
    assert_clean()


def test_antivirus_validator_lets_a_clean_upload_through(client, clamd, settings, assert_clean):
    settings.TEMPSTORE_SCANNER = ClamAVScanner(str(clamd.socket))
    settings.TEMPSTORE_VALIDATORS = ["django_tempstore.scanners.Antivirus"]
    response = client.post("/accept/", {"file": upload("f.bin", CLEAN)})

    assert response.status_code == 200
    assert TempUpload.objects.get().state == State.DISCARDED
    assert_clean()


def test_antivirus_validator_answers_503_when_clamd_is_down(
    client, settings, tmp_path, assert_clean
):
    settings.TEMPSTORE_VALIDATORS = [Antivirus(ClamAVScanner(str(tmp_path / "no.sock")))]
    response = client.post("/accept/", {"file": upload("f.bin", b"x")})

    assert response.status_code == 503
    assert "Try again later" in response.content.decode()
    assert TempUpload.objects.get().state == State.FAILED
    assert_clean()


def tus_upload(client, content: bytes, *, parts: int = 2):
    """Send ``content`` through the tus endpoint in ``parts`` PATCHes; the last answer."""
    path = tus.upload_path(tus.create(client, len(content)))
    step = -(-len(content) // parts)
    for offset in range(0, len(content), step):
        response = tus.patch(client, path, content[offset : offset + step], offset)
    return path, response


def test_tus_completion_quarantines_an_infected_upload(
    client, clamd, settings, assert_clean, quarantines, signal_spy
):
    settings.TEMPSTORE_QUOTA = 1_000_000
    settings.TEMPSTORE_VALIDATORS = [Antivirus(ClamAVScanner(str(clamd.socket)))]
    received = signal_spy(signals.upload_received)
    path, response = tus_upload(client, EICAR_LIKE)

    assert response.status_code == 422
    assert response.content.decode() == "The file was refused because it looks infected.\n"
    row = TempUpload.objects.get()
    assert row.state == State.QUARANTINED
    assert row.reason == f"infected: {FOUND}"
    assert quarantines == [(row.pk, row.reason, FOUND)]
    assert received == []
    assert quota.counter_value() == 0
    assert tus.head(client, path).status_code == 410
    assert_clean()


def test_tus_completion_lets_a_clean_upload_through(
    client, clamd, settings, assert_clean, signal_spy
):
    received = signal_spy(signals.upload_received)
    settings.TEMPSTORE_QUOTA = 10_000_000
    settings.TEMPSTORE_SCANNER = ClamAVScanner(str(clamd.socket))
    settings.TEMPSTORE_VALIDATORS = ["django_tempstore.scanners.Antivirus"]
    # One byte more than the signature's file: only a scan of the whole file can tell.
    path, response = tus_upload(client, EICAR_LIKE + b"x")

    assert response.status_code == 204
    row = TempUpload.objects.get()
    assert row.state == State.COMPLETE
    assert received == [row.pk]
    assert row.path.read_bytes() == EICAR_LIKE + b"x"
    assert quota.counter_value() == len(EICAR_LIKE) + 1
    claim(None, row.pk).discard()
    assert quota.counter_value() == 0
    assert_clean()


def test_tus_completion_answers_503_when_clamd_is_down(client, settings, tmp_path, assert_clean):
    settings.TEMPSTORE_VALIDATORS = [Antivirus(ClamAVScanner(str(tmp_path / "no.sock")))]
    _path, response = tus_upload(client, b"x" * 100)

    assert response.status_code == 503
    assert "Try again later" in response.content.decode()
    assert TempUpload.objects.get().state == State.FAILED
    assert_clean()
