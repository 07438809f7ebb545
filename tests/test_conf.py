"""Settings are read at use time: a cached value never outlives a change."""

from __future__ import annotations

from django.test import override_settings

from django_tempstore.conf import conf


def test_a_changed_setting_is_seen_at_its_next_use(settings):
    assert conf.QUOTA is None  # Read, and remembered.

    settings.TEMPSTORE_QUOTA = 5

    assert conf.QUOTA == 5
    del settings.TEMPSTORE_QUOTA
    assert conf.QUOTA is None


def test_override_settings_is_undone_at_its_end():
    with override_settings(TEMPSTORE_MAX_MEMORY_SIZE=0):
        assert conf.MAX_MEMORY_SIZE == 0
    with override_settings(FILE_UPLOAD_MAX_MEMORY_SIZE=1234):
        assert conf.MAX_MEMORY_SIZE == 0  # tests/settings.py turns the memory path off.
        with override_settings(TEMPSTORE_MAX_MEMORY_SIZE=None):
            assert conf.MAX_MEMORY_SIZE == 1234
    assert conf.MAX_MEMORY_SIZE == 0
