from __future__ import annotations

import json
import uuid
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from django.conf import settings
from django.db import connections, models
from django.db.models.expressions import RawSQL
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from .conf import conf

if TYPE_CHECKING:
    from django.core.files.storage import Storage


class State(models.TextChoices):
    RECEIVING = "receiving", _("receiving")
    COMPLETE = "complete", _("complete")
    KEPT = "kept", _("kept")
    PERSISTED = "persisted", _("persisted")
    DISCARDED = "discarded", _("discarded")
    FAILED = "failed", _("failed")
    QUARANTINED = "quarantined", _("quarantined")


PENDING_STATES = (State.RECEIVING, State.COMPLETE, State.KEPT)
TERMINAL_STATES = (State.PERSISTED, State.DISCARDED, State.FAILED, State.QUARANTINED)


@dataclass(frozen=True)
class Transition:
    """A declared change of a row's state: from any of ``sources`` to ``target``.

    ``target`` None keeps the state (a write that is only allowed in ``sources``,
    such as a heartbeat or a later expiry).
    """

    name: str
    sources: frozenset[State]
    target: State | None


def _declare(name: str, sources: Iterable[State], target: State | None) -> Transition:
    return Transition(name, frozenset(sources), target)


class Transitions:
    """Every state change a ``TempUpload`` may make; nothing else writes ``state``.

    No transition enters a pending state from a terminal one, and every
    transition out of the pending states is a conditional UPDATE on them, so a
    row leaves the pending states exactly once. ``UNDO`` (a persist whose
    transaction rolled back) goes from one terminal state to another.
    """

    HEARTBEAT = _declare("heartbeat", PENDING_STATES, None)
    COMPLETE = _declare("complete", [State.RECEIVING], State.COMPLETE)
    KEEP = _declare("keep", [State.COMPLETE, State.KEPT], State.KEPT)
    EXTEND = _declare("extend", [State.COMPLETE, State.KEPT], None)
    PERSIST = _declare("persist", [State.COMPLETE, State.KEPT], State.PERSISTED)
    DISCARD = _declare("discard", PENDING_STATES, State.DISCARDED)
    FAIL = _declare("fail", PENDING_STATES, State.FAILED)
    QUARANTINE = _declare("quarantine", PENDING_STATES, State.QUARANTINED)
    UNDO = _declare("undo", [State.PERSISTED], State.DISCARDED)

    ALL: tuple[Transition, ...] = (
        HEARTBEAT,
        COMPLETE,
        KEEP,
        EXTEND,
        PERSIST,
        DISCARD,
        FAIL,
        QUARANTINE,
        UNDO,
    )


def allowed_sources() -> dict[State, frozenset[State]]:
    """For each state, the states a row may move to it from (the table, by target)."""
    table: dict[State, frozenset[State]] = {state: frozenset() for state in State}
    for transition in Transitions.ALL:
        target = transition.target
        if target is not None:
            table[target] = table[target] | transition.sources
    return table


class TempUploadQuerySet(models.QuerySet["TempUpload"]):
    def pending(self) -> TempUploadQuerySet:
        """Rows whose temp file still exists on purpose."""
        return self.filter(state__in=PENDING_STATES)

    def pending_row(self, pk: Any) -> TempUploadQuerySet:
        """The row ``pk`` while it is pending: a conditional UPDATE on it fails once closed."""
        return self.filter(pk=pk, state__in=PENDING_STATES)

    def pending_names(self, names: Collection[str]) -> set[str]:
        """Which of ``names`` have a pending row (the sweep asks this for thousands at once).

        One statement with the names as a single JSON parameter on PostgreSQL
        and SQLite: building and binding thousands of ``IN`` parameters costs
        more than the lookup itself. Other databases get the ``IN``.
        """
        if not names:
            return set()
        connection = connections[self.db]
        quote = connection.ops.quote_name
        column = f"{quote(self.model._meta.db_table)}.{quote(str(TempUpload.name.field.column))}"
        if connection.vendor == "postgresql":
            elements = "SELECT json_array_elements_text(%s::json)"
        elif connection.vendor == "sqlite" and connection.features.supports_json_field:
            elements = "SELECT value FROM json_each(%s)"  # JSON1, built in since 3.38
        else:
            # In slices: some databases bind at most ~2000 parameters a statement.
            listed, step = list(names), connection.features.max_query_params or 2000
            found: set[str] = set()
            for start in range(0, len(listed), step):
                rows = self.pending().filter(name__in=listed[start : start + step])
                found.update(rows.order_by().values_list("name", flat=True))
            return found
        among = RawSQL(
            f"{column} IN ({elements})", (json.dumps(list(names)),), models.BooleanField()
        )
        return set(self.pending().filter(among).order_by().values_list("name", flat=True))

    def terminal(self) -> TempUploadQuerySet:
        return self.filter(state__in=TERMINAL_STATES)

    def in_sources(self, transition: Transition) -> TempUploadQuerySet:
        """The rows ``transition`` may apply to now."""
        return self.filter(state__in=transition.sources)

    def transition(self, transition: Transition, **values: Any) -> int:
        """Apply ``transition`` (and write ``values``) to the rows allowed to take it.

        One conditional UPDATE: of processes racing on a row, exactly one wins.
        Return the number of rows changed (0: none was in an allowed state).
        """
        if "state" in values:
            raise TypeError("Set the state through a declared Transition, not state=.")
        if transition.target is not None:
            values["state"] = transition.target
        return self.in_sources(transition).update(**values)


TempUploadManager = models.Manager.from_queryset(TempUploadQuerySet)


class TempUpload(models.Model):
    """One temp file: written before the file is created, closed when it is gone."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(
        _("temp name"),
        max_length=64,
        unique=True,
        help_text=_("Path of the temp file, relative to TEMPSTORE_DIR."),
    )
    original_name = models.CharField(
        _("client filename"),
        max_length=255,
        blank=True,
        help_text=_("As sent by the client; data only, never used in a path."),
    )
    content_type = models.CharField(_("content type"), max_length=255, blank=True)
    charset = models.CharField(_("charset"), max_length=64, blank=True)
    field_name = models.CharField(_("field name"), max_length=255, blank=True)
    size = models.BigIntegerField(_("size"), default=0)
    reserved = models.BigIntegerField(
        _("reserved bytes"),
        default=0,
        help_text=_("Bytes this upload holds against TEMPSTORE_QUOTA."),
    )
    quota_key = models.CharField(
        _("quota key"),
        max_length=255,
        blank=True,
        help_text=_("The TEMPSTORE_QUOTA_PER_KEY scope this upload reserves in; empty for none."),
    )
    digest_algorithm = models.CharField(_("digest algorithm"), max_length=32, blank=True)
    digest = models.CharField(_("digest"), max_length=128, blank=True)
    state = models.CharField(
        _("state"), max_length=16, choices=State.choices, default=State.RECEIVING
    )
    reason = models.TextField(
        _("reason"),
        blank=True,
        help_text=_("Why the upload failed, was discarded or quarantined."),
    )
    host = models.CharField(_("host"), max_length=255)
    pid = models.IntegerField(_("process id"))
    process_start = models.CharField(
        _("process identity"),
        max_length=128,
        blank=True,
        help_text=_(
            "Boot id, PID namespace and start time of the process: "
            "tells a dead process from a new one with the same id."
        ),
    )
    created_at = models.DateTimeField(_("created"), default=timezone.now)
    updated_at = models.DateTimeField(
        _("updated"),
        default=timezone.now,
        help_text=_("Heartbeat while receiving; last change otherwise."),
    )
    expires_at = models.DateTimeField(_("expires"), null=True, blank=True)
    closed_at = models.DateTimeField(_("closed"), null=True, blank=True)
    persisted_name = models.TextField(_("persisted as"), blank=True)
    persisted_storage = models.CharField(_("persisted to"), max_length=255, blank=True)
    persist_dir = models.TextField(
        _("persisting into"),
        blank=True,
        help_text=_("Intent of a persist in progress: the target directory."),
    )
    persist_part = models.CharField(
        _("persist part file"),
        max_length=255,
        blank=True,
        help_text=_("Intent of a persist in progress: the part file's name in the directory."),
    )
    persist_name = models.TextField(
        _("persisting as"),
        blank=True,
        help_text=_("Intent of a persist in progress: the final name, relative to the storage."),
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("user"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    request_path = models.TextField(_("request path"), blank=True)
    resumable = models.BooleanField(
        _("resumable"),
        default=False,
        help_text=_("Received over the tus protocol, across many requests."),
    )
    upload_length = models.BigIntegerField(
        _("upload length"),
        null=True,
        blank=True,
        help_text=_("Length the client announced; empty while deferred."),
    )
    upload_metadata = models.JSONField(_("upload metadata"), default=dict, blank=True)
    concat = models.CharField(
        _("concatenation"),
        max_length=16,
        blank=True,
        help_text=_('"partial" or "final" for a tus concatenation; empty otherwise.'),
    )
    lock_owner = models.CharField(
        _("locked by"),
        max_length=255,
        blank=True,
        help_text=_("host:pid:token of the request writing to this upload."),
    )
    locked_until = models.DateTimeField(_("locked until"), null=True, blank=True)
    received = models.BigIntegerField(
        _("bytes received"),
        default=0,
        help_text=_(
            "Bytes of a tus upload that have arrived, durable or not (the admin's progress); "
            "size is its durable offset."
        ),
    )

    objects = TempUploadManager()

    class Meta:
        verbose_name = _("temp upload")
        verbose_name_plural = _("temp uploads")
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["state", "updated_at"], name="tempstore_state_updated"),
            models.Index(fields=["state", "expires_at"], name="tempstore_state_expires"),
            models.Index(fields=["host", "state"], name="tempstore_host_state"),
            models.Index(fields=["closed_at"], name="tempstore_closed"),
        ]

    def __str__(self) -> str:
        return self.original_name or self.name

    @property
    def path(self) -> Path:
        """Absolute path of the temp file."""
        return conf.DIR / self.name

    @property
    def is_pending(self) -> bool:
        return self.state in PENDING_STATES

    @property
    def arrived(self) -> int:
        """Bytes received so far: ``size``, or more while a tus PATCH is running."""
        if self.state == State.RECEIVING:
            return max(self.size, self.received)
        return self.size

    def open(self, mode: str = "rb") -> IO[Any]:
        """Open the temp file for reading (for a later step or a Celery task)."""
        from .storage import open_temp

        return open_temp(self.name, mode)

    def persist(self, name: str, storage: Storage | None = None) -> str:
        """Store the file permanently under ``name``; return the final name."""
        from .lifecycle import persist

        return persist(self, name, storage)

    def keep(self, ttl: float | None = None) -> None:
        """Let the file outlive its request until ``ttl`` seconds from now."""
        from .lifecycle import keep

        keep(self, ttl)

    def discard(self, reason: str = "") -> None:
        """Delete the temp file now."""
        from .lifecycle import discard

        discard(self, reason=reason)


class SweepRun(models.Model):
    """What one sweep did, for the admin and for monitoring."""

    started_at = models.DateTimeField(_("started"), default=timezone.now)
    finished_at = models.DateTimeField(_("finished"), null=True, blank=True)
    host = models.CharField(_("host"), max_length=255)
    trigger = models.CharField(_("trigger"), max_length=32)
    dry_run = models.BooleanField(_("dry run"), default=False)
    report = models.JSONField(_("report"), default=dict, blank=True)
    error = models.TextField(_("error"), blank=True)

    class Meta:
        verbose_name = _("sweep run")
        verbose_name_plural = _("sweep runs")
        ordering = ["-started_at"]
        get_latest_by = "started_at"
        indexes = [models.Index(fields=["started_at"], name="tempstore_sweep_started")]

    def __str__(self) -> str:
        return f"{self.trigger} sweep on {self.host} at {self.started_at:%Y-%m-%d %H:%M:%S}"


class QuotaCounter(models.Model):
    """Bytes reserved against ``TEMPSTORE_QUOTA``: one row per quota scope."""

    scope = models.CharField(_("scope"), max_length=255, primary_key=True)
    used = models.BigIntegerField(_("used bytes"), default=0)
    updated_at = models.DateTimeField(_("updated"), default=timezone.now)

    class Meta:
        verbose_name = _("quota counter")
        verbose_name_plural = _("quota counters")

    def __str__(self) -> str:
        return self.scope
