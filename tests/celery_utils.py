"""Start real Celery workers and beat for a test, on real Redis, in isolation.

Each ``CeleryEnv`` has its own queue names (a random prefix), so tests and
engineers running at the same time never take each other's messages. Workers and
beat share the test's database and temp dir (``tests.servers.child_env``)::

    with celery_env(tmp_path) as env:
        with env.worker(queues=[env.queue]), env.beat({"sweep": {...}}):
            ...
        with env.sending(), env.worker(settings={"TEMPSTORE_...": ...}):
            ...  # tasks queued by this process go to env.queue
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celery import Celery, current_app

from tests.servers import ROOT, child_env, stop_process, wait_ready
from tests.utils import require_marker

BROKER = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")
APP = "tests.celery_app"


@dataclass
class Process:
    proc: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 15) -> None:
        stop_process(self.proc, timeout)


@dataclass
class CeleryEnv:
    """Queues and processes of one test; every name carries a random ``prefix``."""

    log_dir: Path
    broker: str = BROKER
    prefix: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:10]}")
    processes: list[Process] = field(default_factory=list)

    @property
    def queue(self) -> str:
        """This test's default queue (instead of ``celery``)."""
        return f"{self.prefix}.default"

    def env(self, **extra: str) -> dict[str, str]:
        return child_env(
            TEMPSTORE_TEST_BROKER=self.broker, TEMPSTORE_TEST_QUEUE=self.queue, **extra
        )

    def _start(self, kind: str, args: list[str], env: dict[str, str]) -> Process:
        require_marker("celery", f"a Celery {kind}")
        log = self.log_dir / f"celery-{kind}-{uuid.uuid4().hex[:6]}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", APP, kind, *args],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        process = Process(proc, log)
        self.processes.append(process)
        return process

    @contextlib.contextmanager
    def worker(
        self,
        *,
        queues: list[str] | None = None,
        name: str | None = None,
        pool: str = "solo",
        loglevel: str = "INFO",
        timeout: float = 30,
        settings: dict[str, Any] | None = None,
        **env: str,
    ) -> Iterator[Process]:
        """Run a worker until the block ends; return once it is ready to take tasks.

        ``settings`` are extra Django settings of the worker (``TEMPSTORE_TEST_SETTINGS``).
        """
        if settings:
            env["TEMPSTORE_TEST_SETTINGS"] = json.dumps(settings)
        node = f"{name or 'w'}-{self.prefix}@%h"
        args = [
            "-P", pool, "-c", "1", "-n", node, "-l", loglevel,
            "-Q", ",".join(queues or [self.queue]),
            "--without-gossip", "--without-mingle", "--without-heartbeat",
        ]  # fmt: skip
        process = self._start("worker", args, self.env(**env))
        try:
            _wait_for(process, " ready.", timeout)
            yield process
        finally:
            process.stop()

    @contextlib.contextmanager
    def beat(
        self, schedule: dict[str, dict[str, Any]], *, timeout: float = 30, **env: str
    ) -> Iterator[Process]:
        """Run beat with ``schedule`` (``CELERY_BEAT_SCHEDULE`` entries, schedules in seconds)."""
        sched_file = self.log_dir / f"beat-{self.prefix}-{uuid.uuid4().hex[:6]}"
        args = ["-s", str(sched_file), "-l", "INFO"]
        process = self._start(
            "beat", args, self.env(TEMPSTORE_TEST_BEAT_SCHEDULE=json.dumps(schedule), **env)
        )
        try:
            _wait_for(process, "beat: Starting", timeout)
            yield process
        finally:
            process.stop()

    @contextlib.contextmanager
    def sending(self) -> Iterator[Celery]:
        """Queue the tasks this process sends (``task.delay()``) on this env's queue.

        Until the block ends, this thread's current Celery app is one configured
        like ``tests.celery_app`` but with this env's broker and default queue, so
        the ``shared_task``s that the code under test sends (``promote_later``)
        reach this env's workers.
        """
        app = Celery(f"sender-{self.prefix}", set_as_current=False)
        app.config_from_object("django.conf:settings", namespace="CELERY")
        app.conf.update(broker_url=self.broker, task_default_queue=self.queue)
        previous = current_app._get_current_object()
        app.set_current()
        try:
            yield app
        finally:
            previous.set_current()
            app.close()

    def cleanup(self) -> None:
        """Stop what is still running and delete this env's queues from Redis."""
        for process in self.processes:
            process.stop()
        import redis

        client = redis.Redis.from_url(self.broker)
        try:
            keys = list(client.scan_iter(f"{self.prefix}*"))
            if keys:
                client.delete(*keys)
        finally:
            client.close()


def _wait_for(process: Process, marker: str, timeout: float) -> None:
    wait_ready(
        process.proc, lambda: marker in process.output(), "celery", timeout=timeout, log=process.log
    )


@contextlib.contextmanager
def celery_env(log_dir: Path, broker: str = BROKER) -> Iterator[CeleryEnv]:
    env = CeleryEnv(log_dir, broker)
    try:
        yield env
    finally:
        env.cleanup()
