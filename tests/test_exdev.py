"""Persisting across filesystems: TEMPSTORE_DIR on a tmpfs, MEDIA_ROOT on the real disk."""

from __future__ import annotations

import os
import stat
import subprocess
from functools import partial
from pathlib import Path

import pytest

from django_tempstore import storage
from django_tempstore.models import State, TempUpload
from tests import utils
from tests.utils import require_marker, starts

pytestmark = [pytest.mark.root, pytest.mark.django_db(transaction=True)]

PAYLOAD = os.urandom(300_000)


@pytest.fixture
@starts("root")
def tmpfs_tempstore(settings, tmp_path: Path):
    """Mount a 64 MiB tmpfs as TEMPSTORE_DIR's parent; unmount afterwards."""
    require_marker("root", "a tmpfs mount")
    mountpoint = tmp_path / "tmpfs"
    mountpoint.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m,mode=0700", "tmpfs", str(mountpoint)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {result.stderr.strip()}")
    try:
        settings.TEMPSTORE_DIR = mountpoint / "tempstore"
        settings.MEDIA_ROOT.mkdir(parents=True, exist_ok=True)
        if os.stat(mountpoint).st_dev == os.stat(settings.MEDIA_ROOT).st_dev:
            pytest.skip("MEDIA_ROOT is on the same filesystem as the tmpfs")
        yield settings.TEMPSTORE_DIR
    finally:
        subprocess.run(["umount", str(mountpoint)], check=False)
        if os.path.ismount(mountpoint):
            subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def part_files(root: Path) -> list[Path]:
    return sorted(root.rglob(f"{storage.PART_PREFIX}*"))


upload = partial(utils.upload, "report.bin", PAYLOAD)


def test_persist_across_filesystems_copies_with_the_storage_mode(
    client, settings, tmpfs_tempstore, assert_clean
):
    settings.FILE_UPLOAD_PERMISSIONS = 0o640

    response = client.post("/persist/", {"file": upload()})

    final = settings.MEDIA_ROOT / response.json()["name"]
    assert final.read_bytes() == PAYLOAD
    st = final.stat()
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert st.st_dev != os.stat(tmpfs_tempstore).st_dev  # A copy, not a link.
    assert st.st_nlink == 1
    assert part_files(settings.MEDIA_ROOT) == []
    row = TempUpload.objects.get()
    assert row.state == State.PERSISTED
    assert row.persisted_name == response.json()["name"]
    assert_clean()


def test_crash_between_copy_and_link_leaves_nothing_and_keeps_the_upload(
    client, settings, tmpfs_tempstore, monkeypatch
):
    pk = client.post("/keep/", {"file": upload()}).json()["id"]
    row = TempUpload.objects.get(pk=pk)
    target = settings.MEDIA_ROOT / "final" / "report.bin"
    seen = {}

    def crash(part: Path, final: Path) -> None:
        seen["part"] = part.read_bytes() == PAYLOAD
        seen["final_exists"] = final.exists()
        raise OSError("simulated crash between copy and link")

    monkeypatch.setattr(storage, "_place", crash)
    with pytest.raises(OSError, match="simulated crash"):
        row.persist("final/report.bin")

    # The part file was complete and the final name empty when it "crashed".
    assert seen == {"part": True, "final_exists": False}
    assert not target.exists()
    assert part_files(settings.MEDIA_ROOT) == []
    row.refresh_from_db()
    assert row.state == State.KEPT
    assert row.path.read_bytes() == PAYLOAD
    assert row.size == len(PAYLOAD)

    monkeypatch.undo()
    name = row.persist("final/report.bin")
    assert (settings.MEDIA_ROOT / name).read_bytes() == PAYLOAD
    assert TempUpload.objects.get(pk=pk).state == State.PERSISTED
    assert not row.path.exists()
    assert part_files(settings.MEDIA_ROOT) == []


def test_persist_never_overwrites_across_filesystems(
    client, settings, tmpfs_tempstore, assert_clean
):
    existing = settings.MEDIA_ROOT / "persisted" / "report.bin"
    existing.parent.mkdir(parents=True)
    existing.write_bytes(b"already here")

    name = client.post("/persist/", {"file": upload()}).json()["name"]

    assert name != "persisted/report.bin"
    assert existing.read_bytes() == b"already here"
    assert (settings.MEDIA_ROOT / name).read_bytes() == PAYLOAD
    assert part_files(settings.MEDIA_ROOT) == []
    assert_clean()


def test_link_race_on_the_final_name_picks_another_name(client, settings, tmpfs_tempstore):
    pk = client.post("/keep/", {"file": upload()}).json()["id"]
    row = TempUpload.objects.get(pk=pk)
    real_place = storage._place
    taken = settings.MEDIA_ROOT / "race" / "report.bin"

    def someone_else_first(part: Path, final: Path) -> None:
        if final == taken:
            final.write_bytes(b"the other writer")  # Between get_available_name and link.
        real_place(part, final)

    storage._place = someone_else_first
    try:
        name = row.persist("race/report.bin")
    finally:
        storage._place = real_place

    assert name != "race/report.bin"
    assert taken.read_bytes() == b"the other writer"
    assert (settings.MEDIA_ROOT / name).read_bytes() == PAYLOAD
    assert part_files(settings.MEDIA_ROOT) == []
