"""``manage.py sweep_temp``: run the sweep once (cron, container entrypoint, server start)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_tempstore.conf import conf
from django_tempstore.sweep import KIND_LABELS, sweep


class Command(BaseCommand):
    help = (
        "Delete expired, stale and orphaned django-tempstore temp files and rows, "
        "then correct the quota counter."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Report what would be deleted without deleting anything.",
        )
        parser.add_argument(
            "--startup",
            action="store_true",
            help=(
                "Also judge by process id alone the rows that carry no process "
                "identity (every sweep removes this host's uploads whose process is "
                "gone). Run it when the server starts."
            ),
        )
        parser.add_argument(
            "--older-than",
            type=float,
            metavar="SECONDS",
            default=None,
            help=(
                "Treat heartbeats and orphan files older than SECONDS as dead "
                "(overrides TEMPSTORE_STALE_AFTER and TEMPSTORE_ORPHAN_GRACE). "
                "At least twice TEMPSTORE_HEARTBEAT_INTERVAL."
            ),
        )

    def handle(
        self,
        *,
        dry_run: bool,
        startup: bool,
        older_than: float | None,
        verbosity: int,
        **options: Any,
    ) -> None:
        if older_than is not None and older_than < 0:
            raise CommandError("--older-than must be a number of seconds, 0 or more.")
        # A live upload heartbeats once per interval at best: below two intervals,
        # the sweep would fail uploads that are still being received.
        floor = 2 * conf.HEARTBEAT_INTERVAL.total_seconds()
        if older_than is not None and older_than < floor:
            raise CommandError(
                f"--older-than {older_than:g} would delete uploads still being received: "
                f"a live upload's heartbeat is only written every "
                f"TEMPSTORE_HEARTBEAT_INTERVAL ({floor / 2:g} s). "
                f"Use {floor:g} seconds or more."
            )
        verb = "Would delete" if dry_run else "Deleted"

        def on_item(kind: str, name: str, nbytes: int) -> None:
            if verbosity >= 2:
                self.stdout.write(f"{verb} {KIND_LABELS[kind]} {name} ({nbytes} bytes)")

        try:
            report = sweep(
                dry_run=dry_run,
                startup=startup,
                older_than=None if older_than is None else timedelta(seconds=older_than),
                trigger="startup" if startup else "command",
                on_item=on_item,
            )
        except Exception as exc:
            raise CommandError(f"The sweep failed: {exc}") from exc

        if verbosity >= 1:
            self.stdout.write(report.summary())
        if verbosity >= 2 and report.foreign:
            self.stderr.write(
                f"Left {report.foreign} entr{'ies' if report.foreign != 1 else 'y'} in the temp "
                f"dir that are not django-tempstore temp files (symlinks, directories or other "
                f"names), e.g. {', '.join(report.foreign_examples[:5])}."
            )
        if verbosity >= 3:
            for kind, label in KIND_LABELS.items():
                self.stdout.write(f"  {label}: {report.counts[kind]} ({report.bytes[kind]} bytes)")
            self.stdout.write(f"  quota drift: {report.quota_drift} bytes")
