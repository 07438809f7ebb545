"""A multipart/form-data parser with Django's semantics and a faster stream layer.

Django's ``MultiPartParser`` moves every byte through three layers of Python
iterators (``ChunkIter``, ``LazyStream``, ``BoundaryIter``), each of which joins,
slices and pushes back copies of the data. For a large file that is the upload's
ceiling. ``StreamingMultiPartParser`` keeps Django's input checks, items, limits,
exceptions and handler calls (its ``parse()`` loop is Django's, step by step) and
replaces only the stream layer: each ``read()`` of the body is searched in place
with ``bytes.find`` and handed on to the upload handlers unchanged, so the bytes
object the server returned is the one written to disk and hashed. A slice (a copy)
is made only where a part starts or ends inside a read, and a few bytes are held
back when a read ends with what could be the start of a boundary.

The body is read with ``read()`` rather than ``readinto()`` into a reused buffer:
gunicorn's ``wsgi.input`` has no ``readinto()`` (every read returns a new bytes
object anyway), and an immutable chunk can be queued to the digest thread
without waiting for it to be hashed before the next read.

Under gunicorn, a body of known length is read from the client's socket itself
(``gunicorn_reader()``): one ``recv()`` into a new bytes object per chunk, where
gunicorn's own reader copies each byte four more times through its buffers (30 %
of a large upload's time, measured in bench/). gunicorn's counters are kept up
to date, so it sees the body consumed as if it had read it.
"""

from __future__ import annotations

import base64
import binascii
import io
import socket
import sys
from collections.abc import Callable, Iterator
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.core.files.uploadhandler import SkipFile, StopFutureHandlers, StopUpload
from django.http import QueryDict, multipartparser
from django.http.multipartparser import MultiPartParser, MultiPartParserError
from django.utils.datastructures import MultiValueDict
from django.utils.encoding import force_str
from django.utils.http import parse_header_parameters

RAW, FILE, FIELD = "raw", "file", "field"
#: Django's limit on an item's headers (not in django-stubs).
MAX_TOTAL_HEADER_SIZE: int = getattr(multipartparser, "MAX_TOTAL_HEADER_SIZE", 1024)
_BREAKS = frozenset(b"\r\n-")

Meta = dict[str, tuple[str, dict[str, bytes]]]


class StreamingMultiPartParser(MultiPartParser):
    """Django's ``MultiPartParser`` with the body searched in place (see the module)."""

    # Set by MultiPartParser.__init__, which checks them; django-stubs does not declare them.
    _boundary: bytes
    _input_data: Any
    _chunk_size: int
    _encoding: str
    _content_length: int
    _upload_handlers: list[Any]
    _close_files: Callable[[], None]
    _files: MultiValueDict[str, Any]

    def _parse(self) -> tuple[QueryDict, MultiValueDict[str, Any]]:
        """Parse like Django's ``MultiPartParser._parse()``, minus ``handle_raw_input``.

        Each boundary (``--`` + boundary, anywhere, with the CR LF before it
        dropped) starts an item whose headers must end within 1024 bytes, as in
        Django; the items, counters and handler calls below follow Django 5.2's
        loop line by line.
        """
        encoding = self._encoding
        handlers = self._upload_handlers
        if self._content_length == 0:
            return QueryDict(encoding=self._encoding), MultiValueDict()
        self._post = QueryDict(mutable=True)
        self._files = MultiValueDict()
        read = gunicorn_reader(self._input_data, self._content_length)
        body = _Body(read or self._input_data.read, self._chunk_size, b"--" + self._boundary)

        old_field_name = None
        counters = [0] * len(handlers)
        num_bytes_read = 0
        num_post_keys = 0
        num_files = 0
        read_size = None
        uploaded_file = True
        try:
            while (item := body.next_item()) is not None:
                item_type, meta_data = item
                if old_field_name:
                    self.handle_file_complete(old_field_name, counters)
                    old_field_name = None
                    uploaded_file = True

                if item_type != FILE and settings.DATA_UPLOAD_MAX_NUMBER_FIELDS is not None:
                    num_post_keys += 1
                    # 2 accounts for empty raw fields before and after the last boundary.
                    if num_post_keys > settings.DATA_UPLOAD_MAX_NUMBER_FIELDS + 2:
                        raise TooManyFieldsSent(
                            "The number of GET/POST parameters exceeded "
                            "settings.DATA_UPLOAD_MAX_NUMBER_FIELDS."
                        )
                try:
                    disposition = meta_data["content-disposition"][1]
                    raw_name = disposition["name"].strip()
                except (KeyError, IndexError, AttributeError):
                    body.skip()
                    continue
                transfer_encoding = meta_data.get("content-transfer-encoding")
                encoding_name = transfer_encoding[0].strip() if transfer_encoding else None
                field_name = force_str(raw_name, encoding, errors="replace")

                if item_type == FIELD:
                    if settings.DATA_UPLOAD_MAX_MEMORY_SIZE is not None:
                        read_size = settings.DATA_UPLOAD_MAX_MEMORY_SIZE - num_bytes_read
                    raw_data = body.read_item(read_size)
                    num_bytes_read += len(raw_data)
                    data = raw_data
                    if encoding_name == "base64":
                        try:
                            data = base64.b64decode(raw_data)
                        except binascii.Error:
                            data = raw_data
                    # Add two here to make the check consistent with the
                    # x-www-form-urlencoded check that includes '&='.
                    num_bytes_read += len(field_name) + 2
                    if (
                        settings.DATA_UPLOAD_MAX_MEMORY_SIZE is not None
                        and num_bytes_read > settings.DATA_UPLOAD_MAX_MEMORY_SIZE
                    ):
                        raise RequestDataTooBig(
                            "Request body exceeded settings.DATA_UPLOAD_MAX_MEMORY_SIZE."
                        )
                    self._post.appendlist(field_name, force_str(data, encoding, errors="replace"))
                elif item_type == FILE:
                    num_files += 1
                    if (
                        settings.DATA_UPLOAD_MAX_NUMBER_FILES is not None
                        and num_files > settings.DATA_UPLOAD_MAX_NUMBER_FILES
                    ):
                        raise TooManyFilesSent(
                            "The number of files exceeded settings.DATA_UPLOAD_MAX_NUMBER_FILES."
                        )
                    raw_file_name = disposition.get("filename")
                    file_name = None
                    if raw_file_name:
                        file_name = force_str(raw_file_name, encoding, errors="replace")
                        file_name = self.sanitize_file_name(file_name)
                    if not file_name:
                        body.skip()
                        continue
                    content_type, content_type_extra = meta_data.get("content-type", ("", {}))
                    content_type = content_type.strip()
                    charset = content_type_extra.get("charset")
                    try:
                        content_length = int(meta_data["content-length"][0])
                    except (KeyError, IndexError, TypeError, ValueError):
                        content_length = None

                    counters = [0] * len(handlers)
                    uploaded_file = False
                    try:
                        for handler in handlers:
                            try:
                                handler.new_file(
                                    field_name,
                                    file_name,
                                    content_type,
                                    content_length,
                                    charset,
                                    content_type_extra,
                                )
                            except StopFutureHandlers:
                                break
                        chunks = body.segments()
                        if encoding_name == "base64":
                            chunks = _base64_decoded(chunks)
                        for chunk in chunks:
                            for i, handler in enumerate(handlers):
                                chunk_length = len(chunk)
                                chunk = handler.receive_data_chunk(chunk, counters[i])
                                counters[i] += chunk_length
                                if chunk is None:
                                    break
                    except SkipFile:
                        self._close_files()
                        body.skip()
                    else:
                        old_field_name = field_name
                else:
                    body.skip()
        except StopUpload as exc:
            self._close_files()
            if not exc.connection_reset:
                body.exhaust()
        else:
            if not uploaded_file:
                for handler in handlers:
                    handler.upload_interrupted()
            body.exhaust()
        any(handler.upload_complete() for handler in handlers)
        self._post._mutable = False
        return self._post, self._files


def gunicorn_reader(request: Any, content_length: int) -> Callable[[int], bytes] | None:
    """A ``read(size)`` of ``request``'s body straight from gunicorn's client socket, or None.

    Only for what is known to work like gunicorn's own reader: a WSGI request
    whose body nobody has read yet, read by gunicorn's ``LengthReader`` (a
    ``Content-Length`` body, not chunked) from a plain blocking socket (no TLS,
    no timeout). The bytes gunicorn has already buffered are returned first;
    anything it buffered beyond the body stays in its buffer. A read returns
    less than asked only when the client stopped sending (or a signal came);
    ``b""`` once the body ended, as gunicorn's reader does.
    """
    environ = getattr(request, "environ", None)
    if not environ or "gunicorn" not in sys.modules or getattr(request, "_read_started", True):
        return None
    from gunicorn.http.body import Body, LengthReader  # type: ignore[import-untyped]
    from gunicorn.http.unreader import SocketUnreader  # type: ignore[import-untyped]

    stream, sock = environ.get("wsgi.input"), environ.get("gunicorn.socket")
    if type(stream) is not Body or type(stream.reader) is not LengthReader:
        return None
    reader = stream.reader
    unreader = reader.unreader
    if (
        type(unreader) is not SocketUnreader
        or unreader.sock is not sock
        or type(sock) is not socket.socket
        or sock.gettimeout() is not None
        or stream.buf.tell()
        or reader.length != content_length
    ):
        return None
    request._read_started = True
    held = unreader.buf.getvalue()
    buffered, rest = held[: reader.length], held[reader.length :]
    unreader.buf = io.BytesIO()
    unreader.buf.write(rest)

    def read(size: int) -> bytes:
        nonlocal buffered
        size = min(size, reader.length)
        if size <= 0:
            return b""
        data: bytes
        if buffered:
            data, buffered = buffered[:size], buffered[size:]
        else:
            try:
                # One kernel copy into a new bytes object, filled unless the client stops.
                data = sock.recv(size, socket.MSG_WAITALL)
            except BaseException:
                # As gunicorn's reader does: the connection cannot be reused.
                stream.failed = True
                raise
        reader.length -= len(data)
        return data

    return read


def _base64_decoded(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Decode ``chunks`` by multiples of 4 bytes, whitespace ignored, as Django does."""
    remainder = b""
    for chunk in chunks:
        stripped = remainder + b"".join(chunk.split())
        aligned = len(stripped) // 4 * 4
        remainder = stripped[aligned:]
        if not aligned:
            continue
        try:
            yield base64.b64decode(stripped[:aligned])
        except Exception as exc:
            raise MultiPartParserError("Could not decode base64 data.") from exc
    if remainder:
        raise MultiPartParserError("Could not decode base64 data.")


class _Body:
    """The request body, read ``chunk_size`` at a time and split at each boundary.

    ``data[pos:]`` is what was read and not consumed yet. An item starts at
    ``pos``: the start of the body, or right after a boundary.
    """

    def __init__(self, read: Callable[[int], bytes], chunk_size: int, delimiter: bytes) -> None:
        self._read = read
        self._chunk_size = chunk_size
        self._delimiter = delimiter
        #: What may precede a boundary split across two reads: its CR LF, then itself.
        self._prefixes = (b"\r\n" + delimiter, b"\n" + delimiter, delimiter)
        self._data = b""
        self._pos = 0
        self._eof = False
        #: Whether the current item's data was consumed up to its end.
        self._item_done = True

    def _fill(self, size: int) -> None:
        while len(self._data) - self._pos < size and not self._eof:
            more = self._read(self._chunk_size)
            if not more:
                self._eof = True
                break
            self._data = self._data[self._pos :] + more
            self._pos = 0

    def _end_before(self, start: int, index: int) -> int:
        """Where the data before the boundary at ``index`` ends: its CR LF dropped."""
        data = self._data
        if index > start and data[index - 1] == 0x0A:
            index -= 1
        if index > start and data[index - 1] == 0x0D:
            index -= 1
        return index

    def next_item(self) -> tuple[str, Meta] | None:
        """Parse the headers of the item at ``pos``; None when the body has ended."""
        delimiter = self._delimiter
        self._fill(MAX_TOTAL_HEADER_SIZE + len(delimiter) + 2)
        data, pos = self._data, self._pos
        if pos >= len(data):
            return None
        self._item_done = False
        # Django reads at most 1024 bytes of the item, never past its end, and
        # refuses the body if they are all there and hold no end of headers.
        window = pos + MAX_TOTAL_HEADER_SIZE
        index = data.find(delimiter, pos, window + 2 + len(delimiter))
        if index >= 0:
            window = min(window, self._end_before(pos, index))
        header_end = data.find(b"\r\n\r\n", pos, window)
        if header_end == -1:
            if min(window, len(data)) - pos >= MAX_TOTAL_HEADER_SIZE:
                raise MultiPartParserError("Request max total header size exceeded.")
            return RAW, {}
        item_type = RAW
        meta: Meta = {}
        for line in data[pos:header_end].split(b"\r\n"):
            try:
                main_value_pair, params = parse_header_parameters(line.decode())
                name, value = main_value_pair.split(":", 1)
                encoded = {k: v.encode() for k, v in params.items()}
            except ValueError:  # Invalid header.
                continue
            if name == "content-disposition":
                item_type = FIELD
                if encoded.get("filename"):
                    item_type = FILE
            meta[name] = value, encoded
        if item_type != RAW:
            self._pos = header_end + 4
        return item_type, meta

    def _held_back(self, start: int) -> int:
        """Where the bytes that could begin a boundary (CR LF included) start, or the end."""
        data = self._data
        end = len(data)
        for index in range(max(start, end - len(self._prefixes[0]) + 1), end):
            if data[index] in _BREAKS:
                tail = data[index:]
                if any(prefix.startswith(tail) for prefix in self._prefixes):
                    return index
        return end

    def segments(self) -> Iterator[bytes]:
        """Yield the item's data up to the next boundary (or the end of the body).

        A read that lies wholly inside the item is yielded as it is, with no copy.
        """
        delimiter = self._delimiter
        while not self._item_done:
            data, pos = self._data, self._pos
            index = data.find(delimiter, pos)
            if index >= 0:
                end = self._end_before(pos, index)
                self._pos = index + len(delimiter)
                self._item_done = True
                if end > pos:
                    yield data if pos == 0 and end == len(data) else data[pos:end]
                return
            cut = self._held_back(pos) if not self._eof else len(data)
            if cut > pos:
                yield data if pos == 0 and cut == len(data) else data[pos:cut]
            more = b"" if self._eof else self._read(self._chunk_size)
            if not more:
                # Truncated: the body ended inside the item. Django passes on what
                # it held back too.
                self._eof = self._item_done = True
                self._data, self._pos = b"", 0
                if cut < len(data):
                    yield data[cut:]
                return
            self._data = data[cut:] + more if cut < len(data) else more
            self._pos = 0

    def read_item(self, limit: int | None) -> bytes:
        """The item's data, or its first ``limit`` bytes (Django then refuses the body)."""
        parts: list[bytes] = []
        size = 0
        for segment in self.segments():
            parts.append(segment)
            size += len(segment)
            if limit is not None and size >= limit:
                break
        data = b"".join(parts)
        return data if limit is None else data[: max(limit, 0)]

    def skip(self) -> None:
        """Consume the rest of the item."""
        for _ in self.segments():
            pass

    def exhaust(self) -> None:
        """Read the rest of the body, as Django does once the parts are parsed."""
        self._data, self._pos = b"", 0
        while not self._eof:
            if not self._read(self._chunk_size):
                self._eof = True
