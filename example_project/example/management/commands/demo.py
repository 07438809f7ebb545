"""``manage.py demo``: set the example site up and serve it, in one command."""

from __future__ import annotations

import os
import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

from django_tempstore.sweep import sweep

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
        call_command("migrate", interactive=False, verbosity=max(0, verbosity - 1))
        password = self.demo_admin()
        # What a previous run left behind (a killed server, expired uploads) goes now.
        report = sweep(startup=True, trigger="startup")
        host, _, port = addrport.rpartition(":")
        base = f"http://{host or '127.0.0.1'}:{port}/"
        self.stdout.write(
            self.style.SUCCESS("django-tempstore example site\n")
            + f"  site:     {base}\n"
            + f"  admin:    {base}admin/\n"
            + f"  login:    {USERNAME}\n"
            + f"  password: {password}\n"
            + f"  startup sweep: {report.summary()}\n"
        )
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
