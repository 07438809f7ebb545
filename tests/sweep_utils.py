"""Build rows and files in the states a sweep has to judge."""

from __future__ import annotations

import os
import time
from datetime import timedelta

from django.utils import timezone

from django_tempstore import lifecycle
from django_tempstore.conf import conf
from django_tempstore.models import State, TempUpload
from django_tempstore.storage import create_temp, new_name


def make_upload(
    state: State = State.COMPLETE,
    *,
    size: int = 1000,
    age: float = 0,
    expires_in: float | None = 3600,
    host: str | None = None,
    pid: int | None = None,
    with_file: bool = True,
    reserved: int = 0,
) -> TempUpload:
    """A row (and its file) as the handler leaves it, ``age`` seconds old."""
    upload = lifecycle.start(original_name="f.bin")
    if with_file:
        with create_temp(upload.name) as fh:
            fh.write(b"x" * size)
    then = timezone.now() - timedelta(seconds=age)
    fields: dict[str, object] = {
        "state": state,
        "size": size,
        "reserved": reserved,
        "created_at": then,
        "updated_at": then,
        "expires_at": None
        if expires_in is None
        else timezone.now() + timedelta(seconds=expires_in),
        "host": host or conf.HOSTNAME,
        "pid": os.getpid() if pid is None else pid,
    }
    if state not in (State.RECEIVING, State.COMPLETE, State.KEPT):
        fields["closed_at"] = then
    TempUpload.objects.filter(pk=upload.pk).update(**fields)
    upload.refresh_from_db()
    return upload


def make_orphan(size: int = 500, age: float = 7200, name: str | None = None) -> str:
    """A temp file with no row, ``age`` seconds old."""
    name = name or new_name()
    with create_temp(name) as fh:
        fh.write(b"o" * size)
    when = time.time() - age
    os.utime(conf.DIR / name, (when, when))
    return name


def dead_pid() -> int:
    """A process id that no process has (a child that exited and was reaped)."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid
