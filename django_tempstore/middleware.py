"""Turns a refused upload into its HTTP answer (409, 413, 415, 422, 503, 507), never a 500."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import Resolver404, get_resolver
from django.utils.module_loading import import_string

from .conf import conf
from .exceptions import UploadRejected
from .handlers import RequestScope

logger = logging.getLogger("django_tempstore")


def rejection_response(request: HttpRequest, exc: UploadRejected) -> HttpResponse:
    """The answer to a refused upload: JSON if the client asks, else the project's
    ``TEMPSTORE_REFUSAL_VIEW`` or a short message; the status is always the refusal's."""
    logger.warning(
        "Upload refused (%s %s) for %s %s: %s",
        exc.status,
        exc.code,
        request.method,
        request.path,
        exc.reason,
    )
    _count_refusal(exc)
    response: HttpResponse
    if "json" in request.headers.get("Accept", ""):
        response = JsonResponse(
            {"error": exc.message, "code": exc.code, "status": exc.status}, status=exc.status
        )
    elif conf.REFUSAL_VIEW:
        # The body is consumed: the view gets the refusal, never request.POST.
        response = import_string(conf.REFUSAL_VIEW)(request, exc)
        response.status_code = exc.status
    else:
        response = HttpResponse(
            exc.message + "\n", content_type="text/plain; charset=utf-8", status=exc.status
        )
    retry_after = exc.retry_after
    if retry_after is None and exc.status in (503, 507):
        retry_after = conf.RETRY_AFTER
    if retry_after is not None:
        response["Retry-After"] = str(retry_after)
    return response


class TempStoreMiddleware:
    """Put it above ``CsrfViewMiddleware``, which may be the first to read the body.

    Wherever the body is parsed (the view, the CSRF check, a DRF parser), a
    refusal raised by the upload handler ends as the same clear answer.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponse | Awaitable[HttpResponse]:
        if self.async_mode:
            return self.__acall__(request)
        return self._answer(request, self.get_response(request))

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        try:
            await _parse_for_async_view(request)
        except UploadRejected as exc:
            return self._answer(request, rejection_response(request, exc))
        return self._answer(request, await self.get_response(request))

    def _answer(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        # A refusal raised where Django turns exceptions into a 400 (the CSRF
        # check, another middleware) was noted on the request by the handler.
        scope = RequestScope.find(request)
        exc = scope.rejection if scope is not None else None
        if exc is not None and response.status_code != exc.status:
            response = rejection_response(request, exc)
        # Closed with the response, after the last byte is sent (WSGI and ASGI).
        response._resource_closers.append(  # type: ignore[attr-defined]
            functools.partial(_close_scope, request)
        )
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, UploadRejected):
            return rejection_response(request, exception)
        return None


def _close_scope(request: HttpRequest) -> None:
    scope = RequestScope.find(request)
    if scope is not None:
        scope.close()


def _count_refusal(exc: UploadRejected) -> None:
    try:
        # Lazy: prometheus_client is an optional extra, metrics a higher layer.
        from .metrics import count_refusal
    except ImportError:
        return
    count_refusal(exc.status, exc.code)


class RefusalLogFilter(logging.Filter):
    """Drop ``django.request``'s traceback for a refusal: ``rejection_response`` logs one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, UploadRejected)


async def _parse_for_async_view(request: HttpRequest) -> None:
    """Read a multipart body bound for an async view, in a thread.

    The upload handler writes rows while the body is parsed; an async view
    reading ``request.FILES`` would do that on the event loop, where the ORM
    refuses to run. The view is resolved first so that the handler finds its
    ``@validate_uploads`` validators.
    """
    if request.method != "POST" or request.content_type != "multipart/form-data":
        return
    try:
        match = get_resolver(getattr(request, "urlconf", None)).resolve(request.path_info)
    except Resolver404:
        return
    if not iscoroutinefunction(match.func):
        return  # A sync view runs in a thread: it parses there, when it wants to.
    request.resolver_match = match

    def parse() -> None:
        request.POST  # noqa: B018  (parses request.FILES too)

    await sync_to_async(parse)()
