"""Real servers and workers for tests whose behaviour depends on a socket or a process.

A child process uses the test database (``TEMPSTORE_SERVER_DB_NAME``) and the
test's temp dir and media root, so the test can check what it left behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import connection

from tests.utils import require_marker

ROOT = Path(__file__).resolve().parent.parent


def child_env(**extra: str) -> dict[str, str]:
    """Environment for a child process that must share this test's state."""
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="tests.settings",
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        TEMPSTORE_SERVER_DB_NAME=str(connection.settings_dict["NAME"]),
        TEMPSTORE_DIR=str(settings.TEMPSTORE_DIR),
        TEMPSTORE_MEDIA_ROOT=str(settings.MEDIA_ROOT),
        PYTHONWARNINGS="ignore",
    )
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(
    proc: subprocess.Popen[bytes],
    ready: Callable[[], bool],
    what: str,
    *,
    timeout: float = 30,
    log: Path | None = None,
) -> None:
    """Return once ``ready()`` is true; raise if ``proc`` exits first or ``timeout`` passes.

    The error carries ``log`` (the process's output) when given.
    """
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            problem = f"exited with {proc.returncode}"
        elif time.monotonic() >= deadline:
            problem = f"was not ready within {timeout}s"
        else:
            time.sleep(0.05)
            continue
        output = log.read_text(errors="replace") if log and log.exists() else ""
        raise RuntimeError(f"{what} {problem}" + (f":\n{output}" if output else ""))


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """Stop ``proc``'s process group (started with ``start_new_session=True``).

    SIGTERM first, so that it can clean up; SIGKILL if it is still running after
    ``timeout`` seconds.
    """
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), 0.2):
            return True
    except OSError:
        return False


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    wait_ready(proc, lambda: _listening(port), f"the server on port {port}", timeout=timeout)


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Kill the whole process group (gunicorn's arbiter and workers)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        self.proc.wait(timeout=30)


@contextlib.contextmanager
def run_server(
    kind: str, log_dir: Path, *, args: tuple[str, ...] = (), **env: str
) -> Iterator[Server]:
    """Run gunicorn (WSGI, sync workers) or uvicorn (ASGI) on a free loopback port."""
    require_marker("server", kind)
    port = free_port()
    if kind == "gunicorn":
        cmd = [
            sys.executable, "-m", "gunicorn", "tests.wsgi:application",
            "--bind", f"127.0.0.1:{port}", "--workers", "1", "--timeout", "60",
            "--no-control-socket", *args,
        ]  # fmt: skip
    elif kind == "uvicorn":
        cmd = [
            sys.executable, "-m", "uvicorn", "tests.asgi:application",
            "--host", "127.0.0.1", "--port", str(port), "--no-access-log", *args,
        ]  # fmt: skip
    else:
        raise ValueError(kind)
    log = log_dir / f"{kind}-{uuid.uuid4().hex[:8]}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=child_env(**env), stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    server = Server(proc, port, log)
    try:
        wait_for_port(port, proc)
        yield server
    finally:
        stop_process(proc)


def wait_until(predicate, timeout: float = 20, interval: float = 0.05) -> bool:  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until it is true or ``timeout`` passes; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return bool(value)
        time.sleep(interval)
