"""``manage.py demo``: set the example site up and serve it, in one command."""

from __future__ import annotations

import errno
import os
import secrets
import socket
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_tempstore.sweep import sweep
from django_tempstore.units import binary_size

USERNAME = "demo"


class Command(BaseCommand):
    help = (
        "Migrate the database, create the demo admin login and print it, run a startup "
        "sweep of the temp dir, and serve the site (runserver without autoreload)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "addrport",
            nargs="?",
            default=os.environ.get("DEMO_ADDRPORT", "127.0.0.1:8000"),
            help="Address and port to serve on, as for runserver (default 127.0.0.1:8000, "
            "or the DEMO_ADDRPORT environment variable).",
        )
        parser.add_argument(
            "--no-serve",
            action="store_true",
            help="Set everything up, then exit instead of serving.",
        )

    def handle(self, *, addrport: str, no_serve: bool, verbosity: int, **options: Any) -> None:
        host, port = split_addrport(addrport)
        if not no_serve:
            # Before the login is printed: a banner for a site that never starts
            # would send the user to whatever already listens there.
            check_port_free(host, port)
        call_command("migrate", interactive=False, verbosity=max(0, verbosity - 1))
        password = self.demo_admin()
        # What a previous run left behind (a killed server, expired uploads) goes now.
        report = sweep(startup=True, trigger="startup")
        lines = [self.style.SUCCESS("django-tempstore example site")]
        if no_serve:
            lines.append("  set up; not serving (--no-serve)")
        else:
            base = f"http://{f'[{host}]' if ':' in host else host}:{port}/"
            lines += [f"  site:     {base}", f"  admin:    {base}admin/"]
        lines += [
            f"  login:    {USERNAME}",
            f"  password: {password}",
            f"  startup sweep: {report.summary()}",
            "",
            "Try next:",
        ]
        limit = binary_size(settings.TEMPSTORE_MAX_FILE_SIZE)
        if no_serve:
            lines.append("  - serve the site: python example_project/manage.py demo")
        else:
            lines += [
                f"  - upload a few images on the site (up to {limit} each);",
                f"  - upload a file over {limit}: the page says why it was refused (413);",
                f"  - watch the uploads in the admin: {base}admin/django_tempstore/tempupload/",
            ]
        lines.append(
            "  - sweep the temp dir by hand: python example_project/manage.py sweep_temp --dry-run"
        )
        self.stdout.write("\n".join(lines) + "\n")
        if not no_serve:
            call_command("runserver", addrport, use_reloader=False)

    def demo_admin(self) -> str:
        """Create the demo superuser, or reset its password; return the password.

        A new random password each run unless DEMO_PASSWORD is set, so that a demo
        left listening never has a password that anyone could guess.
        """
        password = os.environ.get("DEMO_PASSWORD") or secrets.token_urlsafe(9)
        user_model = get_user_model()
        user, _ = user_model._default_manager.get_or_create(
            username=USERNAME, defaults={"is_staff": True, "is_superuser": True}
        )
        user.is_staff = user.is_superuser = user.is_active = True
        user.set_password(password)
        user.save()
        return password


def split_addrport(addrport: str) -> tuple[str, int]:
    """``"8000"``, ``"0.0.0.0:8000"`` or ``"[::1]:8000"`` as (host, port), as runserver reads it."""
    host, sep, port = addrport.rpartition(":")
    if not sep:
        host, port = "", addrport
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise CommandError(f"{addrport!r} is not an address and port, e.g. 127.0.0.1:8000.")
    return host.strip("[]") or "127.0.0.1", int(port)


def check_port_free(host: str, port: int) -> None:
    """Raise CommandError if nothing can listen on ``host:port`` (taken, or not ours)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # As runserver binds: a port left in TIME_WAIT is free, a listening one is not.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise CommandError(
                    f"Port {port} on {host} is already in use: stop what listens there, "
                    f"or pick another port, e.g. manage.py demo {host}:{port + 1}"
                ) from None
            raise CommandError(f"Cannot serve on {host}:{port}: {exc.strerror}.") from None
