"""The bench client's response parser (no server, no timing): plain and chunked bodies."""

from __future__ import annotations

import pytest

from bench import run


def response(headers: list[str], body: bytes) -> bytes:
    return ("HTTP/1.1 200 OK\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n").encode() + body


def test_a_body_without_transfer_encoding_is_returned_as_sent():
    body = b'{"a": "1\r\n2"}'
    assert run._parse(response(["content-type: application/json"], body)) == (200, body)
    assert run._parse(b"HTTP/1.0 503 Service Unavailable\r\n\r\nno") == (503, b"no")
    assert run._parse(b"") == (0, b"")


def test_a_chunked_body_is_decoded():
    # As uvicorn's httptools protocol answers: lower-case header, one chunk per send.
    chunked = b'5\r\nhello\r\n1;name=value\r\n \r\nB\r\n{"x": "\r\n"}\r\n0\r\n\r\n'
    status, body = run._parse(response(["transfer-encoding: chunked"], chunked))
    assert (status, body) == (200, b'hello {"x": "\r\n"}')


def test_header_names_and_codings_are_case_insensitive_and_chunked_must_be_last():
    chunked = b"3\r\nabc\r\n0\r\n\r\n"
    assert run._parse(response(["Transfer-Encoding: gzip, Chunked"], chunked))[1] == b"abc"
    assert run._parse(response(["TRANSFER-ENCODING:chunked"], chunked))[1] == b"abc"
    # Not chunked last: the body is what was sent.
    assert run._parse(response(["Transfer-Encoding: chunked, gzip"], chunked))[1] == chunked


def test_trailers_are_dropped_and_an_empty_chunked_body_is_empty():
    assert run.dechunk(b"2\r\nok\r\n0\r\nx-digest: abc\r\nx-more: 1\r\n\r\n") == b"ok"
    assert run.dechunk(b"0\r\n\r\n") == b""


def test_a_large_chunked_body_round_trips():
    data = run.BLOCK[: 3 * 65536 + 17]
    pieces = [data[i : i + 65536] for i in range(0, len(data), 65536)]
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    assert run.dechunk(chunked) == data


@pytest.mark.parametrize(
    "chunked",
    [
        b"",  # nothing at all
        b"5\r\nhel",  # cut inside a chunk
        b"5\r\nhello",  # cut before the chunk's CRLF
        b"5\r\nhelloXX0\r\n\r\n",  # no CRLF after the chunk
        b"5\r\nhello\r\n",  # no last chunk
        b"0\r\n",  # no end of the trailer section
        b"0\r\nx-digest: abc\r\n",  # a trailer, then cut
        b"zz\r\nhello\r\n0\r\n\r\n",  # not hex
        b"-5\r\nhello\r\n0\r\n\r\n",  # negative
        b"0x5\r\nhello\r\n0\r\n\r\n",  # a 0x prefix is not HTTP
        b"+5\r\nhello\r\n0\r\n\r\n",  # nor a sign
        b"1_0\r\n" + b"x" * 16 + b"\r\n0\r\n\r\n",  # nor an underscore
    ],
)
def test_a_malformed_or_truncated_chunked_body_raises(chunked):
    with pytest.raises(ValueError):
        run._parse(response(["transfer-encoding: chunked"], chunked))
