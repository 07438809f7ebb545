"""The upload page: validate the images, persist them atomically, list what was stored."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.contrib import messages
from django.core.files.storage import default_storage
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse

from django_tempstore.exceptions import UploadRejected
from django_tempstore.models import State, TempUpload
from django_tempstore.units import binary_size

from .forms import ImageUploadForm

FOLDER = "photos"
#: Session key of the uploads kept for the confirm page.
KEPT = "example_kept_uploads"


@dataclass
class StoredImage:
    name: str
    url: str
    size: int
    modified: datetime

    @property
    def human_size(self) -> str:
        return binary_size(self.size)


def stored_images() -> list[StoredImage]:
    """The images persisted so far, newest first, read from the storage itself."""
    try:
        _dirs, files = default_storage.listdir(FOLDER)
    except FileNotFoundError:
        return []
    images = []
    for filename in files:
        name = f"{FOLDER}/{filename}"
        images.append(
            StoredImage(
                name=filename,
                url=default_storage.url(name),
                size=default_storage.size(name),
                modified=default_storage.get_modified_time(name),
            )
        )
    return sorted(images, key=lambda image: image.modified, reverse=True)


def wants_json(request: HttpRequest) -> bool:
    return "application/json" in request.headers.get("Accept", "")


def upload(request: HttpRequest) -> HttpResponse:
    """GET: the form and the list. POST: store every image, or none and say why."""
    form = ImageUploadForm()
    if request.method == "POST":
        form = ImageUploadForm(request.POST, request.FILES)
        if form.is_valid() and form.cleaned_data["later"]:
            # Upload now, confirm later: the temp files outlive this request
            # (TEMPSTORE_KEEP_TTL); the confirm page stores or drops them.
            kept = request.session.get(KEPT, [])
            for image in form.cleaned_data["files"]:
                image.keep()
                kept.append(str(image.temp_upload.pk))
            request.session[KEPT] = kept
            if wants_json(request):
                return JsonResponse({"saved": [], "confirm": reverse("confirm")}, status=201)
            return redirect("confirm")
        if form.is_valid():
            saved = persist_all(form.cleaned_data["files"])
            if wants_json(request):
                return JsonResponse({"saved": saved}, status=201)
            messages.success(request, f"Stored {len(saved)} image(s).")
            return redirect("upload")
        # The temp files of a refused form are deleted when this response is done.
        if wants_json(request):
            errors = [str(e) for errors in form.errors.values() for e in errors]
            return JsonResponse({"errors": errors}, status=422)
        status = 422
    else:
        status = 200
    return render(
        request, "example/upload.html", {"form": form, "images": stored_images()}, status=status
    )


def persist_all(images: list[Any]) -> list[dict[str, Any]]:
    """Persist ``images`` all or nothing and describe what was stored.

    If one persist fails, the rollback makes the request's end delete what was
    already stored.
    """
    saved = []
    with transaction.atomic():
        for image in images:
            final = image.persist(f"{FOLDER}/{image.name}")
            saved.append(
                {
                    "name": final.rsplit("/", 1)[-1],
                    "url": default_storage.url(final),
                    "size": image.size,
                    "human_size": binary_size(image.size),
                    "sha256": image.sha256,
                }
            )
    return saved


def refused(request: HttpRequest, refusal: UploadRejected) -> HttpResponse:
    """``TEMPSTORE_REFUSAL_VIEW``: the page again, the refusal listed with the form's errors."""
    # The body is consumed: an unbound form, and the refusal shown beside it.
    context = {"form": ImageUploadForm(), "images": stored_images(), "refusal": refusal}
    return render(request, "example/upload.html", context, status=refusal.status)


def kept_uploads(request: HttpRequest) -> list[TempUpload]:
    """This session's kept uploads that still wait (a sweep may have expired some)."""
    ids = request.session.get(KEPT, [])
    return list(TempUpload.objects.filter(pk__in=ids, state=State.KEPT).order_by("created_at"))


def confirm(request: HttpRequest) -> HttpResponse:
    """GET: the uploads kept for later. POST: store them (``persist``) or drop them."""
    uploads = kept_uploads(request)
    if request.method == "POST":
        if request.POST.get("action") == "store":
            with transaction.atomic():
                for row in uploads:
                    row.persist(f"{FOLDER}/{row.original_name or row.name}")
            messages.success(request, f"Stored {len(uploads)} image(s).")
        else:
            for row in uploads:
                row.discard(reason="dropped on the confirm page")
            messages.info(request, f"Dropped {len(uploads)} upload(s).")
        request.session.pop(KEPT, None)
        return redirect("upload")
    listed = [(row, binary_size(row.size)) for row in uploads]
    return render(request, "example/confirm.html", {"uploads": listed})
