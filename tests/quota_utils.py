"""Helpers for the quota tests: a raw HTTP client that can stop mid-body, disk probes."""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.utils import require_marker


@dataclass
class Answer:
    status: int | None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    #: Body bytes the client had sent when it stopped (answered, or all sent).
    sent: int = 0

    def json(self) -> object:
        return json.loads(self.body)


def post(
    port: int,
    path: str,
    body: bytes,
    content_type: str,
    *,
    declared: int | None = None,
    piece: int = 65536,
    pause: float = 0.0,
    accept: str = "application/json",
    extra_headers: str = "",
    midway: Callable[[], object] | None = None,
) -> Answer:
    """POST ``body`` (declaring ``declared`` bytes) and stop sending as soon as
    the server answers, like a browser does; return the answer.

    ``midway`` is called once, when half the body is sent or the server answered.
    """
    length = len(body) if declared is None else declared
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {length}\r\n"
        f"Accept: {accept}\r\n{extra_headers}Connection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(head)
        sent = 0

        def halfway() -> None:
            nonlocal midway
            if midway is not None:
                midway, call = None, midway
                call()

        while sent < len(body):
            if sent >= len(body) // 2:
                halfway()
            readable, writable, _ = select.select([sock], [sock], [], 60)
            if readable:
                break  # The server answered before the whole body.
            if not writable:
                raise TimeoutError("the server neither reads nor answers")
            try:
                sent += sock.send(body[sent : sent + piece])
            except (BrokenPipeError, ConnectionResetError):
                break
            if pause:
                time.sleep(pause)
        halfway()
        data = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                data += chunk
    return parse_answer(data, sent)


def parse_answer(data: bytes, sent: int) -> Answer:
    if not data:
        return Answer(None, sent=sent)
    head, _, payload = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return Answer(status, headers, payload, sent)


def disk_bytes(directory: Path) -> int | None:
    """Bytes of the files in ``directory`` at one instant, or None if unsure.

    A directory scan is not atomic. Two scans that find the same files (same
    inodes) bracket an interval in which no file came or went; the handler only
    appends, so the second scan's sizes, each read before the interval ends,
    add up to at most the real total at its end: a total above the quota is a
    real moment above the quota.
    """

    def scan() -> dict[int, int]:
        sizes = {}
        with os.scandir(directory) as entries:
            for entry in entries:
                with contextlib.suppress(FileNotFoundError):
                    st = entry.stat(follow_symlinks=False)
                    sizes[st.st_ino] = st.st_size
        return sizes

    first = scan()
    second = scan()
    if first.keys() != second.keys():
        return None
    return sum(second.values())


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str = "2m"):
    """Mount a tmpfs of ``size`` at ``path``; skip the test if that is not allowed."""
    require_marker("root", "a tmpfs mount")
    path.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {result.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)
