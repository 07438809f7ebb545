"""The tus benchmark: ``python -m bench.bench_tus [--size MiB] [--patch MiB]``.

The same bytes, in the same run on the same machine: through our tus endpoint in
``--patch``-sized PATCHes, through our multipart handler (``bench.run``'s server and
client), and through the Node reference server (``@tus/server`` + ``@tus/file-store``,
``npm ci`` at the repository root). See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench.run import (
    BLOCK,
    ROOT,
    MiB,
    _parse,
    _recv_all,
    clean,
    expected_sha256,
    free_port,
    get,
    gunicorn,
    migrate,
    server_env,
    upload,
    wait_for_server,
)

TUS = "Tus-Resumable: 1.0.0\r\n"
TARGET_MULTIPART = 0.9
TARGET_NODE = 1.0
RSS_SLACK_KIB = 8 * 1024


def _request(port: int, head: str, body_size: int = 0) -> tuple[int, dict[str, str]]:
    """One request on its own connection; the body is ``body_size`` bytes sent 1 MiB at a time."""
    block = memoryview(BLOCK)
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall((head + f"Host: 127.0.0.1:{port}\r\n{TUS}Connection: close\r\n\r\n").encode())
        left = body_size
        while left:
            n = min(left, MiB)
            sock.sendall(block[:n])
            left -= n
        response = _recv_all(sock)
    status, _ = _parse(response)
    lines = response.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")[1:]
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines)}
    return status, headers


def tus_upload(port: int, prefix: str, size: int, patch: int) -> str:
    """Create an upload of ``size`` bytes and send it in ``patch``-byte PATCHes; its URL path."""
    status, headers = _request(
        port, f"POST {prefix}/ HTTP/1.1\r\nUpload-Length: {size}\r\nContent-Length: 0\r\n"
    )
    if status != 201:
        raise RuntimeError(f"POST {prefix}/: {status}")
    path = "/" + headers["location"].split("://", 1)[-1].split("/", 1)[1]
    offset = 0
    while offset < size:
        n = min(patch, size - offset)
        status, headers = _request(
            port,
            f"PATCH {path} HTTP/1.1\r\nUpload-Offset: {offset}\r\nContent-Length: {n}\r\n"
            "Content-Type: application/offset+octet-stream\r\n",
            n,
        )
        if status != 204 or int(headers["upload-offset"]) != offset + n:
            raise RuntimeError(f"PATCH {path} at {offset}: {status} {headers}")
        offset += n
    return path


def ours_state(port: int) -> dict[str, object]:
    state: dict[str, object] = get(port, "/state/")
    return state


def run_ours_tus(env: dict[str, str], work: Path, size: int, patch: int) -> tuple[float, int]:
    """MiB/s of one tus upload on a fresh server, and that worker's peak RSS (KiB)."""
    with gunicorn(env, work) as port:
        start = time.perf_counter()
        path = tus_upload(port, "/files", size, patch)
        elapsed = time.perf_counter() - start
        hwm = int(get(port, "/stats/")["hwm_kib"])
        status, _ = _request(port, f"DELETE {path} HTTP/1.1\r\nContent-Length: 0\r\n")
        if status != 204:
            raise RuntimeError(f"DELETE {path}: {status}")
        state = ours_state(port)
        if state["files"] or state["pending"]:
            raise RuntimeError(f"left behind after tus: {state}")
    clean(work)
    return size / MiB / elapsed, hwm


def run_multipart(env: dict[str, str], work: Path, size: int) -> float:
    with gunicorn(env, work) as port:
        start = time.perf_counter()
        status, body = upload(port, size)
        elapsed = time.perf_counter() - start
        if status != 200 or expected_sha256(size).encode() not in body:
            raise RuntimeError(f"multipart: {status} {body[:200]!r}")
        state = ours_state(port)
        if state["files"] or state["pending"]:
            raise RuntimeError(f"left behind after multipart: {state}")
    clean(work)
    return size / MiB / elapsed


@contextlib.contextmanager
def node_server(directory: Path) -> Iterator[int]:
    port = free_port()
    proc = subprocess.Popen(
        ["node", str(ROOT / "bench" / "tus_node_server.mjs"), str(port), str(directory)],
        cwd=ROOT,
        start_new_session=True,
    )
    try:
        wait_for_server(port, proc, "node", timeout=30)
        yield port
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def run_node(work: Path, size: int, patch: int) -> float:
    directory = work / "node"
    directory.mkdir(exist_ok=True)
    with node_server(directory) as port:
        start = time.perf_counter()
        path = tus_upload(port, "/files", size, patch)
        elapsed = time.perf_counter() - start
    stored = directory / path.rstrip("/").rpartition("/")[2]
    if stored.stat().st_size != size:
        raise RuntimeError(f"@tus/server stored {stored.stat().st_size} bytes, not {size}")
    shutil.rmtree(directory)
    return size / MiB / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=512, help="MiB per upload (default 512)")
    parser.add_argument("--patch", type=int, default=8, help="MiB per PATCH (default 8)")
    parser.add_argument(
        "--rounds", type=int, default=1, help="rounds of the three, interleaved; best kept"
    )
    parser.add_argument("--no-node", action="store_true", help="skip @tus/server")
    parser.add_argument("--dir", default=None, help="parent of the work folder")
    parser.add_argument(
        "--relaxed-db",
        action="store_true",
        help="SQLite in WAL mode, synchronous=NORMAL (BENCH_DURABILITY=relaxed), every server",
    )
    args = parser.parse_args(argv)
    size, patch = args.size * MiB, args.patch * MiB
    work = Path(tempfile.mkdtemp(prefix="tsbench-tus-", dir=args.dir))
    try:
        for name in ("tempstore", "stock"):
            (work / name).mkdir()
        env = server_env(work, "sqlite", "", "tempstore", "sha256")
        if args.relaxed_db:
            env["BENCH_DURABILITY"] = "relaxed"
        migrate(env)
        results: dict[str, float] = {}
        # Interleaved, so that a change of the machine's load hits all three alike.
        for _ in range(args.rounds):
            rates = {
                "tus (ours)": run_ours_tus(env, work, size, patch)[0],
                "multipart (ours)": run_multipart(env, work, size),
            }
            if not args.no_node:
                rates["@tus/server"] = run_node(work, size, patch)
            for name, rate in rates.items():
                results[name] = max(rate, results.get(name, 0.0))
            print("  round: " + ", ".join(f"{k} {v:.1f}" for k, v in rates.items()), flush=True)
        _, hwm_big = run_ours_tus(env, work, size, patch)
        _, hwm_small = run_ours_tus(env, work, MiB, min(patch, MiB))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    db = "SQLite (WAL, synchronous=NORMAL)" if args.relaxed_db else "SQLite"
    print(f"{args.size} MiB in {args.patch} MiB PATCHes, {db}, gunicorn 1 sync worker")
    for name, rate in results.items():
        print(f"  {name:<18} {rate:8.1f} MiB/s")
    ok = True
    ratio = results["tus (ours)"] / results["multipart (ours)"]
    ok &= ratio >= TARGET_MULTIPART
    print(f"  tus / multipart    {ratio:8.2f}   (target >= {TARGET_MULTIPART})")
    if "@tus/server" in results:
        ratio = results["tus (ours)"] / results["@tus/server"]
        ok &= ratio >= TARGET_NODE
        print(f"  tus / @tus/server  {ratio:8.2f}   (target >= {TARGET_NODE})")
    delta = hwm_big - hwm_small
    ok &= delta <= RSS_SLACK_KIB
    print(
        f"  peak RSS tus       {hwm_big / 1024:.1f} MiB for {args.size} MiB, "
        f"{hwm_small / 1024:.1f} MiB for 1 MiB (+{delta / 1024:.1f} MiB, target <= 8)"
    )
    print("all targets met" if ok else "TARGET MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
