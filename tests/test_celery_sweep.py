"""The sweep task on a real Celery worker and beat, on real Redis."""

from __future__ import annotations

import pytest

from django_tempstore.models import State, SweepRun, TempUpload
from django_tempstore.tasks import TASK_NAME, beat_schedule, host_queue
from tests.celery_utils import celery_env
from tests.servers import wait_until
from tests.sweep_utils import dead_pid, make_upload
from tests.utils import starts, upload

pytestmark = [pytest.mark.celery, pytest.mark.django_db(transaction=True)]


@pytest.fixture
@starts("celery")
def celery(tmp_path):
    with celery_env(tmp_path) as env:
        yield env


def test_kept_upload_disappears_without_a_manual_call(client, celery, settings):
    schedule = {"sweep": {"task": TASK_NAME, "schedule": 0.3}}
    with celery.worker(), celery.beat(schedule):
        response = client.post("/keep/?ttl=1", {"file": upload(size=300_000)})
        row = TempUpload.objects.get(pk=response.json()["id"])
        assert row.state == State.KEPT
        assert row.path.exists()

        assert wait_until(
            lambda: TempUpload.objects.get(pk=row.pk).state == State.DISCARDED, timeout=30
        )
    assert not row.path.exists()
    assert SweepRun.objects.filter(trigger="celery", report__counts__expired=1).count() == 1


def test_each_host_worker_sweeps_only_its_own_rows(celery, settings):
    hosts = [f"{celery.prefix}-a", f"{celery.prefix}-b"]
    rows = {host: make_upload(State.KEPT, expires_in=-1, host=host) for host in hosts}
    nobody = make_upload(State.KEPT, expires_in=-1, host=f"{celery.prefix}-c")
    schedule = beat_schedule(hosts, every=0.3)
    assert {entry["options"]["queue"] for entry in schedule.values()} == {
        host_queue(host) for host in hosts
    }

    with (
        celery.worker(name="a", queues=[host_queue(hosts[0])], TEMPSTORE_HOSTNAME=hosts[0]),
        celery.worker(name="b", queues=[host_queue(hosts[1])], TEMPSTORE_HOSTNAME=hosts[1]),
        celery.beat(schedule),
    ):
        assert wait_until(
            lambda: not TempUpload.objects.filter(host__in=hosts, state=State.KEPT).exists(),
            timeout=30,
        )
        assert wait_until(
            lambda: set(SweepRun.objects.values_list("host", flat=True)) == set(hosts)
        )

    for host in hosts:
        assert TempUpload.objects.get(pk=rows[host].pk).state == State.DISCARDED
        assert not rows[host].path.exists()
        runs = SweepRun.objects.filter(host=host, finished_at__isnull=False)
        assert sum(run.report["counts"]["expired"] for run in runs) == 1
    # No worker for host c: its row and file are left alone by the others.
    assert TempUpload.objects.get(pk=nobody.pk).state == State.KEPT
    assert nobody.path.exists()


def test_worker_start_runs_a_startup_sweep_when_enabled(celery):
    dead = make_upload(State.RECEIVING, pid=dead_pid(), expires_in=None)

    with celery.worker(TEMPSTORE_TEST_SWEEP_ON_WORKER_START="0"):
        pass
    assert TempUpload.objects.get(pk=dead.pk).state == State.RECEIVING
    assert not SweepRun.objects.exists()

    with celery.worker(TEMPSTORE_TEST_SWEEP_ON_WORKER_START="1"):
        assert wait_until(lambda: SweepRun.objects.filter(finished_at__isnull=False).exists())
    run = SweepRun.objects.get()
    assert (run.trigger, run.report["counts"]["dead"]) == ("worker_start", 1)
    assert TempUpload.objects.get(pk=dead.pk).state == State.FAILED
    assert not dead.path.exists()
