"""A tus 1.0.0 server (https://tus.io/protocols/resumable-upload) on ``TempUpload`` rows.

Mount it with ``path("files/", include("django_tempstore.tus.urls"))``; a finished
upload is claimed by its id with ``claim(request, upload_id)``.
"""

from __future__ import annotations

from .uploads import claim

__all__ = ["claim"]
