from __future__ import annotations

from django.db import models


class Document(models.Model):
    file = models.FileField(upload_to="docs/")
