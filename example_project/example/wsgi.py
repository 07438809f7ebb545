"""WSGI entry point: ``gunicorn example.wsgi`` from ``example_project/``."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example.settings")
application = get_wsgi_application()
