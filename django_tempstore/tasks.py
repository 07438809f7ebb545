"""Celery tasks. Celery is optional: this module is only imported by a Celery worker."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from .sweep import sweep


@shared_task(name="django_tempstore.tasks.sweep_temp_uploads", ignore_result=True)
def sweep_temp_uploads(*, startup: bool = False) -> dict[str, Any]:
    """Run the sweep once; return its report as a dict."""
    return sweep(startup=startup, trigger="celery").as_dict()
