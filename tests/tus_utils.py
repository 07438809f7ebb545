"""Helpers for the tus tests: a protocol client on Django's test client."""

from __future__ import annotations

import base64
import hashlib

TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = "application/offset+octet-stream"


def metadata(**values: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in values.items())


def create(client, length: int | None = None, *, data: bytes = b"", **headers: str):
    extra = dict(TUS, **headers)
    if length is None:
        extra.setdefault("Upload-Defer-Length", "1")
    else:
        extra["Upload-Length"] = str(length)
    extra.setdefault("Upload-Metadata", metadata(filename="a.bin"))
    return client.generic(
        "POST", "/files/", data, content_type=OCTETS if data else "", headers=extra
    )


def upload_path(response) -> str:
    return "/files/" + response["Location"].rstrip("/").rpartition("/")[2]


def patch(client, path: str, data: bytes, offset: int, *, content_type: str = OCTETS, **headers):
    extra = dict(TUS, **{"Upload-Offset": str(offset)}, **headers)
    return client.generic("PATCH", path, data, content_type=content_type, headers=extra)


def head(client, path: str, **headers):
    return client.head(path, headers=dict(TUS, **headers))


def checksum(algorithm: str, data: bytes) -> str:
    return f"{algorithm} {base64.b64encode(hashlib.new(algorithm, data).digest()).decode()}"
