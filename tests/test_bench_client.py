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


def result(config: str, mib_s: float, writes: float = 1.001) -> dict[str, object]:
    return {
        "db": "sqlite", "series": "512MiBx2", "config": config, "size": 512 * run.MiB, "count": 2,
        "seconds": 1.0, "mib_s": mib_s, "req_s": 1.0, "minflt_per_mib": 5.0,
        "cpu_ms_per_mib": 2.5, "cpu_ms_per_req": 1.0, "hwm_mib": 60.0,
        "writes_per_byte": writes, "left_files": 0, "left_pending": 0, "errors": [],
    }  # fmt: skip


def test_the_asgi_target_takes_the_fastest_uvicorn_config_and_names_it():
    data = {
        "references": {"disk_mib_s": 4000.0, "socket_mib_s": 4000.0},
        "quick": False,
        "skipped": {},
        "results": [
            result(run.OURS, 500.0),
            result(run.ASGI[0], 400.0),
            result(run.ASGI_HTTPTOOLS[0], 460.0, writes=1.2),
        ],
    }
    table, ok = run.report(data)
    row = next(line for line in table.splitlines() if ">= 0.9x" in line)
    assert f"best of the run: {run.ASGI_HTTPTOOLS[0]}" in row
    assert "| 0.92x (tempstore+sha256/uvicorn 0.80x) | PASS |" in row
    # Each uvicorn config is held to one write per byte.
    assert f"{run.ASGI_HTTPTOOLS[0]} writes each byte once" in table
    assert "| 1.200 | MISS" in table
    assert not ok


def test_a_uvicorn_config_whose_modules_are_missing_is_skipped(monkeypatch):
    found = run.importlib.util.find_spec
    monkeypatch.setattr(
        run.importlib.util, "find_spec", lambda name: None if name == "uvloop" else found(name)
    )
    assert run.missing_modules(run.ASGI_HTTPTOOLS[0]) == ["uvloop"]
    assert run.missing_modules(run.ASGI[0]) == []
    assert run.missing_modules(run.OURS) == []
