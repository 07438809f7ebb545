"""Antivirus hook: a ``Scanner`` interface and a ClamAV (``clamd``) implementation."""

from __future__ import annotations

import logging
import socket
import struct
from dataclasses import dataclass
from typing import IO, Any

from django.utils.module_loading import import_string
from django.utils.translation import gettext_lazy as _

from . import lifecycle
from .conf import conf
from .exceptions import ServiceUnavailable, UploadInfected
from .models import TempUpload
from .validators import UploadValidator

logger = logging.getLogger("django_tempstore")


class ScannerError(Exception):
    """The scanner could not give a verdict (unreachable, timed out): try again later."""


@dataclass(frozen=True)
class ScanResult:
    clean: bool
    #: The name of what was found; "" when clean.
    signature: str = ""


class Scanner:
    """Base class: ``scan()`` a readable binary file and return a ``ScanResult``."""

    def scan(self, file: IO[bytes]) -> ScanResult:
        raise NotImplementedError


class ClamAVScanner(Scanner):
    """Stream the file to ``clamd`` with ``INSTREAM``, no extra dependency.

    ``address`` is a unix socket path (default ``/var/run/clamav/clamd.ctl``,
    Debian's) or ``"tcp://host:port"``. Keep clamd's ``StreamMaxLength`` at
    least as large as the biggest file you accept: clamd cuts the stream there.
    """

    def __init__(
        self,
        address: str = "/var/run/clamav/clamd.ctl",
        *,
        timeout: float = 60.0,
        chunk_size: int = 256 * 1024,
    ) -> None:
        self.address = address
        self.timeout = timeout
        self.chunk_size = chunk_size

    def connect(self) -> socket.socket:
        if self.address.startswith("tcp://"):
            host, _, port = self.address[len("tcp://") :].rpartition(":")
            return socket.create_connection((host.strip("[]"), int(port)), self.timeout)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.address)
        except OSError:
            sock.close()
            raise
        return sock

    def scan(self, file: IO[bytes]) -> ScanResult:
        try:
            with self.connect() as sock:
                sock.sendall(b"zINSTREAM\0")
                while data := file.read(self.chunk_size):
                    sock.sendall(struct.pack("!L", len(data)) + data)
                sock.sendall(struct.pack("!L", 0))
                reply = b""
                while not reply.endswith(b"\0") and (part := sock.recv(4096)):
                    reply += part
        except OSError as exc:
            raise ScannerError(f"clamd at {self.address} is unreachable: {exc}") from exc
        return self.parse_reply(reply.rstrip(b"\0").decode("utf-8", "replace"))

    def parse_reply(self, reply: str) -> ScanResult:
        # "stream: OK", "stream: <signature> FOUND" or "... ERROR" (size limit, ...).
        _, _, verdict = reply.partition(": ")
        if verdict == "OK":
            return ScanResult(clean=True)
        if verdict.endswith(" FOUND"):
            return ScanResult(clean=False, signature=verdict[: -len(" FOUND")])
        raise ScannerError(f"clamd answered {reply!r}")

    def ping(self) -> bool:
        """True if clamd answers ``PING``."""
        try:
            with self.connect() as sock:
                sock.sendall(b"zPING\0")
                return sock.recv(16).rstrip(b"\0") == b"PONG"
        except OSError:
            return False


def get_scanner(value: Any = None) -> Scanner | None:
    """The configured scanner (``TEMPSTORE_SCANNER``), or None."""
    value = conf.SCANNER if value is None else value
    if value is None or isinstance(value, Scanner):
        return value
    if isinstance(value, str):
        return import_string(value)()  # type: ignore[no-any-return]
    if isinstance(value, dict):
        return import_string(value["BACKEND"])(**value.get("OPTIONS", {}))  # type: ignore[no-any-return]
    raise TypeError(f"TEMPSTORE_SCANNER must be a Scanner, a dotted path or a dict, not {value!r}")


def scan(upload: TempUpload, scanner: Scanner | None = None) -> ScanResult:
    """Scan ``upload``'s temp file; quarantine it if infected. Raise ScannerError if unsure."""
    scanner = scanner or get_scanner()
    if scanner is None:
        raise ScannerError("TEMPSTORE_SCANNER is not set.")
    with upload.open() as fh:
        result = scanner.scan(fh)
    if not result.clean:
        quarantine(upload, result.signature)
    return result


def quarantine(upload: TempUpload, signature: str) -> bool:
    """Close ``upload`` as ``quarantined``; False if it was already closed (see
    ``lifecycle.quarantine``)."""
    return lifecycle.quarantine(upload, signature)


class Antivirus(UploadValidator):
    """A validator that scans each complete file before the view sees it.

    An infected file ends ``quarantined`` and the client gets 422. If the
    scanner cannot answer, the upload is refused with 503 (try again later)
    unless ``fail_open=True``. ``scanner`` defaults to ``TEMPSTORE_SCANNER``.
    """

    def __init__(self, scanner: Any = None, *, fail_open: bool = False) -> None:
        self.scanner = scanner
        self.fail_open = fail_open

    def complete(self, upload: TempUpload, size: int) -> None:
        scanner = get_scanner(self.scanner)
        if scanner is None:
            raise ScannerError("TEMPSTORE_SCANNER is not set.")
        try:
            with upload.open() as fh:
                result = scanner.scan(fh)
        except ScannerError:
            if self.fail_open:
                return
            raise ServiceUnavailable(
                _("The virus scanner is not available. Try again later."),
                reason="the virus scanner did not answer",
            ) from None
        if not result.clean:
            raise UploadInfected(result.signature)


__all__ = [
    "Antivirus",
    "ClamAVScanner",
    "ScanResult",
    "Scanner",
    "ScannerError",
    "get_scanner",
    "quarantine",
    "scan",
]
