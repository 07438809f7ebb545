"""A small site that uses django-tempstore: uploads with progress, validation, the admin.

The Celery app lives in ``example/celery.py`` and is loaded only by the worker and
beat (``celery -A example``), so the site itself runs without Celery installed.
"""
