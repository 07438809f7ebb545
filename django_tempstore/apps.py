from __future__ import annotations

import logging

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class TempStoreConfig(AppConfig):
    name = "django_tempstore"
    verbose_name = _("Temp uploads")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the system checks)
        from .middleware import RefusalLogFilter

        # Django logs a BadRequest with its traceback; a refusal is expected, one line is enough.
        request_logger = logging.getLogger("django.request")
        if not any(isinstance(f, RefusalLogFilter) for f in request_logger.filters):
            request_logger.addFilter(RefusalLogFilter())
