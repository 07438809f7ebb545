"""Admin pages: pending temp uploads first, the store's usage, and the sweep history."""

from __future__ import annotations

import json
import logging
import uuid
from datetime import datetime, timedelta
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import display_for_value
from django.core.exceptions import PermissionDenied
from django.db.models import Case, IntegerField, Q, QuerySet, Value, When
from django.db.models.expressions import Combinable
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.timesince import timesince
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from . import lifecycle, quota, sweep
from .conf import conf
from .models import PENDING_STATES, State, SweepRun, TempUpload, Transitions
from .units import binary_size

logger = logging.getLogger("django_tempstore")

#: Rows a state column sorts by: pending uploads first, then the history.
PENDING_RANK = Case(
    When(state__in=PENDING_STATES, then=Value(0)),
    default=Value(1),
    output_field=IntegerField(),
)


def in_flight(now: datetime | None = None) -> Q:
    """Uploads a live request is still writing or handling: never deleted from the admin."""
    now = timezone.now() if now is None else now
    return Q(state__in=(State.RECEIVING, State.COMPLETE), updated_at__gt=now - conf.STALE_AFTER)


def extend_expiry(rows: QuerySet[TempUpload], by: timedelta) -> int:
    """Push the expiry of complete and kept uploads ``by`` further; return how many moved.

    Each row moves from ``max(expires_at, now)``, with an UPDATE conditional on its
    state, so a row that a sweep or a request closes meanwhile is left alone.
    """
    now = timezone.now()
    extended = 0
    for upload in rows.filter(state__in=Transitions.EXTEND.sources):
        start = max(upload.expires_at or now, now)
        extended += lifecycle.extend(upload, start + by)
    return extended


def delete_uploads(rows: QuerySet[TempUpload], reason: str) -> tuple[int, int]:
    """Delete the temp files and rows of ``rows``, except those in flight.

    Return (deleted, skipped). A pending row is discarded first (file removed,
    quota released, ``upload_discarded`` sent), then the row is deleted.
    """
    now = timezone.now()
    skipped = rows.filter(in_flight(now)).count()
    deleted = 0
    for upload in rows.exclude(in_flight(now)).using(conf.DATABASE):
        if upload.is_pending:
            lifecycle.discard(upload, reason=reason)
        deleted += TempUpload.objects.using(conf.DATABASE).filter(pk=upload.pk).delete()[0]
    return deleted, skipped


def human_duration(delta: timedelta) -> str:
    return timesince(timezone.now() - delta, timezone.now())


#: The most rows progress_view() answers about at once.
PROGRESS_ROWS = 200


def size_text(upload: TempUpload) -> str:
    """The size column's text: received so far (of the declared length) while receiving."""
    if upload.state != State.RECEIVING:
        return binary_size(upload.size)
    arrived = upload.arrived
    if not upload.upload_length:
        return _("%(size)s received") % {"size": binary_size(arrived)}
    return _("%(size)s of %(length)s (%(percent)d\xa0%%)") % {
        "size": binary_size(arrived),
        "length": binary_size(upload.upload_length),
        "percent": min(100, arrived * 100 // upload.upload_length),
    }


@admin.register(TempUpload)
class TempUploadAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = [
        "client_filename",
        "human_size",
        "state_label",
        "age",
        "expiry",
        "host",
        "user",
        "request_path",
    ]
    readonly_fields = ["human_size", "human_reserved", "expiry"]
    list_filter = ["state", "host"]
    search_fields = ["original_name", "name", "^digest"]
    date_hierarchy = "created_at"
    list_select_related = ["user"]
    actions = ["delete_now", "extend_expiry", "sweep_now"]

    class Media:
        # Refreshes the size of receiving rows in place (list and detail pages).
        js = ["django_tempstore/admin/progress.js"]

    fieldsets = [
        (
            None,
            {
                "fields": [
                    "original_name",
                    "state",
                    "reason",
                    "human_size",
                    "human_reserved",
                    "digest",
                ]
            },
        ),
        (
            _("Times"),
            {"fields": ["created_at", "updated_at", "expiry", "closed_at"]},
        ),
        (
            _("Origin"),
            {
                "fields": [
                    "host",
                    "pid",
                    "user",
                    "request_path",
                    "field_name",
                    "content_type",
                    "charset",
                ]
            },
        ),
        (
            _("Storage"),
            {"fields": ["name", "digest_algorithm", "persisted_name", "persisted_storage"]},
        ),
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[TempUpload]:
        # Annotated before ordering, which sorts on the annotation.
        rows = TempUpload.objects.using(conf.DATABASE).annotate(pending_rank=PENDING_RANK)
        return rows.order_by(*self.get_ordering(request))

    def get_ordering(self, request: HttpRequest) -> list[str | Combinable]:
        return ["pending_rank", "-created_at"]

    # Read-only: rows change only through the lifecycle. The change permission
    # is still asked for the list, so that "extend expiry" can require it.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: TempUpload | None = None) -> bool:
        return obj is None and super().has_change_permission(request)

    def has_delete_permission(self, request: HttpRequest, obj: TempUpload | None = None) -> bool:
        # Deleting a row alone would orphan its file: "delete now" does both.
        return obj is None and super().has_delete_permission(request)

    def get_actions(self, request: HttpRequest, *args: Any, **kwargs: Any) -> dict[str, Any]:
        # *args: Django 6.1 added ``action_location``.
        actions = super().get_actions(request, *args, **kwargs)
        actions.pop("delete_selected", None)
        return actions

    @admin.display(description=_("client filename"), ordering="original_name")
    def client_filename(self, obj: TempUpload) -> str:
        return obj.original_name or obj.name

    @admin.display(description=_("size"), ordering="size")
    def human_size(self, obj: TempUpload) -> str:
        # While receiving, ``arrived`` is the bytes received so far (recorded at
        # every 4 MiB block and heartbeat): a bar against the declared length,
        # which progress.js refreshes from progress_view() until it is done.
        if obj.state != State.RECEIVING:
            return binary_size(obj.size)
        if not obj.upload_length:
            inner = format_html('<span class="tempstore-received">{}</span>', size_text(obj))
        else:
            inner = format_html(
                '<progress class="tempstore-progress" value="{}" max="{}"></progress> '
                '<span class="tempstore-received">{}</span>',
                obj.arrived,
                obj.upload_length,
                size_text(obj),
            )
        return format_html(
            '<span class="tempstore-live" data-tempstore-upload="{}" '
            'data-tempstore-state="{}" data-tempstore-progress-url="{}">{}</span>',
            obj.pk,
            obj.state,
            self.progress_url(),
            inner,
        )

    @admin.display(description=_("reserved"), ordering="reserved")
    def human_reserved(self, obj: TempUpload) -> str:
        return binary_size(obj.reserved)

    @admin.display(description=_("expires at"), ordering="expires_at")
    def expiry(self, obj: TempUpload) -> str:
        # A terminal row never expires: TEMPSTORE_HISTORY removes it.
        if obj.is_pending and obj.expires_at is not None:
            # Formatted here: the detail page would show a bare str(datetime).
            return display_for_value(obj.expires_at, "—")
        return "—"

    @admin.display(description=_("state"), ordering="pending_rank")
    def state_label(self, obj: TempUpload) -> str:
        return format_html(
            '<span class="tempstore-state tempstore-state-{}" title="{}">{}</span>',
            obj.state,
            obj.reason,
            obj.get_state_display(),
        )

    @admin.display(description=_("age"), ordering="-created_at")
    def age(self, obj: TempUpload) -> str:
        return timesince(obj.created_at)

    @admin.action(description=_("Delete now (temp file and row)"), permissions=["delete"])
    def delete_now(self, request: HttpRequest, queryset: QuerySet[TempUpload]) -> None:
        user = getattr(request.user, "get_username", lambda: "")()
        deleted, skipped = delete_uploads(queryset, reason=f"deleted in the admin by {user}")
        self.message_user(
            request,
            ngettext(
                "Deleted %(count)d temp upload and its file.",
                "Deleted %(count)d temp uploads and their files.",
                deleted,
            )
            % {"count": deleted},
            messages.SUCCESS,
        )
        if skipped:
            self.message_user(
                request,
                ngettext(
                    "Skipped %(count)d upload that a request is still handling; "
                    "try again when it is done.",
                    "Skipped %(count)d uploads that requests are still handling; "
                    "try again when they are done.",
                    skipped,
                )
                % {"count": skipped},
                messages.WARNING,
            )

    @admin.action(description=_("Extend expiry by TEMPSTORE_KEEP_TTL"), permissions=["change"])
    def extend_expiry(self, request: HttpRequest, queryset: QuerySet[TempUpload]) -> None:
        by = conf.KEEP_TTL
        extended = extend_expiry(queryset, by)
        self.message_user(
            request,
            ngettext(
                "Extended the expiry of %(count)d upload by %(duration)s.",
                "Extended the expiry of %(count)d uploads by %(duration)s.",
                extended,
            )
            % {"count": extended, "duration": human_duration(by)},
            messages.SUCCESS,
        )
        others = queryset.count() - extended
        if others:
            self.message_user(
                request,
                ngettext(
                    "%(count)d selected upload is not complete or kept; its expiry was left alone.",
                    "%(count)d selected uploads are not complete or kept; "
                    "their expiry was left alone.",
                    others,
                )
                % {"count": others},
                messages.WARNING,
            )

    @admin.action(
        description=_("Sweep now (the whole temp store, not only the selection)"),
        permissions=["delete"],
    )
    def sweep_now(self, request: HttpRequest, queryset: QuerySet[TempUpload]) -> HttpResponse:
        return self.sweep_confirmation(request)

    def get_urls(self) -> list[URLPattern]:
        prefix = f"{self.opts.app_label}_{self.opts.model_name}"
        view = self.admin_site.admin_view
        return [
            path("sweep/", view(self.sweep_view), name=f"{prefix}_sweep"),
            path("progress/", view(self.progress_view), name=f"{prefix}_progress"),
            *super().get_urls(),
        ]

    def progress_url(self) -> str:
        return reverse(
            f"admin:{self.opts.app_label}_{self.opts.model_name}_progress",
            current_app=self.admin_site.name,
        )

    def progress_view(self, request: HttpRequest) -> JsonResponse:
        """JSON for progress.js: the rows named by ``?id=`` (any state), else the pending ones.

        Each row: ``id``, ``state``, ``state_label``, ``size`` (bytes received so
        far while receiving), ``upload_length`` (declared, or null) and ``text``
        (what the size column shows).
        """
        if not self.has_view_permission(request):
            raise PermissionDenied
        # The admin's own queryset: a subclass that narrows the list narrows this too.
        rows = (
            self.get_queryset(request)
            .using(conf.DATABASE)
            .only("id", "state", "size", "received", "upload_length")
        )
        ids = request.GET.getlist("id")[:PROGRESS_ROWS]
        if ids:
            try:
                rows = rows.filter(pk__in=[uuid.UUID(value) for value in ids])
            except ValueError:
                return JsonResponse({"error": "id must be an upload id"}, status=400)
        else:
            rows = rows.filter(state__in=PENDING_STATES).order_by("-created_at")[:PROGRESS_ROWS]
        uploads = [
            {
                "id": str(row.pk),
                "state": row.state,
                "state_label": row.get_state_display(),
                "size": row.arrived,
                "upload_length": row.upload_length,
                "text": size_text(row),
            }
            for row in rows
        ]
        return JsonResponse({"uploads": uploads})  # admin_view() adds never_cache

    def sweep_url(self) -> str:
        return reverse(
            f"admin:{self.opts.app_label}_{self.opts.model_name}_sweep",
            current_app=self.admin_site.name,
        )

    def sweep_view(self, request: HttpRequest) -> HttpResponse:
        """GET: what a sweep would do (a dry run). POST with ``post=yes``: sweep."""
        if not self.has_delete_permission(request):
            raise PermissionDenied
        if request.method != "POST" or request.POST.get("post") != "yes":
            return self.sweep_confirmation(request)
        report = self.run_sweep(request, dry_run=False)
        if report is not None:
            self.message_user(
                request,
                ngettext(
                    "Swept the temp store: deleted %(count)d temp file, %(size)s.",
                    "Swept the temp store: deleted %(count)d temp files, %(size)s.",
                    report.total_files,
                )
                % {"count": report.total_files, "size": binary_size(report.total_bytes)},
                messages.SUCCESS,
            )
        return HttpResponseRedirect(self.changelist_url())

    def sweep_confirmation(self, request: HttpRequest) -> HttpResponse:
        """The intermediate page: the dry-run report and a button to sweep for real."""
        report = self.run_sweep(request, dry_run=True)
        if report is None:
            return HttpResponseRedirect(self.changelist_url())
        data = report.as_dict()
        counts, sizes = data.get("counts", {}), data.get("bytes", {})
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": _("Sweep the temp store?"),
            "summary": report.summary(),
            "kinds": [(kind, count, sizes.get(kind, 0)) for kind, count in counts.items()],
            "sweep_url": self.sweep_url(),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/django_tempstore/sweep_confirmation.html", context)

    def run_sweep(self, request: HttpRequest, *, dry_run: bool) -> sweep.SweepReport | None:
        """Sweep; on failure, say so in a message (never a 500) and return None."""
        try:
            # A dry run only shows a page: a GET records nothing (but a failure).
            return sweep.sweep(dry_run=dry_run, trigger="admin", record=not dry_run)
        except Exception as exc:
            # The sweep recorded the error on its SweepRun row before raising.
            logger.exception("django-tempstore's sweep from the admin failed")
            self.message_user(
                request,
                _("The sweep failed: %(error)s. The sweep runs list has the details.")
                % {"error": exc},
                messages.ERROR,
            )
            return None

    def changelist_url(self) -> str:
        return reverse(
            f"admin:{self.opts.app_label}_{self.opts.model_name}_changelist",
            current_app=self.admin_site.name,
        )

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        # Django's "Select temp upload to change" promises edits a read-only list has not.
        context = {"title": _("Temp uploads"), **self.summary_context(), **(extra_context or {})}
        if self.has_delete_permission(request):
            context["sweep_url"] = self.sweep_url()
        return super().changelist_view(request, extra_context=context)

    def summary_context(self) -> dict[str, Any]:
        """The usage summary and the last sweep shown above the list."""
        usage = quota.usage()
        oldest = TempUpload.objects.using(conf.DATABASE).pending().order_by("created_at").first()
        last_sweep = (
            SweepRun.objects.using(conf.DATABASE).filter(dry_run=False).order_by("-started_at")
        ).first()
        return {
            "usage": usage,
            "usage_percent": None if usage.percent is None else round(usage.percent, 1),
            "state_counts": [
                (value, label, usage.counts.get(value, 0)) for value, label in State.choices
            ],
            "oldest_pending": oldest,
            "last_sweep": last_sweep,
            "last_sweep_totals": sweep_totals(last_sweep),
        }


def sweep_totals(run: SweepRun | None) -> dict[str, Any] | None:
    """The file and byte totals of a recorded sweep, when its report has them."""
    if run is None or not isinstance(run.report, dict):
        return None
    files, nbytes = run.report.get("total_files"), run.report.get("total_bytes")
    if files is None and nbytes is None:
        return None
    return {"files": files or 0, "bytes": nbytes or 0}


@admin.register(SweepRun)
class SweepRunAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["started_at", "host", "trigger", "dry_run", "duration", "totals", "failed"]
    list_filter = ["trigger", "dry_run", "host"]
    date_hierarchy = "started_at"
    fields = ["started_at", "finished_at", "host", "trigger", "dry_run", "error", "pretty_report"]
    readonly_fields = fields  # type: ignore[assignment]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: SweepRun | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: SweepRun | None = None) -> bool:
        return False

    @admin.display(description=_("duration"))
    def duration(self, obj: SweepRun) -> str:
        if obj.finished_at is None:
            return "-"
        return f"{(obj.finished_at - obj.started_at).total_seconds():.2f} s"

    @admin.display(description=_("removed"))
    def totals(self, obj: SweepRun) -> str:
        totals = sweep_totals(obj)
        if totals is None:
            return "-"
        return ngettext(
            "%(count)d file, %(size)s", "%(count)d files, %(size)s", totals["files"]
        ) % {"count": totals["files"], "size": binary_size(totals["bytes"])}

    @admin.display(description=_("failed"), boolean=True)
    def failed(self, obj: SweepRun) -> bool:
        return bool(obj.error)

    @admin.display(description=_("report"))
    def pretty_report(self, obj: SweepRun) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.report, indent=2, sort_keys=True))
