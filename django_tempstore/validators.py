"""Validators that run while a file streams in, and when it is complete.

A validator refuses an upload by raising an ``UploadRejected`` subclass; the
upload handler then stops reading, deletes the partial file, closes the row as
``failed`` with ``reason`` "rejected: ..." and the middleware answers with the
exception's status (413, 415 or 422).
"""

from __future__ import annotations

import base64
import binascii
import copy
import functools
import hashlib
import re
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import filetype
from asgiref.sync import iscoroutinefunction, sync_to_async
from django.utils.module_loading import import_string
from django.utils.translation import gettext

from . import lifecycle
from .conf import conf
from .exceptions import (
    DigestMismatch,
    FileTooLarge,
    UnsupportedMediaType,
    UploadInfected,
    UploadRejected,
)
from .models import State, TempUpload

if TYPE_CHECKING:
    from django.http import HttpRequest

__all__ = [
    "AllowedContentTypes",
    "AllowedExtensions",
    "ExpectedDigest",
    "MaxSize",
    "UploadValidator",
    "reject",
    "validate_uploads",
]

#: filetype reads at most this many bytes to recognise a format.
SNIFF_BYTES = 8192


class UploadValidator:
    """Base class of upload validators: override any of the hooks.

    Each hook may raise an ``UploadRejected`` subclass to refuse the file. A
    shallow copy of the validator is made for each file, so hooks may keep
    per-file state on ``self`` by assigning attributes; they must not mutate
    objects created in ``__init__`` (a dict, a list): every copy shares those.
    Create such state in ``start()``.
    """

    def start(self, upload: TempUpload, request: HttpRequest | None) -> None:
        """Called when a file part begins, before any byte is written."""

    def chunk(self, upload: TempUpload, data: bytes, offset: int) -> None:
        """Called with each chunk before it is written; ``offset`` is its position."""

    def complete(self, upload: TempUpload, size: int) -> None:
        """Called when the file is complete; ``upload.digest`` is set."""

    def parsed(self, upload: TempUpload, request: HttpRequest) -> None:
        """Called once the whole form is parsed (form fields are readable).

        Only with ``@validate_uploads``: Django never shows form fields to
        upload handlers, so this runs after the body, before the view.
        """


class MaxSize(UploadValidator):
    """Refuse (413) a file larger than ``limit`` bytes, before storing the chunk that crosses it."""

    def __init__(self, limit: int) -> None:
        self.limit = int(limit)

    def chunk(self, upload: TempUpload, data: bytes, offset: int) -> None:
        if offset + len(data) > self.limit:
            raise FileTooLarge(
                gettext("The file is larger than %(limit)s bytes. Send a smaller file.")
                % {"limit": self.limit}
            )


class AllowedExtensions(UploadValidator):
    """Refuse (415) a file whose client filename does not end in one of ``extensions``."""

    def __init__(self, extensions: Iterable[str]) -> None:
        self.extensions = sorted({e.lower().lstrip(".") for e in extensions})

    def start(self, upload: TempUpload, request: HttpRequest | None) -> None:
        _, dot, ext = upload.original_name.rpartition(".")
        if not dot or ext.lower() not in self.extensions:
            allowed = ", ".join("." + e for e in self.extensions)
            raise UnsupportedMediaType(
                gettext(
                    "Files named %(name)s are not accepted here. Send a file ending in %(allowed)s."
                )
                % {"name": repr(upload.original_name), "allowed": allowed}
            )


class AllowedContentTypes(UploadValidator):
    """Refuse (415) a file whose real type, sniffed from its first bytes, is not allowed.

    ``types`` holds MIME types such as ``"image/png"`` or ``"image/*"``. The
    client's ``Content-Type`` is ignored. Content that ``filetype`` does not
    recognise (plain text, CSV, ...) counts as ``application/octet-stream``.
    """

    def __init__(self, types: Iterable[str]) -> None:
        self.types = sorted({t.lower() for t in types})
        self._head = b""
        self._done = False

    def chunk(self, upload: TempUpload, data: bytes, offset: int) -> None:
        if self._done:
            return
        self._head += data[: SNIFF_BYTES - len(self._head)]
        if len(self._head) >= SNIFF_BYTES:
            self._check()

    def complete(self, upload: TempUpload, size: int) -> None:
        if not self._done:
            self._check()

    def _check(self) -> None:
        self._done = True
        kind = filetype.guess_mime(self._head) or "application/octet-stream"
        major = kind.split("/")[0] + "/*"
        if kind not in self.types and major not in self.types:
            raise UnsupportedMediaType(
                gettext(
                    "The file's content is %(kind)s, which is not accepted here. "
                    "Send one of: %(types)s."
                )
                % {"kind": kind, "types": ", ".join(self.types)}
            )


#: RFC 9530 algorithm keys this app can check, with their hashlib names.
DIGEST_ALGORITHMS = {"sha-256": "sha256", "sha-512": "sha512"}
_MEMBER_RE = re.compile(r"\s*([A-Za-z0-9_*.-]+)\s*=\s*:([A-Za-z0-9+/=]*):\s*(?:;[^,]*)?\Z")


def parse_digest_header(value: str) -> dict[str, bytes]:
    """Parse an RFC 9530 ``Content-Digest``/``Repr-Digest`` value: ``{"sha-256": raw}``.

    Raise ``DigestMismatch`` for a value that is not a dictionary of byte sequences.
    """
    digests: dict[str, bytes] = {}
    for member in value.split(","):
        match = _MEMBER_RE.match(member)
        if not match:
            raise DigestMismatch(
                gettext("The digest header is malformed. Send it as sha-256=:<base64 digest>:.")
            )
        try:
            digests[match[1].lower()] = base64.b64decode(match[2], validate=True)
        except binascii.Error as exc:
            raise DigestMismatch(gettext("The digest header's base64 is invalid.")) from exc
    return digests


def parse_digest_field(value: str) -> dict[str, bytes]:
    """Parse a form field: the header syntax, or a hex SHA-256 / SHA-512 digest."""
    value = value.strip()
    if "=:" in value:
        return parse_digest_header(value)
    try:
        raw = bytes.fromhex(value)
    except ValueError as exc:
        raise DigestMismatch(
            gettext(
                "The digest field is malformed. Send a hex SHA-256 digest or sha-256=:<base64>:."
            )
        ) from exc
    algorithm = {32: "sha-256", 64: "sha-512"}.get(len(raw))
    if algorithm is None:
        raise DigestMismatch(gettext("The digest field must be a SHA-256 or SHA-512 digest."))
    return {algorithm: raw}


class ExpectedDigest(UploadValidator):
    """Refuse (422) a file whose content does not match the digest the client sent.

    The digest comes from the ``Content-Digest`` or ``Repr-Digest`` header
    (RFC 9530 syntax, ``sha-256=:<base64>:``, taken as the digest of the file,
    so such a request may carry only one file), and/or from the form field
    ``field`` (checked once the form is parsed, with ``@validate_uploads``).
    ``required=True`` also refuses a file sent without any digest; it is not
    enforced outside a request (``promote()`` re-validating a kept upload).
    """

    HEADERS = ("Content-Digest", "Repr-Digest")

    def __init__(self, *, header: bool = True, field: str | None = None, required: bool = False):
        self.header = header
        self.field = field
        self.required = required
        self._expected: dict[str, bytes] = {}
        self._hashes: dict[str, Any] = {}
        self._in_request = False

    def start(self, upload: TempUpload, request: HttpRequest | None) -> None:
        # New dicts per file: the copies made by FileValidation share __init__'s.
        self._expected, self._hashes = {}, {}
        self._in_request = request is not None
        if not self.header or request is None:
            return
        for name in self.HEADERS:
            value = request.headers.get(name)
            if value:
                self._expected.update(parse_digest_header(value))
        if not self._expected:
            return
        count = getattr(request, "_tempstore_digest_files", 0) + 1
        request._tempstore_digest_files = count  # type: ignore[attr-defined]
        if count > 1:
            raise DigestMismatch(
                gettext(
                    "A digest header covers one file. Send one file per request, "
                    "or each file's digest in a form field."
                )
            )
        known = [a for a in self._expected if a in DIGEST_ALGORITHMS]
        if not known:
            raise DigestMismatch(gettext("Send the digest as sha-256 or sha-512."))
        for algorithm in known:
            if DIGEST_ALGORITHMS[algorithm] != upload.digest_algorithm:
                self._hashes[algorithm] = hashlib.new(DIGEST_ALGORITHMS[algorithm])

    def chunk(self, upload: TempUpload, data: bytes, offset: int) -> None:
        for hasher in self._hashes.values():
            hasher.update(data)

    def complete(self, upload: TempUpload, size: int) -> None:
        if self._expected:
            self._compare(upload, self._expected)
        elif self.required and not self.field and self._in_request:
            # Outside a request (promotion re-validating a kept upload) there is
            # no header to read: the digest was checked while the file streamed.
            raise DigestMismatch(gettext("Send the file's digest in a Content-Digest header."))

    def parsed(self, upload: TempUpload, request: HttpRequest) -> None:
        if not self.field:
            return
        value = request.POST.get(self.field)
        if value:
            self._compare(upload, parse_digest_field(value))
        elif self.required and not self._expected:
            raise DigestMismatch(
                gettext("Send the file's digest in the form field %(field)s.")
                % {"field": repr(self.field)}
            )

    def _compare(self, upload: TempUpload, expected: dict[str, bytes]) -> None:
        for algorithm, raw in expected.items():
            name = DIGEST_ALGORITHMS.get(algorithm)
            if name is None:
                continue
            if name == upload.digest_algorithm and upload.digest:
                actual = bytes.fromhex(upload.digest)
            elif algorithm in self._hashes:
                actual = self._hashes[algorithm].digest()
            else:
                actual = _hash_file(upload, name)
            if actual != raw:
                raise DigestMismatch()


def _hash_file(upload: TempUpload, algorithm: str) -> bytes:
    hasher = hashlib.new(algorithm)
    with upload.open() as fh:
        while data := fh.read(1024 * 1024):
            hasher.update(data)
    return hasher.digest()


def load(entries: Iterable[Any]) -> list[UploadValidator]:
    """Build validators from instances, dotted paths, or ``{"NAME": path, "OPTIONS": {}}``."""
    validators = []
    for entry in entries:
        if isinstance(entry, str):
            entry = import_string(entry)()
        elif isinstance(entry, dict):
            entry = import_string(entry["NAME"])(**entry.get("OPTIONS", {}))
        validators.append(entry)
    return validators


class ViewValidators:
    """What ``@validate_uploads`` attaches to a view and to its requests."""

    def __init__(self, validators: Sequence[Any], inherit: bool) -> None:
        self.validators = list(validators)
        self.inherit = inherit

    def resolve(self) -> list[UploadValidator]:
        own = load(self.validators)
        return load(conf.VALIDATORS) + own if self.inherit else own


def validators_for(request: HttpRequest | None) -> list[UploadValidator]:
    """The validators for ``request``'s files: the view's, else ``TEMPSTORE_VALIDATORS``."""
    chosen = getattr(request, "_tempstore_validators", None)
    if chosen is None:
        # The body may be parsed before the view runs (CsrfViewMiddleware reads
        # request.POST), so look at the resolved view too.
        func = getattr(getattr(request, "resolver_match", None), "func", None)
        chosen = getattr(func, "tempstore_validators", None)
    if chosen is None:
        return load(conf.VALIDATORS)
    return chosen.resolve()  # type: ignore[no-any-return]


class FileValidation:
    """The validators of one file, called by the upload handler."""

    def __init__(
        self, validators: list[UploadValidator], upload: TempUpload, request: HttpRequest | None
    ) -> None:
        self.validators = [copy.copy(v) for v in validators]
        self.upload = upload
        # Weak: the upload (so this) is reachable from the request's files, and a
        # strong reference back would keep a request Django never closed alive.
        self._request = None if request is None else weakref.ref(request)
        upload._tempstore_validation = self  # type: ignore[attr-defined]

    @property
    def request(self) -> HttpRequest | None:
        return None if self._request is None else self._request()

    def start(self) -> None:
        for validator in self.validators:
            validator.start(self.upload, self.request)

    def chunk(self, data: bytes, offset: int) -> None:
        for validator in self.validators:
            validator.chunk(self.upload, data, offset)

    def complete(self, size: int, digest: str) -> None:
        self.upload.size, self.upload.digest = size, digest
        for validator in self.validators:
            validator.complete(self.upload, size)

    def parsed(self, request: HttpRequest) -> None:
        for validator in self.validators:
            validator.parsed(self.upload, request)


def for_file(request: HttpRequest | None, upload: TempUpload) -> FileValidation | None:
    """The validation of a new file, or None when no validator applies."""
    validators = validators_for(request)
    return FileValidation(validators, upload, request) if validators else None


def validate_file(upload: TempUpload, validators: list[UploadValidator]) -> None:
    """Run ``validators`` over a complete temp file (for a kept upload, in a task)."""
    validation = FileValidation(validators, upload, None)
    validation.start()
    offset = 0
    with upload.open() as fh:
        while data := fh.read(conf.CHUNK_SIZE):
            validation.chunk(data, offset)
            offset += len(data)
    for validator in validation.validators:
        validator.complete(upload, offset)


def reject(upload: TempUpload, exc: UploadRejected, *, state: State = State.FAILED) -> bool:
    """Delete a refused upload's file and close it; False if it was already closed.

    An ``UploadInfected`` refusal ends ``quarantined`` (see ``scanners.quarantine``);
    any other ends in ``state`` with ``reason`` "rejected: <message>" and sends
    ``upload_rejected``.
    """
    if isinstance(exc, UploadInfected):
        return lifecycle.quarantine(upload, exc.signature)
    return lifecycle.reject(upload, str(exc.message), exc.status, kept=state == State.DISCARDED)


F = TypeVar("F", bound=Callable[..., Any])


def use_validators(
    request: HttpRequest, validators: Sequence[Any], *, inherit: bool = True
) -> None:
    """Set the validators of ``request``'s uploads; call it before the body is read."""
    request._tempstore_validators = ViewValidators(validators, inherit)  # type: ignore[attr-defined]


def validate_uploads(*validators: Any, inherit: bool = True) -> Callable[[F], F]:
    """Validate this view's uploads with ``validators``.

    With ``inherit=True`` (the default) they run after ``TEMPSTORE_VALIDATORS``;
    with ``inherit=False`` they replace them. Works even when the body is read
    before the view (by ``CsrfViewMiddleware``), since the handler looks the
    view up; validators with a ``parsed`` hook run before the view.
    """
    chosen = ViewValidators(validators, inherit)

    def decorator(view: F) -> F:
        def before(request: HttpRequest) -> None:
            request._tempstore_validators = chosen  # type: ignore[attr-defined]
            # Resolved per call: inherited TEMPSTORE_VALIDATORS may have parsed hooks too.
            if any(type(v).parsed is not UploadValidator.parsed for v in chosen.resolve()):
                _run_parsed_hooks(request)

        if iscoroutinefunction(view):
            # TempStoreMiddleware has already parsed the body in a thread; reading
            # request.FILES (and the parsed hooks' ORM writes) must stay off the loop.
            @functools.wraps(view)
            async def async_wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
                await sync_to_async(before)(request)
                return await view(request, *args, **kwargs)

            async_wrapper.tempstore_validators = chosen  # type: ignore[attr-defined]
            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
            before(request)
            return view(request, *args, **kwargs)

        wrapper.tempstore_validators = chosen  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorator


def _run_parsed_hooks(request: HttpRequest) -> None:
    for files in request.FILES.lists():
        for file in files[1]:
            upload: TempUpload | None = getattr(file, "temp_upload", None)
            validation = getattr(upload, "_tempstore_validation", None)
            if upload is None or validation is None or not upload.is_pending:
                continue
            try:
                validation.parsed(request)
            except UploadRejected as exc:
                file.close()
                reject(upload, exc)
                raise
