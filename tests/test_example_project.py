"""The README's first command: ``python3 example_project/manage.py demo`` on a fresh folder."""

from __future__ import annotations

import contextlib
import http.cookiejar
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest
from django.contrib.auth.hashers import check_password

from tests.servers import ROOT, free_port, wait_for_port, wait_until

pytestmark = pytest.mark.server

EXAMPLE = ROOT / "example_project"


def example_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """What ``pip install -e .`` gives: the package importable; nothing else prepared."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "TEMPSTORE_"))}
    env.pop("REDIS_URL", None)
    env.update(
        PYTHONPATH=str(ROOT),
        EXAMPLE_DATA_DIR=str(data_dir),
        PYTHONWARNINGS="ignore",
        PYTHONUNBUFFERED="1",  # what the command printed is in the log once it serves
        **extra,
    )
    return env


def test_demo_migrates_prints_a_login_and_serves_site_and_admin(tmp_path):
    port = free_port()
    log = tmp_path / "demo.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "example_project/manage.py", "demo", f"127.0.0.1:{port}"],
            cwd=ROOT,
            env=example_env(tmp_path),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for_port(port, proc, timeout=60)
        assert wait_until(lambda: "startup sweep:" in log.read_text())
        output = log.read_text()
        password = re.search(r"password: (\S+)", output).group(1)
        assert f"site:     http://127.0.0.1:{port}/" in output
        assert "login:    demo" in output
        assert "startup sweep: Deleted 0 temp files" in output
        assert "Try next:" in output
        assert "over 8\xa0MiB" in output
        assert f"http://127.0.0.1:{port}/admin/django_tempstore/tempupload/" in output

        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        home = opener.open(f"http://127.0.0.1:{port}/").read().decode()
        assert "Upload images" in home
        assert 'enctype="multipart/form-data"' in home

        login = f"http://127.0.0.1:{port}/admin/login/"
        opener.open(login).read()
        token = next(c.value for c in jar if c.name == "csrftoken")
        form = urllib.parse.urlencode(
            {
                "username": "demo",
                "password": password,
                "csrfmiddlewaretoken": token,
                "next": "/admin/django_tempstore/tempupload/",
            }
        ).encode()
        page = opener.open(urllib.request.Request(login, form, headers={"Referer": login}))
        html = page.read().decode()
        assert page.url.endswith("/admin/django_tempstore/tempupload/")
        assert "Temp store usage" in html
        assert 'role="progressbar"' in html  # the example sets TEMPSTORE_QUOTA
    finally:
        proc.terminate()
        proc.wait(timeout=20)

    with contextlib.closing(sqlite3.connect(tmp_path / "db.sqlite3")) as db:
        assert db.execute("select is_superuser from auth_user where username='demo'").fetchone()
        runs = db.execute("select trigger, dry_run from django_tempstore_sweeprun").fetchall()
        assert runs == [("startup", 0)]


def test_demo_takes_its_password_from_demo_password(tmp_path):
    done = subprocess.run(
        [sys.executable, "example_project/manage.py", "demo", "--no-serve"],
        cwd=ROOT,
        env=example_env(tmp_path, DEMO_PASSWORD="letmein"),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )

    assert "password: letmein" in done.stdout
    # Nothing serves: no address to open, and the way to serve instead.
    assert "http://" not in done.stdout
    assert "  site:" not in done.stdout
    assert "Try next:" in done.stdout
    assert "manage.py demo" in done.stdout
    with contextlib.closing(sqlite3.connect(tmp_path / "db.sqlite3")) as db:
        (encoded,) = db.execute("select password from auth_user where username='demo'").fetchone()
    assert check_password("letmein", encoded)


def test_demo_on_a_taken_port_says_so_before_printing_a_login(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "example_project/manage.py", "demo", f"127.0.0.1:{port}"],
            cwd=ROOT,
            env=example_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=120,
        )

    assert done.returncode == 1
    assert f"Port {port} on 127.0.0.1 is already in use" in done.stderr
    assert f"127.0.0.1:{port + 1}" in done.stderr
    assert "password" not in done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    # Refused before anything was set up: no login was created. (Django 6.1's
    # checks may open, and so create, the SQLite file; no table is made.)
    database = tmp_path / "db.sqlite3"
    if database.exists():
        with contextlib.closing(sqlite3.connect(database)) as db:
            tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
        assert "auth_user" not in tables


def test_celery_app_schedules_the_sweep_task_by_name(tmp_path):
    code = (
        "import json; from example.celery import app; "
        "print(json.dumps(app.conf.beat_schedule)); print(app.conf.broker_url)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=EXAMPLE,
        env=example_env(tmp_path, REDIS_URL="redis://127.0.0.1:6379/13"),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    schedule_line, broker = done.stdout.splitlines()
    schedule = json.loads(schedule_line)
    assert schedule["sweep-temp-uploads"]["task"] == "django_tempstore.tasks.sweep_temp_uploads"
    assert broker == "redis://127.0.0.1:6379/13"


@pytest.mark.celery
def test_celery_worker_and_beat_of_the_example_sweep(tmp_path):
    """The documented Celery setup, run for real: worker-start sweep, then beat's."""
    queue = f"example-{uuid.uuid4().hex[:10]}"
    env = example_env(
        tmp_path,
        REDIS_URL=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15"),
        CELERY_QUEUE=queue,
        EXAMPLE_SWEEP_EVERY="1",
    )
    manage = [sys.executable, str(EXAMPLE / "manage.py")]
    subprocess.run([*manage, "migrate", "-v", "0"], env=env, check=True, timeout=120)
    # Worker and beat as two processes, as documented (an embedded ``worker --beat``
    # fails on Python 3.13, whose shelve uses dbm.sqlite3 across billiard's fork).
    log = tmp_path / "celery.log"
    commands = [
        [
            sys.executable, "-m", "celery", "-A", "example", "worker",
            "-P", "solo", "-c", "1", "-l", "INFO", "-n", f"{queue}@%h",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
        ],
        [
            sys.executable, "-m", "celery", "-A", "example", "beat",
            "-l", "INFO", "-s", str(tmp_path / "beat-schedule"),
        ],
    ]  # fmt: skip
    procs = []
    with open(log, "wb") as out:
        for command in commands:
            procs.append(
                subprocess.Popen(
                    command,
                    cwd=EXAMPLE,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )  # fmt: skip
            )

    def triggers() -> set[str]:
        with contextlib.closing(sqlite3.connect(tmp_path / "db.sqlite3")) as db:
            return {row[0] for row in db.execute("select trigger from django_tempstore_sweeprun")}

    try:
        assert wait_until(lambda: {"worker_start", "celery"} <= triggers(), timeout=60), (
            log.read_text(errors="replace")
        )
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=30)
    assert "django_tempstore.tasks.sweep_temp_uploads" in log.read_text(errors="replace")
