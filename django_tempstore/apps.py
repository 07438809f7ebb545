from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class TempStoreConfig(AppConfig):
    name = "django_tempstore"
    verbose_name = _("Temp uploads")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the system checks)
