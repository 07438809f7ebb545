"""Prometheus metrics (optional extra ``prometheus``): read from the database at scrape time.

Gauges come from the rows themselves, so every worker and host answers the same;
only ``tempstore_refusals_total`` is counted in the process that refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.db.models import Count, Sum
from django.http import HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .conf import conf
from .models import PENDING_STATES, QuotaCounter, State, SweepRun, TempUpload

REFUSALS = Counter(
    "tempstore_refusals",
    "Uploads refused, by HTTP status and error code (this process).",
    ["status", "code"],
)


def count_refusal(status: int, code: str) -> None:
    REFUSALS.labels(status=str(status), code=code).inc()


class TempStoreCollector(Collector):
    """Reserved and on-disk bytes per scope, uploads by state, tus in progress, the last sweep."""

    def collect(self) -> Iterator[Any]:
        db = conf.DATABASE
        reserved = GaugeMetricFamily(
            "tempstore_reserved_bytes", "Bytes reserved against the quota.", labels=["scope"]
        )
        for scope, used in QuotaCounter.objects.using(db).values_list("scope", "used"):
            reserved.add_metric([scope], used)
        yield reserved

        on_disk = GaugeMetricFamily(
            "tempstore_on_disk_bytes", "Bytes held by pending temp files.", labels=["host"]
        )
        pending = TempUpload.objects.using(db).filter(state__in=PENDING_STATES)
        for row in pending.values("host").annotate(total=Sum("size")):
            on_disk.add_metric([row["host"]], row["total"] or 0)
        yield on_disk

        by_state = GaugeMetricFamily("tempstore_uploads", "Upload rows by state.", labels=["state"])
        counts = dict(
            TempUpload.objects.using(db).values_list("state").annotate(n=Count("pk")).order_by()
        )
        for state in State:
            by_state.add_metric([state.value], counts.get(state.value, 0))
        yield by_state

        yield GaugeMetricFamily(
            "tempstore_tus_uploads_in_progress",
            "Receiving uploads with a declared length (tus).",
            value=pending.filter(state=State.RECEIVING, upload_length__isnull=False).count(),
        )

        last = SweepRun.objects.using(db).filter(finished_at__isnull=False).order_by("-started_at")
        run = last.first()
        if run is not None and run.finished_at is not None:
            report = run.report or {}
            yield GaugeMetricFamily(
                "tempstore_last_sweep_timestamp_seconds",
                "When the last sweep finished.",
                value=run.finished_at.timestamp(),
            )
            yield GaugeMetricFamily(
                "tempstore_last_sweep_duration_seconds",
                "How long the last sweep took.",
                value=(run.finished_at - run.started_at).total_seconds(),
            )
            yield GaugeMetricFamily(
                "tempstore_last_sweep_files", "Files the last sweep deleted.",
                value=int(report.get("total_files", 0)),
            )  # fmt: skip
            yield GaugeMetricFamily(
                "tempstore_last_sweep_bytes", "Bytes the last sweep freed.",
                value=int(report.get("total_bytes", 0)),
            )  # fmt: skip
            yield GaugeMetricFamily(
                "tempstore_last_sweep_failed", "1 if the last sweep ended with an error.",
                value=1 if run.error else 0,
            )  # fmt: skip


def registry() -> CollectorRegistry:
    """A registry with the refusal counter and the database collector."""
    result = CollectorRegistry(auto_describe=False)
    result.register(REFUSALS)
    result.register(TempStoreCollector())
    return result


def metrics_view(request: HttpRequest) -> HttpResponse:
    """``path("metrics/", metrics_view)``: the Prometheus text exposition. Protect it."""
    return HttpResponse(generate_latest(registry()), content_type=CONTENT_TYPE_LATEST)
