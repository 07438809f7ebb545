"""Benchmarks of django-tempstore against Django's stock upload handlers (never run as tests)."""
