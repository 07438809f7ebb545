"""Bench-only views: an upload sink, the worker's memory counters, what is left on disk."""

from __future__ import annotations

import os
import resource
from pathlib import Path

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt


@csrf_exempt
def upload(request: HttpRequest) -> JsonResponse:
    """Receive the files and do nothing with them, as the simplest real view would."""
    return JsonResponse(
        {
            key: {"size": f.size, "sha256": getattr(f, "sha256", None)}
            for key, f in request.FILES.items()
        }
    )


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _written() -> int:
    """Bytes this process passed to write() and its kin so far (files, sockets)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    return 0


def stats(request: HttpRequest) -> JsonResponse:
    """The worker's pid, minor page faults, CPU seconds, resident memory (now and peak),
    bytes written."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return JsonResponse(
        {
            "pid": os.getpid(),
            "minflt": usage.ru_minflt,
            "cpu_s": usage.ru_utime + usage.ru_stime,
            "rss_kib": _status_kib("VmRSS"),
            "hwm_kib": _status_kib("VmHWM"),
            "wchar": _written(),
        }
    )


def state(request: HttpRequest) -> JsonResponse:
    """Files left in the temp folders and pending rows: all must be zero after a series."""
    from django_tempstore.models import TempUpload

    folders = [Path(settings.TEMPSTORE_DIR), Path(settings.FILE_UPLOAD_TEMP_DIR)]
    files = sorted(str(p) for d in folders if d.is_dir() for p in d.iterdir())
    return JsonResponse(
        {
            "files": files,
            "pending": TempUpload.objects.pending().count(),
            "rows": TempUpload.objects.count(),
        }
    )
