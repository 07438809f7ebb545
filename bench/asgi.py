import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")

from django_tempstore.asgi import get_asgi_application  # noqa: E402

application = get_asgi_application()
