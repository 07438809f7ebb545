"""The tus endpoint behind real gunicorn and uvicorn, driven by tuspy and raw sockets."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from tusclient.client import TusClient
from tusclient.storage.filestorage import FileStorage

from django_tempstore.models import State, TempUpload
from django_tempstore.tus import uploads
from tests.servers import run_server, wait_until

pytestmark = [pytest.mark.server, pytest.mark.django_db(transaction=True)]


def upload_of(url: str) -> TempUpload:
    return TempUpload.objects.get(pk=url.rstrip("/").rpartition("/")[2])


def test_tuspy_with_a_chunk_size_that_does_not_divide_the_file(server, tmp_path):
    data = os.urandom(1_000_003)
    source = tmp_path / "video.bin"
    source.write_bytes(data)
    client = TusClient(server.url("/files/"))
    # Streams, not paths: tuspy leaves the files it opens by path unclosed.
    with open(source, "rb") as stream:
        uploader = client.uploader(
            file_stream=stream,
            chunk_size=65_537,
            metadata={"filename": "video.bin"},
            upload_checksum=True,
        )
        uploader.upload()
    upload = upload_of(uploader.url)
    assert upload.state == State.COMPLETE
    assert upload.size == len(data)
    assert upload.original_name == "video.bin"
    assert upload.digest == hashlib.sha256(data).hexdigest()


# tuspy opens a file given by path without closing it; with a stream and store_url
# its fingerprinter closes the caller's stream instead. Paths, and its leak ignored.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_tuspy_interrupted_upload_resumes_from_its_stored_url(server, tmp_path):
    data = os.urandom(700_001)
    source = tmp_path / "big.bin"
    source.write_bytes(data)
    storage = FileStorage(str(tmp_path / "urls.json"))
    try:
        client = TusClient(server.url("/files/"))
        first = client.uploader(
            str(source), chunk_size=100_003, store_url=True, url_storage=storage
        )
        first.upload(stop_at=300_000)
        assert upload_of(first.url).size == 300_000
        # A new client process would start here: it finds the URL by the file's fingerprint.
        again = client.uploader(
            str(source), chunk_size=100_003, store_url=True, url_storage=storage
        )
        assert again.url == first.url
        assert again.offset == 300_000
        again.upload()
    finally:
        storage.close()
    upload = upload_of(first.url)
    assert upload.state == State.COMPLETE
    assert upload.digest == hashlib.sha256(data).hexdigest()


def _raw(
    port: int, method: str, path: str, headers: dict[str, str], body: bytes = b""
) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Tus-Resumable: 1.0.0"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    return sock


def _status(sock: socket.socket) -> int:
    response = b""
    while b"\r\n" not in response and (chunk := sock.recv(65536)):
        response += chunk
    sock.close()
    return int(response.split(b" ", 2)[1])


def _create(port: int, length: int) -> str:
    sock = _raw(port, "POST", "/files/", {"Upload-Length": str(length), "Content-Length": "0"})
    response = b""
    while b"\r\n\r\n" not in response and (chunk := sock.recv(65536)):
        response += chunk
    sock.close()
    for line in response.decode().split("\r\n"):
        if line.lower().startswith("location:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(response)


FAST_CHECKPOINTS = json.dumps({"TEMPSTORE_HEARTBEAT_INTERVAL": 0.05, "TEMPSTORE_CHUNK_SIZE": 65536})


def test_kill_9_mid_patch_then_resume_to_the_right_digest(transactional_db, tmp_path):
    data = os.urandom(4 * 1024 * 1024 + 17)
    with run_server("gunicorn", tmp_path, TEMPSTORE_TEST_SETTINGS=FAST_CHECKPOINTS) as server:
        url = _create(server.port, len(data))
        path = "/files/" + url.rpartition("/")[2]
        sock = _raw(
            server.port,
            "PATCH",
            path,
            {
                "Content-Type": "application/offset+octet-stream",
                "Upload-Offset": "0",
                "Content-Length": str(len(data)),
            },
        )
        sent = 0
        for _ in range(30):
            sock.sendall(data[sent : sent + 65536])
            sent += 65536
            time.sleep(0.02)
        assert wait_until(lambda: upload_of(url).size > 0, timeout=10)
        server.kill(signal.SIGKILL)
        sock.close()
    upload = upload_of(url)
    assert upload.state == State.RECEIVING
    assert upload.lock_owner  # Held by the dead worker.
    # SIGKILL lands once the worker leaves the kernel (an fsync under load can
    # take seconds): until then it still holds the lock, and 423 is right.
    assert wait_until(lambda: uploads._holder_is_dead(upload.lock_owner), timeout=60)
    offset = upload.size
    assert 0 < offset <= sent
    assert upload.path.read_bytes()[:offset] == data[:offset]
    source = tmp_path / "data.bin"
    source.write_bytes(data)
    with run_server("gunicorn", tmp_path) as server, open(source, "rb") as stream:
        uploader = TusClient(server.url("/files/")).uploader(
            file_stream=stream, url=server.url(path), chunk_size=1_000_000
        )
        assert uploader.offset == offset
        uploader.upload()
    upload = upload_of(url)
    assert upload.state == State.COMPLETE
    assert upload.digest == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(
    ("kind", "args"),
    [("gunicorn", ("--threads", "4")), ("uvicorn", ())],
    ids=["gthread", "uvicorn"],
)
def test_two_patches_at_once_one_wins_bytes_never_interleave(
    transactional_db, tmp_path, kind, args
):
    size = 512 * 1024
    a, b = b"a" * size, b"b" * size
    with run_server(kind, tmp_path, args=args) as server:
        url = _create(server.port, size)
        path = "/files/" + url.rpartition("/")[2]
        headers = {
            "Content-Type": "application/offset+octet-stream",
            "Upload-Offset": "0",
            "Content-Length": str(size),
        }
        first = _raw(server.port, "PATCH", path, headers, a[: size // 2])
        if kind == "gunicorn":
            assert wait_until(lambda: upload_of(url).lock_owner != "", timeout=10)
        second = _raw(server.port, "PATCH", path, headers, b)
        statuses: dict[str, int] = {}
        reader = threading.Thread(target=lambda: statuses.update(second=_status(second)))
        reader.start()
        time.sleep(0.5)
        first.sendall(a[size // 2 :])
        statuses["first"] = _status(first)
        reader.join(10)
    upload = upload_of(url)
    assert sorted(statuses.values())[0] == 204
    assert sorted(statuses.values())[1] in (409, 423)
    winner = a if statuses["first"] == 204 else b
    if kind == "gunicorn":
        assert statuses == {"first": 204, "second": 423}
    assert upload.state == State.COMPLETE
    assert upload.path.read_bytes() == winner


NODE_CLIENT = Path(__file__).parent / "tus_js_client.mjs"
needs_node = pytest.mark.skipif(
    shutil.which("node") is None
    or not (Path(__file__).parent.parent / "node_modules" / "tus-js-client").exists(),
    reason="tus-js-client is not installed: run `npm ci` at the repository root",
)


def _node(*args: str) -> dict:
    done = subprocess.run(
        ["node", str(NODE_CLIENT), *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@needs_node
def test_tus_js_client_parallel_uploads_are_concatenated(server, tmp_path):
    data = os.urandom(1_000_001)
    source = tmp_path / "data.bin"
    source.write_bytes(data)
    result = _node("parallel", server.url("/files/"), str(source))
    upload = upload_of(result["url"])
    assert upload.concat == "final"
    assert upload.state == State.COMPLETE
    assert upload.digest == hashlib.sha256(data).hexdigest()
    parts = TempUpload.objects.filter(concat="partial")
    assert parts.count() == 3
    assert {part.state for part in parts} == {State.DISCARDED}


@needs_node
def test_tus_js_client_aborted_at_half_resumes_via_find_previous_uploads(server, tmp_path):
    data = os.urandom(1_500_007)
    source = tmp_path / "data.bin"
    source.write_bytes(data)
    result = _node("resume", server.url("/files/"), str(source), str(tmp_path / "urls.json"))
    assert result["previousCount"] == 1
    assert result["abortedAt"] >= len(data) // 2
    upload = upload_of(result["url"])
    assert upload.state == State.COMPLETE
    assert upload.digest == hashlib.sha256(data).hexdigest()
    assert TempUpload.objects.count() == 1
