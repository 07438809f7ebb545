"""``manage.py sweep_temp``: output at each verbosity, dry run, exit status."""

from __future__ import annotations

import subprocess
import sys
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from django_tempstore.models import State, SweepRun, TempUpload
from tests.servers import ROOT, child_env
from tests.sweep_utils import make_orphan, make_upload

pytestmark = pytest.mark.django_db(transaction=True)


def run(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("sweep_temp", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_verbosity_0_prints_nothing(tempstore_dirs):
    make_orphan()
    assert run("-v", "0") == ("", "")
    assert list(tempstore_dirs.iterdir()) == []


def test_verbosity_1_prints_one_summary_line():
    make_orphan(size=100)
    make_upload(State.KEPT, size=50, expires_in=-1)

    out, err = run()

    assert out == "Deleted 2 temp files (1 expired, 1 orphan), 150 bytes.\n"
    assert err == ""


def test_verbosity_2_prints_one_line_per_item():
    orphan = make_orphan(size=100)
    kept = make_upload(State.KEPT, size=50, expires_in=-1)

    out, _ = run("-v", "2")

    lines = out.splitlines()
    assert sorted(lines[:-1]) == sorted(
        [
            f"Deleted expired upload {kept.name} (50 bytes)",
            f"Deleted orphan file {orphan} (100 bytes)",
        ]
    )
    assert lines[-1].startswith("Deleted 2 temp files")


def test_dry_run_says_would_delete_and_deletes_nothing(tempstore_dirs):
    orphan = make_orphan(size=100)

    out, _ = run("--dry-run", "-v", "2")

    assert out.splitlines() == [
        f"Would delete orphan file {orphan} (100 bytes)",
        "Would delete 1 temp file (1 orphan), 100 bytes.",
    ]
    assert (tempstore_dirs / orphan).exists()
    assert SweepRun.objects.get().dry_run is True


def test_startup_and_older_than_options(settings):
    settings.TEMPSTORE_STALE_AFTER = 3600
    upload = make_upload(State.RECEIVING, age=30, expires_in=None)

    run("--older-than", "3600")
    assert TempUpload.objects.get().state == State.RECEIVING
    run("--startup", "--older-than", "20")

    assert TempUpload.objects.get().state == State.FAILED
    assert not upload.path.exists()
    assert list(SweepRun.objects.order_by("started_at").values_list("trigger", flat=True)) == [
        "command",
        "startup",
    ]


def test_verbosity_3_breaks_down_every_kind():
    out, _ = run("-v", "3")
    assert "  orphan file: 0 (0 bytes)" in out
    assert "  quota drift: 0 bytes" in out


def test_failure_raises_command_error(settings, tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    settings.TEMPSTORE_DIR = not_a_dir

    with pytest.raises(CommandError, match="The sweep failed"):
        run()
    assert "NotADirectoryError" in SweepRun.objects.get().error


def test_negative_age_is_refused():
    with pytest.raises(CommandError, match="--older-than"):
        run("--older-than", "-1")


def test_age_below_two_heartbeats_is_refused(settings):
    settings.TEMPSTORE_HEARTBEAT_INTERVAL = 10
    upload = make_upload(State.RECEIVING, age=15, expires_in=None)

    with pytest.raises(CommandError, match=r"still being received.*Use 20 seconds or more"):
        run("--older-than", "19")
    assert TempUpload.objects.get().state == State.RECEIVING
    assert upload.path.exists()
    assert not SweepRun.objects.exists()

    run("--older-than", "20")
    assert TempUpload.objects.get().state == State.RECEIVING


def test_exit_status_for_cron(settings, tmp_path):
    make_orphan()
    ok = subprocess.run(
        [sys.executable, "-m", "django", "sweep_temp", "-v", "1"],
        cwd=ROOT, env=child_env(), capture_output=True, text=True,
    )  # fmt: skip
    assert (ok.returncode, ok.stdout) == (0, "Deleted 1 temp file (1 orphan), 500 bytes.\n")

    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    failed = subprocess.run(
        [sys.executable, "-m", "django", "sweep_temp", "--skip-checks"],
        cwd=ROOT, env=child_env(TEMPSTORE_DIR=str(not_a_dir)), capture_output=True, text=True,
    )  # fmt: skip
    assert failed.returncode == 1
    assert "CommandError: The sweep failed" in failed.stderr
    # Without --skip-checks, the system checks refuse the same setting first, also with 1.
    checked = subprocess.run(
        [sys.executable, "-m", "django", "sweep_temp"],
        cwd=ROOT, env=child_env(TEMPSTORE_DIR=str(not_a_dir)), capture_output=True, text=True,
    )  # fmt: skip
    assert checked.returncode == 1
    assert "django_tempstore.E008" in checked.stderr
