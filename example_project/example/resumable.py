"""The example page's resumable path: the browser sends each file through tus, then here."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.utils.datastructures import MultiValueDict
from django.views.decorators.http import require_POST

from django_tempstore.tus import claim
from django_tempstore.tus.uploads import ClaimError

from .forms import ImageUploadForm
from .views import persist_all


@require_POST
def finish(request: HttpRequest) -> JsonResponse:
    """Claim the finished tus uploads named by ``upload`` (their URLs), validate, persist."""
    files = []
    for url in request.POST.getlist("upload"):
        try:
            files.append(claim(request, url.rstrip("/").rpartition("/")[2]))
        except ClaimError as exc:
            # The claimed ones so far are discarded at the end of this request.
            return JsonResponse({"errors": [str(exc.message)]}, status=exc.status)
    form = ImageUploadForm({}, MultiValueDict({"files": files}))
    if not form.is_valid():
        errors = [str(e) for errors in form.errors.values() for e in errors]
        return JsonResponse({"errors": errors}, status=422)
    saved = persist_all(form.cleaned_data["files"])
    return JsonResponse({"saved": saved}, status=201)


def tus_client(request: HttpRequest) -> dict[str, bool]:
    """Context processor: whether tus-js-client is installed (``npm ci``) and served."""
    from django.conf import settings

    return {"tus_client": bool(getattr(settings, "EXAMPLE_TUS_CLIENT", False))}
