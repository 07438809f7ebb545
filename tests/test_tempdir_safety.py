"""A TEMPSTORE_DIR someone else could write to is refused, by the handler and the checks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.core.files.storage import InMemoryStorage
from django.core.files.uploadedfile import SimpleUploadedFile

from django_tempstore import checks
from django_tempstore.models import State, TempUpload
from django_tempstore.storage import UnsafeTempDir, ensure_dir

pytestmark = pytest.mark.django_db


def make_world_writable(path: Path) -> None:
    path.mkdir()
    path.chmod(0o777)


def make_group_writable(path: Path) -> None:
    path.mkdir()
    path.chmod(0o770)


def make_symlink(path: Path) -> None:
    real = path.parent / "real"
    real.mkdir(mode=0o700)
    path.symlink_to(real)


def make_foreign(path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root can give a directory to another user")
    path.mkdir(mode=0o700)
    os.chown(path, 54321, -1)


PLANTED = [make_world_writable, make_group_writable, make_symlink, make_foreign]


@pytest.mark.parametrize("plant", PLANTED)
def test_a_planted_dir_is_refused_and_the_upload_fails_cleanly(client, tempstore_dirs, plant):
    plant(tempstore_dirs)

    with pytest.raises(UnsafeTempDir, match="TEMPSTORE_DIR"):
        ensure_dir()
    response = client.post("/accept/", {"file": SimpleUploadedFile("a.bin", b"data")})

    assert response.status_code == 503
    assert b"Try again later" in response.content
    assert TempUpload.objects.get().state == State.FAILED
    assert list(Path(os.path.realpath(tempstore_dirs)).iterdir()) == []


@pytest.mark.parametrize("plant", PLANTED)
def test_e002_or_e009_planted_dir(tempstore_dirs, plant):
    plant(tempstore_dirs)

    # E002 is the symlink, E009 an unsafe owner or mode.
    expected = "django_tempstore.E002" if plant is make_symlink else "django_tempstore.E009"
    assert [m.id for m in checks.check_dir()] == [expected]


def test_a_private_dir_passes(tempstore_dirs):
    tempstore_dirs.mkdir(mode=0o700)
    assert ensure_dir() == tempstore_dirs
    assert checks.check_dir() == []


def test_persist_to_another_storage_never_follows_a_symlink(client, tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(b"not yours")
    row = TempUpload.objects.get(
        pk=client.post("/keep/", {"file": SimpleUploadedFile("a", b"x")}).json()["id"]
    )
    row.path.unlink()
    row.path.symlink_to(secret)
    storage = InMemoryStorage()

    with pytest.raises(OSError):
        row.persist("a.bin", storage)

    assert storage.listdir("")[1] == []
    assert TempUpload.objects.get(pk=row.pk).state == State.KEPT
    row.discard()
