"""The upload page: validate the images, persist them atomically, list what was stored."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.contrib import messages
from django.core.files.storage import default_storage
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render

from django_tempstore.exceptions import UploadRejected
from django_tempstore.units import binary_size

from .forms import ImageUploadForm

FOLDER = "photos"


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
        if form.is_valid():
            saved = []
            # All or nothing: if one persist fails, the rollback makes the
            # request's end delete what was already stored.
            with transaction.atomic():
                for image in form.cleaned_data["files"]:
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


def refused(request: HttpRequest, refusal: UploadRejected) -> HttpResponse:
    """``TEMPSTORE_REFUSAL_VIEW``: the page again, the refusal listed with the form's errors."""
    # The body is consumed: an unbound form, and the refusal shown beside it.
    context = {"form": ImageUploadForm(), "images": stored_images(), "refusal": refusal}
    return render(request, "example/upload.html", context, status=refusal.status)
