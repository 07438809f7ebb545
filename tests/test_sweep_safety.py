"""What the sweep must never touch: symlinks, foreign files, anything outside TEMPSTORE_DIR."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest

from django_tempstore.models import State, TempUpload
from django_tempstore.storage import ensure_dir, new_name
from django_tempstore.sweep import sweep
from tests.sweep_utils import make_orphan, make_upload

pytestmark = pytest.mark.django_db


@pytest.fixture
def outside(tmp_path):
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    os.utime(target, (0, 0))
    return target


def test_symlink_with_our_name_is_left_and_reported(tempstore_dirs, outside):
    ensure_dir()
    link = tempstore_dirs / new_name()
    link.symlink_to(outside)
    os.utime(link, (0, 0), follow_symlinks=False)

    report = sweep(older_than=timedelta(0))

    assert report.counts["orphan"] == 0
    assert report.foreign == 1
    assert report.foreign_examples == [link.name]
    assert link.is_symlink()
    assert outside.read_text() == "keep me"


def test_foreign_files_and_directories_are_left_and_reported(tempstore_dirs):
    ensure_dir()
    (tempstore_dirs / "notes.txt").write_text("not ours")
    (tempstore_dirs / ("tsu-" + "A" * 32)).write_text("uppercase: not our scheme")
    (tempstore_dirs / new_name()).mkdir()
    for entry in tempstore_dirs.iterdir():
        os.utime(entry, (0, 0))
    orphan = make_orphan()

    report = sweep()

    assert report.counts["orphan"] == 1
    assert report.foreign == 3
    assert sorted(p.name for p in tempstore_dirs.iterdir()) == sorted(report.foreign_examples)
    assert not (tempstore_dirs / orphan).exists()


def test_expired_row_whose_file_is_a_symlink_never_reaches_the_target(tempstore_dirs, outside):
    upload = make_upload(State.KEPT, expires_in=-1, with_file=False)
    ensure_dir()
    upload.path.symlink_to(outside)

    sweep()

    assert outside.read_text() == "keep me"
    assert not os.path.lexists(upload.path)
    assert TempUpload.objects.get().state == State.DISCARDED


def test_row_with_a_name_outside_the_scheme_is_never_used_as_a_path(tempstore_dirs, outside):
    upload = make_upload(State.KEPT, expires_in=-1, with_file=False)
    relative = os.path.relpath(outside, tempstore_dirs)
    TempUpload.objects.filter(pk=upload.pk).update(name=relative)

    report = sweep()

    assert outside.read_text() == "keep me"
    assert report.counts["expired"] == 0
    assert report.foreign_examples == [relative]
    assert TempUpload.objects.get().state == State.KEPT


def test_missing_temp_dir_is_not_an_error(tempstore_dirs):
    assert not tempstore_dirs.exists()
    assert sweep().total_files == 0
