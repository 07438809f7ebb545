"""SIGKILL of a real process during a cross-filesystem persist: the sweep finishes or undoes it."""

from __future__ import annotations

import subprocess
import sys
from io import StringIO

import pytest
from django.core.management import call_command

from django_tempstore import storage
from django_tempstore.models import QuotaCounter, State, TempUpload
from tests.servers import child_env
from tests.test_exdev import tmpfs_tempstore  # noqa: F401

pytestmark = [pytest.mark.root, pytest.mark.django_db(transaction=True)]

# Runs in its own process: receive a file, then persist it and die (SIGKILL)
# at the moment named by argv[1], exactly there.
CHILD = """
import hashlib, os, signal, sys

import django

django.setup()
from django_tempstore import lifecycle, quota, storage

moment = sys.argv[1]
payload = os.urandom(3 * 1024 * 1024)
upload = lifecycle.start(original_name="report.bin")
quota.reserve(upload, len(payload))
with storage.create_temp(upload.name) as fh:
    fh.write(payload)
algorithm = upload.digest_algorithm
digest = hashlib.new(algorithm, payload).hexdigest() if algorithm else ""
lifecycle.complete(upload, len(payload), digest)


def die():
    os.kill(os.getpid(), signal.SIGKILL)


if moment == "part":
    def half_then_die(src, dst, length=0):
        dst.write(src.read(len(payload) // 2))
        dst.flush()
        die()
    storage.shutil.copyfileobj = half_then_die
elif moment == "final":
    real_place = storage._place
    def place_then_die(part, target):
        real_place(part, target)
        die()
    storage._place = place_then_die
else:
    real_link = lifecycle.link_atomic
    def link_then_die(*args, **kwargs):
        real_link(*args, **kwargs)
        die()
    lifecycle.link_atomic = link_then_die
lifecycle.persist(upload, "incoming/report.bin")
"""


def destination_files(root) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if not path.is_dir())


@pytest.mark.parametrize("moment", ["part", "final", "linked"])
@pytest.mark.parametrize("startup", [True, False], ids=["startup", "periodic"])
def test_sigkill_during_persist_leaves_rows_naming_every_file(
    moment,
    startup,
    settings,
    tmp_path,
    tmpfs_tempstore,  # noqa: F811
):
    settings.TEMPSTORE_QUOTA = 10**9
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    for _ in range(2):
        result = subprocess.run(
            [sys.executable, str(script), moment],
            env=child_env(TEMPSTORE_TEST_QUOTA=str(10**9)),
            capture_output=True,
        )
        assert result.returncode == -9, result.stderr.decode()
    media = settings.MEDIA_ROOT
    if moment == "part":
        assert len(list(media.rglob(f"{storage.PART_PREFIX}*"))) == 2
    else:
        assert len(destination_files(media)) >= 2

    call_command("sweep_temp", *(["--startup"] if startup else []), stdout=StringIO())

    assert list(media.rglob(f"{storage.PART_PREFIX}*")) == []
    persisted = set(
        TempUpload.objects.filter(state=State.PERSISTED).values_list("persisted_name", flat=True)
    )
    assert destination_files(media) == sorted(persisted)
    assert len(persisted) == (0 if moment == "part" else 2)
    assert not TempUpload.objects.pending().exists()
    assert list(tmpfs_tempstore.iterdir()) == []
    assert QuotaCounter.objects.get().used == 0
