"""Who may create, resume, delete and claim a tus upload: ``TEMPSTORE_TUS_PERMISSION``."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from django.http import HttpRequest

    from django_tempstore.models import TempUpload

#: The ``action`` a permission callable is asked about.
ACTIONS = ("create", "resume", "delete", "claim")


def owner_or_capability(request: HttpRequest, action: str, upload: TempUpload | None) -> bool:
    """Anyone may create; an upload made by a logged-in user is that user's only.

    An anonymous upload's unguessable URL (its id) is the capability, as in tusd.
    """
    if upload is None or upload.user_id is None:
        return True
    user = getattr(request, "user", None)
    return user is not None and bool(user.is_authenticated) and user.pk == upload.user_id


def login_required(request: HttpRequest, action: str, upload: TempUpload | None) -> bool:
    """Like ``owner_or_capability``, for logged-in users only."""
    user = getattr(request, "user", None)
    if not getattr(user, "is_authenticated", False):
        return False
    return owner_or_capability(request, action, upload)
