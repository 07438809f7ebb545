"""Public signals. Each is sent with ``sender=TempUpload`` and ``upload=<TempUpload>``.

A file held in memory (``TEMPSTORE_MAX_MEMORY_SIZE``) sends none until it
spills to a temp file, which sends ``upload_received``.

- ``upload_received``: the file is complete on disk.
- ``upload_persisted``: the file was stored permanently; kwargs ``name`` (the
  final name) and ``storage`` (the Storage it went to, None when a Django
  storage moved the file itself). Inside a transaction it is sent on commit,
  and never if the transaction rolls back.
- ``upload_discarded``: the temp file was deleted without being persisted;
  kwarg ``reason`` (a short text, "" for the end of a request).
- ``upload_failed``: the upload was aborted while receiving; kwarg ``reason``.
- ``upload_rejected``: a validator refused the upload; kwargs ``reason`` and
  ``status`` (the HTTP status answered).
- ``upload_quarantined``: a scanner found the file infected; kwargs ``reason``
  and ``signature``.
"""

from __future__ import annotations

from django.dispatch import Signal

upload_received = Signal()
upload_persisted = Signal()
upload_discarded = Signal()
upload_failed = Signal()
upload_rejected = Signal()
upload_quarantined = Signal()
