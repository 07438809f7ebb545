"""Views the tests upload to; each one exercises one path of the lifecycle."""

from __future__ import annotations

import hashlib
import json
import threading

from django import forms
from django.core.files.storage import default_storage
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework.parsers import MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from django_tempstore.tasks import promote_later
from django_tempstore.validators import (
    AllowedContentTypes,
    AllowedExtensions,
    ExpectedDigest,
    validate_uploads,
)

from .models import Document


def describe(request: HttpRequest) -> dict[str, object]:
    return {
        key: [
            {
                "id": str(f.temp_upload.pk) if hasattr(f, "temp_upload") else None,
                "name": f.name,
                "size": f.size,
                "sha256": getattr(f, "sha256", None),
                "path": getattr(f, "temporary_file_path", lambda: None)(),
            }
            for f in request.FILES.getlist(key)
        ]
        for key in request.FILES
    }


@csrf_exempt
def accept(request: HttpRequest) -> JsonResponse:
    """Read the files and do nothing with them: the request end discards them."""
    return JsonResponse(describe(request))


@csrf_exempt
def sizes(request: HttpRequest) -> JsonResponse:
    """Read each file's size, digest and content, never its path (a file in memory stays there)."""
    return JsonResponse(
        {
            key: {
                "size": f.size,
                "sha256": f.sha256,
                "content_sha256": hashlib.sha256(f.read()).hexdigest(),
                "in_memory": f.in_memory,
            }
            for key, f in request.FILES.items()
        }
    )


@csrf_exempt
def discard_then_keep(request: HttpRequest) -> JsonResponse:
    upload = request.FILES["file"]
    upload.discard()
    upload.keep()
    return JsonResponse({})


@csrf_exempt
def explode(request: HttpRequest) -> HttpResponse:
    request.FILES  # noqa: B018
    raise RuntimeError("the view failed after the upload")


@csrf_exempt
def persist(request: HttpRequest) -> JsonResponse:
    upload = request.FILES["file"]
    return JsonResponse({"name": upload.persist("persisted/" + upload.name)})


@csrf_exempt
def read_close_persist(request: HttpRequest) -> JsonResponse:
    """Read the file's head in a ``with`` block (which closes it), then persist it."""
    upload = request.FILES["file"]
    with upload.open("rb") as fh:
        head = fh.read(4)
    return JsonResponse({"head": head.hex(), "name": upload.persist("persisted/" + upload.name)})


@csrf_exempt
def persist_every(request: HttpRequest) -> JsonResponse:
    """Persist every file under its own (client-given) name."""
    return JsonResponse(
        {
            "files": [
                {"temp": f.temporary_file_path(), "name": f.persist(f.name)}
                for f in request.FILES.values()
            ]
        }
    )


@csrf_exempt
def keep(request: HttpRequest) -> JsonResponse:
    upload = request.FILES["file"]
    upload.keep(ttl=float(request.GET.get("ttl", 60)))
    return JsonResponse({"id": str(upload.temp_upload.pk)})


@csrf_exempt
def model_save(request: HttpRequest) -> JsonResponse:
    doc = Document(file=request.FILES["file"])
    doc.save()
    return JsonResponse({"name": doc.file.name})


@csrf_exempt
def storage_save(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"name": default_storage.save("direct/x.bin", request.FILES["file"])})


class DocumentForm(forms.ModelForm):
    class Meta:
        model = Document
        fields = ["file"]

    def clean_file(self) -> object:
        upload = self.cleaned_data["file"]
        if not upload.name.endswith(".txt"):
            raise forms.ValidationError("Only .txt files are accepted.")
        return upload


@csrf_exempt
def model_form(request: HttpRequest) -> JsonResponse:
    form = DocumentForm(request.POST, request.FILES)
    if not form.is_valid():
        return JsonResponse({"errors": json.loads(form.errors.as_json())}, status=400)
    doc = form.save()
    return JsonResponse({"name": doc.file.name})


@csrf_exempt
def persist_then_rollback(request: HttpRequest) -> JsonResponse:
    upload = request.FILES["file"]
    try:
        with transaction.atomic():
            name = upload.persist("rolledback/" + upload.name)
            raise ValueError(name)
    except ValueError as exc:
        return JsonResponse({"name": str(exc)})


def csrf_protected(request: HttpRequest) -> JsonResponse:
    return JsonResponse(describe(request))


@csrf_exempt
@validate_uploads(AllowedContentTypes(["image/png"]), inherit=False)
def png_only(request: HttpRequest) -> JsonResponse:
    return JsonResponse(describe(request))


@csrf_exempt
@validate_uploads(AllowedExtensions(["txt"]))
def txt_and_project_rules(request: HttpRequest) -> JsonResponse:
    return JsonResponse(describe(request))


@validate_uploads(AllowedContentTypes(["image/png"]), inherit=False)
def png_only_csrf(request: HttpRequest) -> JsonResponse:
    return JsonResponse(describe(request))


@csrf_exempt
@validate_uploads(ExpectedDigest(field="sha256"))
def digest_field(request: HttpRequest) -> JsonResponse:
    return JsonResponse(describe(request))


@csrf_exempt
def promote(request: HttpRequest) -> JsonResponse:
    upload = request.FILES["file"]
    return JsonResponse({"id": promote_later(upload, "promoted/" + upload.name)})


class DRFUpload(APIView):
    """The body is first parsed by Django REST framework's MultiPartParser."""

    parser_classes = [MultiPartParser]
    authentication_classes: list[type] = []
    permission_classes: list[type] = []

    def post(self, request: object) -> Response:
        files = request.data.getlist("file")  # type: ignore[attr-defined]
        return Response({"file": [{"name": f.name, "size": f.size} for f in files]})


#: parse_then_wait() sets PARSED once it has the files, then waits for RELEASE.
PARSED = threading.Event()
RELEASE = threading.Event()


@csrf_exempt
def parse_then_wait(request: HttpRequest) -> JsonResponse:
    """Read the files, then hold the request open (for a client disconnecting meanwhile)."""
    files = describe(request)
    PARSED.set()
    RELEASE.wait(timeout=30)
    return JsonResponse(files)


#: read_slowly() waits on PAUSE after its first read, then calls RECEIVED_BY_NOW[0]().
PAUSE = threading.Event()
#: A callable the test sets: how many body bytes the server had received by then.
RECEIVED_BY_NOW: list = []


@csrf_exempt
def read_slowly(request: HttpRequest) -> JsonResponse:
    """Read 16 KiB, wait until the test lets go, then read the rest (for backpressure)."""
    first = request.read(16384)
    PAUSE.wait(timeout=30)
    received_by_then = RECEIVED_BY_NOW[0]() if RECEIVED_BY_NOW else None
    rest = request.read()
    return JsonResponse(
        {"length": len(first) + len(rest), "received_while_paused": received_by_then}
    )


@csrf_exempt
def body_length(request: HttpRequest) -> JsonResponse:
    """A non-form body read whole (request.body), as a JSON API view does."""
    return JsonResponse(
        {"length": len(request.body), "sha256": hashlib.sha256(request.body).hexdigest()}
    )


@csrf_exempt
async def accept_async(request: HttpRequest) -> JsonResponse:
    """An async view that reads request.FILES itself."""
    return JsonResponse(describe(request))


@csrf_exempt
@validate_uploads(AllowedExtensions(["txt"]))
async def txt_async(request: HttpRequest) -> JsonResponse:
    """An async view with its own validators."""
    return JsonResponse(describe(request))


def refusal_page(request: HttpRequest, refusal: Exception) -> HttpResponse:
    """A project's page for refused uploads (``TEMPSTORE_REFUSAL_VIEW``)."""
    return HttpResponse(f"<p class=refusal>{refusal}</p>", status=200)


@csrf_exempt
def claim_tus(request: HttpRequest, upload_id: str) -> HttpResponse:
    """Claim a finished tus upload; ?action=persist|keep|discard|promote, or let the request end."""
    from django_tempstore.tus import claim
    from django_tempstore.tus.uploads import ClaimError

    try:
        upload = claim(request, upload_id)
    except ClaimError as exc:
        return JsonResponse({"error": exc.message}, status=exc.status)
    action = request.GET.get("action", "")
    result: dict[str, object] = {"size": upload.size, "sha256": upload.sha256}
    if action == "persist":
        result["name"] = upload.persist("tus/" + (upload.name or "upload"))
    elif action == "keep":
        upload.keep()
    elif action == "discard":
        upload.discard()
    elif action == "promote":
        result["id"] = promote_later(upload, "tus/" + (upload.name or "upload"))
    return JsonResponse(result)


def metrics(request: HttpRequest) -> HttpResponse:
    from django_tempstore.metrics import metrics_view

    return metrics_view(request)
