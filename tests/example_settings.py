"""The example project's settings on the test database and the test's folders.

Browser tests serve the example site with these, so that the test can check the
rows and files it leaves behind.
"""

import json
import os

from example.settings import *  # noqa: F403

# PASSWORD_HASHERS: users the test makes (MD5, for speed) must log in to the site.
from tests.settings import DATABASES, MEDIA_ROOT, PASSWORD_HASHERS, TEMPSTORE_DIR  # noqa: F401

DEBUG = True  # The example serves its static files and media only with DEBUG.

# A server started by a test may be given extra settings as JSON (as in tests/settings.py).
globals().update(json.loads(os.environ.get("TEMPSTORE_TEST_SETTINGS") or "{}"))
