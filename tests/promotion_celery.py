"""A minimal Celery app and worker launcher for the promotion tests.

Stand-in for the shared tests/celery_utils.py (not on main yet when this was
written): run ``python -m celery -A tests.promotion_celery:app worker`` in a
child process that shares the test's database and folders.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import django
from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
django.setup()

BROKER = os.environ.get("TEMPSTORE_PROMOTION_BROKER", "redis://127.0.0.1:6379/11")
# Fixed per test session (Celery caches the default queue); each worker purges it.
QUEUE = os.environ.setdefault(
    "TEMPSTORE_PROMOTION_QUEUE", f"tempstore-promotion-{uuid.uuid4().hex[:8]}"
)

app = Celery("tempstore_promotion_tests", broker=BROKER)
app.conf.update(
    imports=["django_tempstore.tasks"],
    task_default_queue=QUEUE,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    log: Path
    queue: str

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def run_worker(log_dir: Path, **settings: object) -> Iterator[Worker]:
    """Start a solo worker on the session queue (purged first) with extra ``settings``."""
    import json

    from tests.servers import child_env, wait_until

    queue = QUEUE
    env = child_env(TEMPSTORE_PROMOTION_QUEUE=queue, TEMPSTORE_TEST_SETTINGS=json.dumps(settings))
    log = log_dir / f"worker-{uuid.uuid4().hex[:8]}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "tests.promotion_celery:app", "worker",
             "--pool=solo", "--loglevel=INFO", "--without-gossip", "--without-mingle",
             "--without-heartbeat", "--purge", "-Q", queue, "-n", f"{log.stem}@%h"],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    worker = Worker(proc, log, queue)
    try:
        if not wait_until(lambda: "ready." in worker.output() or proc.poll() is not None, 60):
            raise RuntimeError("the Celery worker did not start:\n" + worker.output())
        if proc.poll() is not None:
            raise RuntimeError("the Celery worker exited:\n" + worker.output())
        yield worker
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
