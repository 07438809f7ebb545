"""The digest computed in a helper thread equals hashlib's, and its thread always ends."""

from __future__ import annotations

import gc
import hashlib
import os
import threading

import pytest

from django_tempstore.handlers import OverlappedHash

MiB = 1024 * 1024


def digest_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "tempstore-digest"]


@pytest.mark.parametrize("size", [0, 1, MiB, OverlappedHash.INLINE_BYTES, 9 * MiB + 7])
def test_digest_equals_hashlib(size):
    data = os.urandom(size)
    digest = OverlappedHash("sha256")
    for offset in range(0, size, MiB):
        digest.update(data[offset : offset + MiB])
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()
    assert digest_threads() == []


def test_small_file_starts_no_thread():
    digest = OverlappedHash("sha256")
    digest.update(b"x" * MiB)
    assert digest_threads() == []


def test_abandoned_digest_stops_its_thread():
    digest = OverlappedHash("sha256")
    for _ in range(6):
        digest.update(b"x" * MiB)
    (thread,) = digest_threads()
    del digest
    gc.collect()
    thread.join(timeout=10)
    assert not thread.is_alive()


def test_joined_state_goes_on_in_a_new_digest_threaded_from_the_first_byte():
    data = os.urandom(3 * MiB + 5)
    first = OverlappedHash("sha256", inline=0)
    first.update(data[:MiB])
    assert len(digest_threads()) == 1
    state = first.join()
    assert digest_threads() == []
    second = OverlappedHash("sha256", state=state, inline=0)
    for offset in range(MiB, len(data), MiB):
        second.update(data[offset : offset + MiB])
    assert second.hexdigest() == hashlib.sha256(data).hexdigest()
    assert digest_threads() == []
