"""A real clamd for the tests, with a one-signature database made on the spot."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.servers import free_port, stop_process, wait_ready
from tests.utils import require_marker

CLAMD = shutil.which("clamd") or "/usr/sbin/clamd"
#: The "virus": any file with exactly these bytes is infected for our clamd.
EICAR_LIKE = b"django-tempstore test signature: not a virus, only a known hash\n" * 64
SIGNATURE = "Tempstore.Test.Hash"


@dataclass
class Clamd:
    socket: Path
    tcp_port: int
    proc: subprocess.Popen[bytes]
    directory: Path

    @property
    def tcp_address(self) -> str:
        return f"tcp://127.0.0.1:{self.tcp_port}"


def missing_clamd() -> str | None:
    """Why clamd cannot run here, or None."""
    if os.path.exists(CLAMD):
        return None
    return f"clamd is not installed at {CLAMD} (Debian: apt-get install clamav-daemon)"


@contextlib.contextmanager
def run_clamd(directory: Path) -> Iterator[Clamd]:
    """Start clamd in the foreground with a hash signature of ``EICAR_LIKE``."""
    require_marker("clamd", "clamd")
    if reason := missing_clamd():
        pytest.skip(reason)
    directory.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(EICAR_LIKE).hexdigest()
    (directory / "tempstore.hsb").write_text(f"{digest}:{len(EICAR_LIKE)}:{SIGNATURE}\n")
    sock = directory / "clamd.sock"
    port = free_port()
    conf = directory / "clamd.conf"
    conf.write_text(
        f"LocalSocket {sock}\nTCPSocket {port}\nTCPAddr 127.0.0.1\nForeground yes\n"
        f"DatabaseDirectory {directory}\nTemporaryDirectory {directory}\n"
        f"LogFile {directory / 'clamd.log'}\nPidFile {directory / 'clamd.pid'}\n"
        "StreamMaxLength 64M\nSelfCheck 0\n"
    )
    with open(directory / "clamd.out", "wb") as out:
        proc = subprocess.Popen(
            [CLAMD, "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        from django_tempstore.scanners import ClamAVScanner

        scanner = ClamAVScanner(str(sock))
        wait_ready(proc, scanner.ping, "clamd", log=directory / "clamd.out")
        yield Clamd(sock, port, proc, directory)
    finally:
        stop_process(proc, timeout=10)


def clamd_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clamd]:
    """Body of a ``clamd`` fixture: ``yield from clamd_daemon(tmp_path_factory)``."""
    if reason := missing_clamd():
        pytest.skip(reason)
    with run_clamd(tmp_path_factory.mktemp("clamd")) as daemon:
        yield daemon
