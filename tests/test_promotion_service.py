"""promote() called in-process (the service behind the Celery task): no worker needed."""

from __future__ import annotations

import base64
import hashlib
import os

import pytest
from django.core.files.storage import FileSystemStorage
from django.core.files.uploadedfile import SimpleUploadedFile

from django_tempstore.models import State, TempUpload
from django_tempstore.promotion import TransientError, promote
from django_tempstore.validators import ExpectedDigest

pytestmark = pytest.mark.django_db(transaction=True)

PAYLOAD = os.urandom(50_000)


class StorageServiceError(Exception):
    """Like botocore's ClientError: a storage failure that is not an OSError."""


class UnreachableStorage(FileSystemStorage):
    def _save(self, name, content):
        raise StorageServiceError("503 Slow Down")


def kept(client, **headers: str) -> str:
    response = client.post(
        "/keep/", {"file": SimpleUploadedFile("a.bin", PAYLOAD)}, headers=headers
    )
    assert response.status_code == 200, response.content
    return response.json()["id"]


def test_promote_persists_an_upload_validated_with_a_required_digest(
    client, settings, assert_clean
):
    # The digest was checked while streaming; promotion has no request to read it from.
    settings.TEMPSTORE_VALIDATORS = [ExpectedDigest(required=True)]
    digest = base64.b64encode(hashlib.sha256(PAYLOAD).digest()).decode()
    upload_id = kept(client, content_digest=f"sha-256=:{digest}:")
    result = promote(upload_id, "promoted/a.bin")

    assert result.state == State.PERSISTED, result
    assert (settings.MEDIA_ROOT / result.name).read_bytes() == PAYLOAD
    assert_clean()


def test_a_storage_error_that_is_not_an_oserror_is_retried(client, settings):
    settings.STORAGES = {
        **settings.STORAGES,
        "unreachable": {"BACKEND": f"{__name__}.UnreachableStorage"},
    }
    upload_id = kept(client)
    with pytest.raises(TransientError, match="503 Slow Down"):
        promote(upload_id, "promoted/a.bin", storage="unreachable")

    row = TempUpload.objects.get(pk=upload_id)
    assert row.state == State.KEPT  # Left for the task's next retry.
    assert row.path.exists()
