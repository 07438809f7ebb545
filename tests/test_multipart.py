"""StreamingMultiPartParser gives what Django's MultiPartParser gives, call for call.

Each body goes through both parsers with the same recording handler; the calls the
handler sees (new_file's arguments, the bytes of each file, file_complete's size,
upload_interrupted), the POST and FILES dicts and any exception must be equal. The
small chunk sizes put boundaries, CR LFs and base64 quads across reads.
"""

from __future__ import annotations

import base64
from io import BytesIO
from typing import Any

import pytest
from django.core.files.uploadhandler import FileUploadHandler, SkipFile, StopUpload
from django.http.multipartparser import MultiPartParser
from django.test import override_settings
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from django_tempstore.handlers import TempStoreUploadHandler
from django_tempstore.multipart import StreamingMultiPartParser

BOUNDARY = "b-o-u-n-d-a-r-y"


class Recorder(FileUploadHandler):
    """Records every hook call; may raise SkipFile or StopUpload on a given file."""

    def __init__(self, chunk_size: int, skip: str = "", stop: str = "") -> None:
        super().__init__()
        self.chunk_size = chunk_size
        self.calls: list[Any] = []
        self.skip, self.stop = skip, stop
        self.data = bytearray()

    def new_file(self, *args: Any, **kwargs: Any) -> None:
        super().new_file(*args, **kwargs)
        self.calls.append(("new_file", args, kwargs))
        self.data = bytearray()

    def receive_data_chunk(self, raw_data: bytes, start: int) -> None:
        assert start == len(self.data)
        if self.file_name == self.skip:
            raise SkipFile()
        if self.file_name == self.stop:
            raise StopUpload(connection_reset=False)
        self.data += raw_data

    def file_complete(self, file_size: int) -> Any:
        self.calls.append(("file_complete", file_size, bytes(self.data)))
        return f"{self.file_name}:{file_size}"

    def upload_interrupted(self) -> None:
        self.calls.append(("upload_interrupted", bytes(self.data)))


def run(parser_class: type[MultiPartParser], body: bytes, chunk_size: int, **kw: Any) -> Any:
    handler = Recorder(chunk_size, **kw)
    meta = {
        "CONTENT_TYPE": f"multipart/form-data; boundary={BOUNDARY}",
        "CONTENT_LENGTH": str(len(body)),
    }
    try:
        post, files = parser_class(meta, BytesIO(body), [handler], "utf-8").parse()
    except Exception as exc:
        return ("raised", type(exc), str(exc)), handler.calls
    return (sorted(post.lists()), sorted(files.lists())), handler.calls


def assert_same(body: bytes, chunk_size: int, **kw: Any) -> None:
    assert run(StreamingMultiPartParser, body, chunk_size, **kw) == run(
        MultiPartParser, body, chunk_size, **kw
    )


def part(headers: list[str], data: bytes) -> bytes:
    return ("\r\n".join(headers) + "\r\n\r\n").encode() + data


def body(parts: list[bytes], *, preamble: bytes = b"", epilogue: bytes = b"\r\n") -> bytes:
    delimiter = f"--{BOUNDARY}".encode()
    return (
        preamble
        + b"".join(delimiter + b"\r\n" + p + b"\r\n" for p in parts)
        + delimiter
        + b"--"
        + epilogue
    )


def file_part(name: str, data: bytes, *extra: str, filename: str = "a.txt") -> bytes:
    return part(
        [f'Content-Disposition: form-data; name="{name}"; filename="{filename}"', *extra], data
    )


def field_part(name: str, value: bytes, *extra: str) -> bytes:
    return part([f'Content-Disposition: form-data; name="{name}"', *extra], value)


NEAR_BOUNDARY = [b"\r", b"\n", b"\r\n", b"-", b"--", b"\r\n--", b"\r\n--b-o-u", b"--b-o-u-n-d-a-r"]
content = st.lists(
    st.one_of(st.binary(max_size=40), st.sampled_from(NEAR_BOUNDARY)), max_size=12
).map(b"".join)
file_names = st.sampled_from(
    ["a.txt", "../../x", "C:\\dir\\y.bin", "&lt;z&gt;.txt", "..", "", "d\x01e.txt", "ü.txt"]
)


@st.composite
def items(draw: Any) -> bytes:
    kind = draw(st.sampled_from(["file", "field", "b64file", "b64field", "rfc2231", "noname"]))
    data = draw(content)
    if kind == "file":
        return file_part("f", data, "Content-Type: text/plain; charset=utf-8",
                         filename=draw(file_names))  # fmt: skip
    if kind == "b64file":
        return file_part("f", base64.b64encode(data), "Content-Transfer-Encoding: base64")
    if kind == "field":
        return field_part(draw(st.sampled_from(["x", "y"])), data)
    if kind == "b64field":
        return field_part("z", base64.b64encode(data), "Content-Transfer-Encoding: base64")
    if kind == "rfc2231":
        return part(
            ["Content-Disposition: form-data; name=\"r\"; filename*=UTF-8''%C3%A9t%C3%A9.txt"], data
        )
    return part(["Content-Type: text/plain"], data)


@given(
    parts=st.lists(items(), max_size=5),
    preamble=st.sampled_from([b"", b"junk\r\n", b"\r\n"]),
    epilogue=st.sampled_from([b"", b"\r\n", b"\r\nafter"]),
    chunk_size=st.sampled_from([4, 8, 12, 64, 1024, 64 * 1024]),
    cut=st.one_of(st.none(), st.integers(min_value=0, max_value=400)),
)
@example(parts=[file_part("f", b"x" * 100)], preamble=b"", epilogue=b"", chunk_size=8, cut=None)
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_same_as_django(parts, preamble, epilogue, chunk_size, cut):
    data = body(parts, preamble=preamble, epilogue=epilogue)
    if cut is not None:
        data = data[:cut]
    assert_same(data, chunk_size)


@pytest.mark.parametrize("chunk_size", [4, 64, 64 * 1024])
def test_large_file_across_reads(chunk_size):
    data = bytes(range(256)) * 300 + b"\r\n--b-o-u-n-d\r\n" + b"\r" * 50
    assert_same(body([file_part("f", data), field_part("x", b"1")]), chunk_size)


@pytest.mark.parametrize(
    ("setting", "value", "parts"),
    [
        ("DATA_UPLOAD_MAX_NUMBER_FIELDS", 2, [field_part(f"x{i}", b"v") for i in range(5)]),
        ("DATA_UPLOAD_MAX_NUMBER_FIELDS", 3, [field_part(f"x{i}", b"v") for i in range(3)]),
        ("DATA_UPLOAD_MAX_NUMBER_FILES", 1, [file_part("f", b"1"), file_part("g", b"2")]),
        ("DATA_UPLOAD_MAX_MEMORY_SIZE", 10, [field_part("x", b"v" * 8)]),
        ("DATA_UPLOAD_MAX_MEMORY_SIZE", 10, [field_part("x", b"v" * 7)]),
        ("DATA_UPLOAD_MAX_MEMORY_SIZE", 10, [field_part("x", b"v" * 500), file_part("f", b"1")]),
    ],
)
def test_limits_as_django(setting, value, parts):
    with override_settings(**{setting: value}):
        assert_same(body(parts), 8)
        assert_same(body(parts), 64 * 1024)


def test_header_over_1024_bytes_refused_as_django():
    long_part = file_part("f", b"data", "X-Long: " + "-" * 1100)
    result, _ = run(StreamingMultiPartParser, body([long_part]), 64 * 1024)
    assert result[0] == "raised"
    assert_same(body([long_part]), 64 * 1024)


def test_truncated_file_interrupts_as_django():
    data = body([file_part("f", b"0123456789" * 50)])[:-80]
    result, calls = run(StreamingMultiPartParser, data, 16)
    assert calls[-1][0] == "upload_interrupted"
    assert_same(data, 16)


@pytest.mark.parametrize("hook", ["skip", "stop"])
def test_skip_file_and_stop_upload_as_django(hook):
    parts = [file_part("f", b"1" * 40, filename="one"), file_part("g", b"2" * 40, filename="two")]
    assert_same(body(parts), 8, **{hook: "one"})


def test_bad_base64_file_refused_as_django():
    parts = [file_part("f", b"QUJD?", "Content-Transfer-Encoding: base64")]
    result, _ = run(StreamingMultiPartParser, body(parts), 64)
    assert result[0] == "raised"
    assert_same(body(parts), 64)


def _request(rf, handlers: list[Any]) -> Any:
    request = rf.post("/", {"f": BytesIO(b"x")})
    request.upload_handlers = handlers
    return request


class OwnRawInput(FileUploadHandler):
    def handle_raw_input(self, *args: Any, **kwargs: Any) -> None:
        return None


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("later", "parses"), [([], True), ([FileUploadHandler], True), ([OwnRawInput], False)]
)
def test_parses_only_when_no_later_handler_has_its_own_raw_input(rf, later, parses):
    request = rf.post("/", {"f": BytesIO(b"x")})
    ours = TempStoreUploadHandler(request)
    request.upload_handlers = [ours, *(cls(request) for cls in later)]
    assert (ours._parses_for() is not None) is parses
