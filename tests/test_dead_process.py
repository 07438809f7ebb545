"""Every sweep removes the uploads of this host's dead processes, never those of a reused pid."""

from __future__ import annotations

import subprocess
import sys

import pytest

from django_tempstore import process
from django_tempstore.models import State, TempUpload
from django_tempstore.sweep import sweep
from tests.sweep_utils import dead_pid, make_upload

pytestmark = pytest.mark.django_db(transaction=True)


def test_periodic_sweep_removes_uploads_of_dead_processes():
    pid = dead_pid()
    receiving = make_upload(State.RECEIVING, pid=pid, expires_in=None, reserved=500)
    complete = make_upload(State.COMPLETE, pid=pid)

    report = sweep()

    assert report.counts["dead"] == 2
    assert TempUpload.objects.get(pk=receiving.pk).state == State.FAILED
    assert TempUpload.objects.get(pk=complete.pk).state == State.DISCARDED
    assert not receiving.path.exists() and not complete.path.exists()
    assert TempUpload.objects.get(pk=receiving.pk).reserved == 0


def test_a_reused_pid_does_not_keep_a_dead_upload():
    # A live process (init) has the pid, but it is not the one that wrote the row.
    upload = make_upload(State.RECEIVING, pid=1, expires_in=None)
    assert process.is_gone(1, upload.process_start) is True

    assert sweep().counts["dead"] == 1
    assert not upload.path.exists()


def test_a_live_process_keeps_its_upload():
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as child:
        try:
            identity = process.identity().rsplit(":", 1)[0]
            with open(f"/proc/{child.pid}/stat") as fh:
                start = fh.read().rsplit(")", 1)[1].split()[19]
            upload = make_upload(State.RECEIVING, pid=child.pid, expires_in=None)
            TempUpload.objects.filter(pk=upload.pk).update(process_start=f"{identity}:{start}")

            assert sweep().counts["dead"] == 0
            assert upload.path.exists()
        finally:
            child.kill()
    assert sweep().counts["dead"] == 1


def test_another_pid_namespace_is_not_judged():
    upload = make_upload(State.RECEIVING, pid=dead_pid(), expires_in=None)
    TempUpload.objects.filter(pk=upload.pk).update(process_start="other-boot:pid:[1]:42")

    assert sweep().counts["dead"] == 0
    assert upload.path.exists()
