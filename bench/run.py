"""Run the upload benchmark: ``python -m bench.run [--quick] [--db sqlite,postgres]``.

Starts real gunicorn servers (sync workers) and uvicorn servers (ASGI) on 127.0.0.1,
each series on a freshly started server, and prints ratios measured side by side in
the same run. See bench/README.md for what is measured and why.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import importlib.util
import json
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
KiB = 1024
MiB = 1024 * KiB
BLOCK = os.urandom(MiB)

#: Ours again, served by uvicorn (TempStoreASGIHandler: the body streams into the view),
#: with the pure-Python protocol and loop that uvicorn runs without its extras.
ASGI = ("tempstore+sha256/uvicorn", "tempstore", "sha256")
#: The same with what ``uvicorn[standard]`` brings: httptools' parser and uvloop.
ASGI_HTTPTOOLS = ("tempstore+sha256/uvicorn-httptools", "tempstore", "sha256")
#: (label, handlers setting, digest); a label in UVICORN_RUNTIMES is served by uvicorn.
CONFIGS = [
    ("tempstore+sha256", "tempstore", "sha256"),
    ("tempstore", "tempstore", ""),
    ("stock-temp", "stock-temp", ""),
    ("stock-pair", "stock-pair", ""),
    ASGI,
    ASGI_HTTPTOOLS,
    ("stock-temp/malloc-tuned", "stock-temp", ""),
]
OURS, STOCK, NO_DIGEST = "tempstore+sha256", "stock-temp", "tempstore"
#: The stock handler with glibc's malloc tuned as the handler's priming tunes it
#: (prime_allocator: mmap threshold 8 to 16 MiB, trim threshold twice that; 16 MiB
#: here, the most it sets; any threshold above the 1 to 2 MiB buffers of the upload
#: path has the same effect), so that the ratio against it is the design's gain,
#: not the allocator's.
TUNED = "stock-temp/malloc-tuned"
CONFIG_ENV = {
    TUNED: {"MALLOC_MMAP_THRESHOLD_": str(16 * 1024 * 1024),
            "MALLOC_TRIM_THRESHOLD_": str(32 * 1024 * 1024)},
}  # fmt: skip
#: uvicorn's --http and --loop per ASGI label, and the modules each needs.
UVICORN_RUNTIMES = {
    ASGI[0]: (("h11", "asyncio"), ("h11",)),
    ASGI_HTTPTOOLS[0]: (("httptools", "uvloop"), ("httptools", "uvloop")),
}
#: Measured on the small series only, where commits dominate: the bookkeeping rows
#: committed without waiting for a disk flush (see bench/README.md).
RELAXED = ("tempstore+sha256/relaxed-db", "tempstore", "sha256")
#: On SQLite and the concurrent series only: ours with the database in WAL mode, as check
#: W008 asks (commits still flushed: synchronous=FULL); 16 uploads queue on SQLite's write
#: lock, and the rollback journal holds it for two flushes per commit.
WAL = ("tempstore+sha256/sqlite-wal", "tempstore", "sha256")
#: Only when asked for with --configs: the handler after MemoryFileUploadHandler,
#: whose 64 KiB chunk_size caps Django's reads (check W002).
AFTER_MEMORY = ("tempstore+sha256/after-memory", "memory+tempstore", "sha256")
#: Extra environment for the servers (--env), for experiments.
EXTRA_ENV: dict[str, str] = {}


@dataclass
class Series:
    name: str
    size: int
    count: int
    concurrency: int = 1


FULL = [
    # 1000, not 200: 200 such requests take about 0.2 s, which one burst of load decides.
    Series("10KiBx1000", 10 * KiB, 1000),
    Series("1MiBx50", MiB, 50),
    Series("64MiBx5", 64 * MiB, 5),
    Series("512MiBx2", 512 * MiB, 2),
    Series("16x8MiB-concurrent", 8 * MiB, 16, concurrency=16),
]
QUICK = [
    Series("10KiBx20", 10 * KiB, 20),
    Series("1MiBx5", MiB, 5),
    Series("16MiBx2", 16 * MiB, 2),
    Series("4x1MiB-concurrent", MiB, 4, concurrency=4),
]
# Which series of each set the targets compare (the large one: the biggest sequential series).
TINY, SMALL = 0, 1
#: The least req/s of ours against stock-temp on the TINY and SMALL series.
SMALL_TARGET = 1.0


@dataclass
class Result:
    db: str
    series: str
    config: str
    size: int
    count: int
    seconds: float
    mib_s: float
    req_s: float
    minflt_per_mib: float | None = None
    #: CPU time of the worker (every thread, user + system) per MiB: less noisy than
    #: MiB/s on a shared machine, since it does not count waiting for a core.
    cpu_ms_per_mib: float | None = None
    #: The worker's CPU time (user + system) per request: unlike req/s, hardly
    #: moved by other processes on a shared machine.
    cpu_ms_per_req: float | None = None
    hwm_mib: float | None = None
    #: Bytes the server process passed to write() per byte uploaded (/proc/<pid>/io wchar).
    writes_per_byte: float | None = None
    left_files: int = 0
    left_pending: int = 0
    errors: list[str] = field(default_factory=list)


# -- HTTP client ----------------------------------------------------------------------


def _recv_all(sock: socket.socket) -> bytes:
    parts = []
    while chunk := sock.recv(65536):
        parts.append(chunk)
    return b"".join(parts)


def _parse(response: bytes) -> tuple[int, bytes]:
    """The status and body of a whole response read to the connection's end.

    A body sent with ``Transfer-Encoding: chunked`` is decoded (uvicorn's
    httptools protocol sends one when the response has no ``Content-Length``,
    even to this HTTP/1.0 client); ``ValueError`` if it is malformed or cut short.
    """
    head, _, body = response.partition(b"\r\n\r\n")
    if not head:
        return 0, body
    status_line, *header_lines = head.split(b"\r\n")
    status = int(status_line.split(b" ", 2)[1])
    codings = b",".join(
        value
        for name, _, value in (line.partition(b":") for line in header_lines)
        if name.strip().lower() == b"transfer-encoding"
    )
    if codings and codings.split(b",")[-1].strip().lower() == b"chunked":
        body = dechunk(body)
    return status, body


_HEX = b"0123456789abcdefABCDEF"


def dechunk(body: bytes) -> bytes:
    """Decode a ``Transfer-Encoding: chunked`` body (RFC 9112 section 7.1); trailers are dropped."""
    parts = []
    pos = 0
    while True:
        end = body.find(b"\r\n", pos)
        if end < 0:
            raise ValueError(f"chunked body cut short in a chunk size line at byte {pos}")
        size_text = body[pos:end].split(b";", 1)[0].strip()
        # Hex digits only: int(..., 16) would also take "0x", "_", "+" and "-".
        if not size_text or size_text.strip(_HEX):
            raise ValueError(f"bad chunk size {size_text[:20]!r} at byte {pos}")
        size = int(size_text, 16)
        pos = end + 2
        if size == 0:
            break
        if len(body) < pos + size + 2:
            raise ValueError(f"chunked body cut short in a {size}-byte chunk at byte {pos}")
        if body[pos + size : pos + size + 2] != b"\r\n":
            raise ValueError(f"no CRLF after the {size}-byte chunk at byte {pos}")
        parts.append(body[pos : pos + size])
        pos += size + 2
    # The trailer section: header lines up to an empty line.
    while True:
        end = body.find(b"\r\n", pos)
        if end < 0:
            raise ValueError("chunked body cut short in its trailer section")
        if end == pos:
            return b"".join(parts)
        pos = end + 2


def get(port: int, path: str) -> Any:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
        status, body = _parse(_recv_all(sock))
    if status != 200:
        raise RuntimeError(f"GET {path}: {status} {body[:200]!r}")
    return json.loads(body)


def upload(port: int, size: int) -> tuple[int, bytes]:
    """POST one ``size``-byte file as multipart, streamed 1 MiB at a time."""
    boundary = uuid.uuid4().hex
    head = (
        f"--{boundary}\r\nContent-Disposition: form-data; "
        'name="file"; filename="bench.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    length = len(head) + size + len(tail)
    request = (
        f"POST /upload/ HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {length}\r\nConnection: close\r\n\r\n"
    ).encode()
    block = memoryview(BLOCK)
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(request + head)
        left = size
        while left:
            n = min(left, MiB)
            sock.sendall(block[:n])
            left -= n
        sock.sendall(tail)
        return _parse(_recv_all(sock))


def expected_sha256(size: int) -> str:
    digest = hashlib.sha256()
    for offset in range(0, size, MiB):
        digest.update(BLOCK[: min(MiB, size - offset)])
    return digest.hexdigest()


# -- servers --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env(work: Path, db: str, pg_name: str, handlers: str, digest: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="bench.settings",
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        BENCH_DIR=str(work),
        BENCH_DB=db,
        BENCH_PG_NAME=pg_name,
        BENCH_HANDLERS=handlers,
        BENCH_DIGEST=digest,
        PYTHONWARNINGS="ignore",
    )
    env.update(EXTRA_ENV)
    return env


def wait_for_server(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float) -> None:
    """Return once ``GET /stats/`` answers on ``port``; raise if ``proc`` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}, see its log")
        try:
            get(port, "/stats/")
            return
        except (OSError, RuntimeError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@contextlib.contextmanager
def gunicorn(env: dict[str, str], work: Path, workers: int = 1) -> Iterator[int]:
    port = free_port()
    cmd = [
        sys.executable, "-m", "gunicorn", "bench.wsgi:application",
        "--bind", f"127.0.0.1:{port}", "--workers", str(workers),
        "--worker-class", "sync", "--timeout", "600", "--backlog", "64",
    ]  # fmt: skip
    with _server(cmd, port, env, work, "gunicorn"):
        yield port


@contextlib.contextmanager
def uvicorn(
    env: dict[str, str], work: Path, workers: int = 1, http: str = "h11", loop: str = "asyncio"
) -> Iterator[int]:
    port = free_port()
    cmd = [
        sys.executable, "-m", "uvicorn", "bench.asgi:application",
        "--host", "127.0.0.1", "--port", str(port), "--no-access-log", "--backlog", "64",
        "--http", http, "--loop", loop,
        *(["--workers", str(workers)] if workers > 1 else []),
    ]  # fmt: skip
    with _server(cmd, port, env, work, "uvicorn"):
        yield port


def is_uvicorn(label: str) -> bool:
    return label in UVICORN_RUNTIMES


def server_for(label: str) -> Any:
    if not is_uvicorn(label):
        return gunicorn
    (http, loop), _ = UVICORN_RUNTIMES[label]
    return functools.partial(uvicorn, http=http, loop=loop)


def missing_modules(label: str) -> list[str]:
    """The modules a config's server needs that are not installed (none for gunicorn)."""
    if not is_uvicorn(label):
        return []
    _, modules = UVICORN_RUNTIMES[label]
    return [name for name in modules if importlib.util.find_spec(name) is None]


@contextlib.contextmanager
def _server(
    cmd: list[str], port: int, env: dict[str, str], work: Path, what: str
) -> Iterator[None]:
    with open(work / f"{what}.log", "ab") as log:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        wait_for_server(port, proc, what, timeout=60)
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def clean(work: Path) -> None:
    for name in ("tempstore", "stock"):
        folder = work / name
        if folder.is_dir():
            for path in folder.iterdir():
                path.unlink()


# -- references -----------------------------------------------------------------------


def disk_write(work: Path, size: int) -> float:
    """MiB/s of a sequential write (1 MiB writes, no fsync) into the temp folder."""
    path = work / "tempstore" / "reference.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        start = time.perf_counter()
        for _ in range(size // MiB):
            os.write(fd, BLOCK)
        seconds = time.perf_counter() - start
    finally:
        os.close(fd)
        path.unlink()
    return size / MiB / seconds


def _sink(listener: socket.socket) -> None:
    conn, _ = listener.accept()
    buf = bytearray(MiB)
    view = memoryview(buf)
    total = 0
    while n := conn.recv_into(view):
        total += n
    conn.sendall(str(total).encode())
    conn.close()


def socket_throughput(size: int) -> float:
    """MiB/s through a loopback TCP socket into another process."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    proc = multiprocessing.get_context("fork").Process(target=_sink, args=(listener,))
    proc.start()
    block = memoryview(BLOCK)
    with socket.create_connection(listener.getsockname()) as sock:
        start = time.perf_counter()
        for _ in range(size // MiB):
            sock.sendall(block)
        sock.shutdown(socket.SHUT_WR)
        received = int(_recv_all(sock))
        seconds = time.perf_counter() - start
    proc.join()
    listener.close()
    assert received == size
    return size / MiB / seconds


def sha256_speed(size: int) -> float:
    """MiB/s of hashlib's sha256 over ``size`` bytes in 1 MiB updates, on one core."""
    digest = hashlib.sha256()
    start = time.perf_counter()
    for _ in range(size // MiB):
        digest.update(BLOCK)
    return size / MiB / (time.perf_counter() - start)


def references(work: Path, size: int) -> dict[str, float]:
    return {
        "disk_mib_s": max(disk_write(work, size) for _ in range(2)),
        "socket_mib_s": max(socket_throughput(size * 2) for _ in range(2)),
        # Not a limit: the most a digest computed on one core can go (the 0.35x target's ceiling).
        "sha256_mib_s": max(sha256_speed(size) for _ in range(2)),
    }


# -- series ---------------------------------------------------------------------------


def run_series(port: int, series: Series, config: str, db: str, digest: str) -> Result:
    errors: list[str] = []
    want = expected_sha256(series.size) if digest else None
    before = get(port, "/stats/")

    def one() -> None:
        status, body = upload(port, series.size)
        if status != 200:
            errors.append(f"HTTP {status}: {body[:200]!r}")
            return
        got = json.loads(body)["file"]
        if got["size"] != series.size:
            errors.append(f"size {got['size']} != {series.size}")
        if want is not None and got["sha256"] != want:
            errors.append(f"sha256 {got['sha256']} != {want}")

    start = time.perf_counter()
    if series.concurrency == 1:
        for _ in range(series.count):
            one()
    else:
        threads = [threading.Thread(target=one) for _ in range(series.count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    seconds = time.perf_counter() - start
    after = get(port, "/stats/")
    total_mib = series.size * series.count / MiB
    result = Result(
        db=db,
        series=series.name,
        config=config,
        size=series.size,
        count=series.count,
        seconds=seconds,
        mib_s=total_mib / seconds,
        req_s=series.count / seconds,
        errors=errors,
    )
    if series.concurrency == 1 and before["pid"] == after["pid"]:
        result.minflt_per_mib = (after["minflt"] - before["minflt"]) / total_mib
        result.cpu_ms_per_mib = 1000 * (after["cpu_s"] - before["cpu_s"]) / total_mib
        result.cpu_ms_per_req = 1000 * (after["cpu_s"] - before["cpu_s"]) / series.count
        result.hwm_mib = after["hwm_kib"] / 1024
        result.writes_per_byte = (after["wchar"] - before["wchar"]) / (total_mib * MiB)
    # ASGI closes a request's uploads after its response is sent: wait for that.
    deadline = time.monotonic() + 10
    while (left := get(port, "/state/"))["pending"] and time.monotonic() < deadline:
        time.sleep(0.05)
    result.left_files, result.left_pending = len(left["files"]), left["pending"]
    return result


def create_pg_database(name: str) -> None:
    import psycopg

    with psycopg.connect(
        host=os.environ.get("PGHOST", "127.0.0.1"),
        port=os.environ.get("PGPORT", "5432"),
        user=os.environ.get("PGUSER", "postgres"),
        dbname="postgres",
        autocommit=True,
    ) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')


def drop_pg_database(name: str) -> None:
    import psycopg

    with (
        contextlib.suppress(psycopg.Error),
        psycopg.connect(
            host=os.environ.get("PGHOST", "127.0.0.1"),
            port=os.environ.get("PGPORT", "5432"),
            user=os.environ.get("PGUSER", "postgres"),
            dbname="postgres",
            autocommit=True,
        ) as conn,
    ):
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def migrate(env: dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, "-m", "django", "migrate", "-v", "0"],
        cwd=ROOT, env=env, check=True,
    )  # fmt: skip


def run(args: argparse.Namespace) -> dict[str, Any]:
    series_set = QUICK if args.quick else FULL
    wanted = args.configs.split(",") if args.configs else None
    configs = [c for c in [*CONFIGS, RELAXED, WAL] if wanted is None or c[0] in wanted]
    if wanted and AFTER_MEMORY[0] in wanted:
        configs.append(AFTER_MEMORY)
    log = print if not args.json else lambda *a, **k: None
    skipped = {}
    for label, *_ in configs:
        if missing := missing_modules(label):
            skipped[label] = (
                f"{', '.join(missing)} not installed (the test dependency group brings them; "
                'or pip install "uvicorn[standard]")'
            )
            log(f"# skipped {label}: {skipped[label]}", flush=True)
    configs = [c for c in configs if c[0] not in skipped]
    if args.series:
        series_set = [s for s in series_set if s.name in args.series.split(",")]
    dbs = args.db.split(",")
    work = Path(tempfile.mkdtemp(prefix="tsbench-", dir=args.dir))
    (work / "tempstore").mkdir(mode=0o700)
    (work / "stock").mkdir(mode=0o700)
    pg_name = f"bench_tempstore_{os.getpid()}"
    results: list[Result] = []
    ref_size = (64 if args.quick else 512) * MiB
    try:
        refs = references(work, ref_size)
        log(
            f"# references: disk write {refs['disk_mib_s']:.0f} MiB/s, "
            f"loopback socket {refs['socket_mib_s']:.0f} MiB/s",
            flush=True,
        )
        for db in dbs:
            if db == "postgres":
                create_pg_database(pg_name)
            migrate(server_env(work, db, pg_name, "tempstore", "sha256"))
            if args.quick:
                # One server per handler: a correctness smoke run, not a measurement.
                for label, handlers, digest in configs:
                    if label in (RELAXED[0], WAL[0]):
                        continue
                    env = server_env(work, db, pg_name, handlers, digest)
                    env.update(CONFIG_ENV.get(label, {}))
                    with server_for(label)(env, work) as port:
                        for series in series_set:
                            results.append(run_series(port, series, label, db, digest))
                            log(_line(results[-1]), flush=True)
                    clean(work)
                continue
            for series in series_set:
                # Rounds interleave the handlers, so that a burst of load on a shared
                # machine hits them alike; the median of the rounds is reported.
                for _ in range(args.rounds):
                    for label, handlers, digest in configs:
                        if label == RELAXED[0] and series.name != FULL[SMALL].name:
                            continue
                        if label == WAL[0] and (series.concurrency == 1 or db != "sqlite"):
                            continue
                        env = server_env(work, db, pg_name, handlers, digest)
                        env.update(CONFIG_ENV.get(label, {}))
                        if label == RELAXED[0]:
                            env["BENCH_DURABILITY"] = "relaxed"
                        if label == WAL[0]:
                            env["BENCH_DURABILITY"] = "wal"
                        workers = 4 if series.concurrency > 1 else 1
                        with server_for(label)(env, work, workers=workers) as port:
                            if series.concurrency > 1:
                                # One pass unmeasured: each of the 4 workers' first request
                                # opens its database connection (ours) and moves glibc's
                                # thresholds (both), which a running service has done long ago.
                                run_series(port, series, label, db, digest)
                            results.append(run_series(port, series, label, db, digest))
                        log(_line(results[-1]), flush=True)
                        clean(work)
        # Measured again at the end: on a shared machine, the best of both is the limit.
        end = references(work, ref_size)
        refs = {key: max(value, end[key]) for key, value in refs.items()}
    finally:
        if "postgres" in dbs:
            drop_pg_database(pg_name)
        shutil.rmtree(work, ignore_errors=True)
    return {
        "references": refs,
        "results": [asdict(r) for r in median_of_rounds(results)],
        "rounds": [asdict(r) for r in results],
        "quick": args.quick,
        "skipped": skipped,
    }


def median_of_rounds(results: list[Result]) -> list[Result]:
    """One result per (db, series, handler): median speeds and CPU, worst RSS, every error."""
    groups: dict[tuple[str, str, str], list[Result]] = {}
    for r in results:
        groups.setdefault((r.db, r.series, r.config), []).append(r)
    merged = []
    for rounds in groups.values():
        by_speed = sorted(rounds, key=lambda r: r.mib_s)
        median = by_speed[len(by_speed) // 2]
        hwm = [r.hwm_mib for r in rounds if r.hwm_mib is not None]
        cpu_mib = sorted(r.cpu_ms_per_mib for r in rounds if r.cpu_ms_per_mib is not None)
        cpu_req = sorted(r.cpu_ms_per_req for r in rounds if r.cpu_ms_per_req is not None)
        merged.append(
            Result(
                **{
                    **asdict(median),
                    "hwm_mib": max(hwm) if hwm else None,
                    "cpu_ms_per_mib": cpu_mib[len(cpu_mib) // 2] if cpu_mib else None,
                    "cpu_ms_per_req": cpu_req[len(cpu_req) // 2] if cpu_req else None,
                    "left_files": sum(r.left_files for r in rounds),
                    "left_pending": sum(r.left_pending for r in rounds),
                    "errors": [e for r in rounds for e in r.errors],
                }
            )
        )
    return merged


def _line(r: Result) -> str:
    extra = f" ERRORS: {r.errors[:3]}" if r.errors else ""
    return (
        f"  {r.db:8} {r.series:20} {r.config:35} {r.mib_s:8.1f} MiB/s {r.req_s:8.1f} req/s"
        f"  left {r.left_files} files, {r.left_pending} pending{extra}"
    )


# -- report ---------------------------------------------------------------------------


def _ratio(r: dict[str, Any], base: dict[str, Any] | None) -> str:
    return "" if base is None else f"{r['mib_s'] / base['mib_s']:.2f}"


def report(data: dict[str, Any]) -> tuple[str, bool]:
    """A markdown table of the results and targets; True if every check passed."""
    refs = data["references"]
    limit = min(refs["disk_mib_s"], refs["socket_mib_s"])
    by_key = {(r["db"], r["series"], r["config"]): r for r in data["results"]}
    lines = [
        *(f"Skipped {label}: {why}." for label, why in data.get("skipped", {}).items()),
        f"References: sequential write to the temp dir {refs['disk_mib_s']:.0f} MiB/s, "
        f"loopback socket {refs['socket_mib_s']:.0f} MiB/s; limit = the lower, {limit:.0f} MiB/s"
        + (
            f"; sha256 on one core {refs['sha256_mib_s']:.0f} MiB/s "
            f"({refs['sha256_mib_s'] / limit:.2f}x the limit)."
            if "sha256_mib_s" in refs
            else "."
        ),
        "",
        "| db | series | handler | MiB/s | req/s | % of limit | minflt/MiB | CPU ms/MiB "
        "| CPU ms/req | peak RSS MiB | writes/byte | x stock-temp | x stock-pair "
        "| x malloc-tuned |",
        "| --- | --- | --- " + "| ---: " * 11 + "|",
    ]
    for r in data["results"]:
        temp = by_key.get((r["db"], r["series"], "stock-temp"))
        pair = by_key.get((r["db"], r["series"], "stock-pair"))
        tuned = by_key.get((r["db"], r["series"], TUNED))
        flt = "" if r["minflt_per_mib"] is None else f"{r['minflt_per_mib']:.1f}"
        hwm = "" if r["hwm_mib"] is None else f"{r['hwm_mib']:.1f}"
        writes = r.get("writes_per_byte")
        wpb = "" if writes is None else f"{writes:.2f}"
        cpu = "" if r.get("cpu_ms_per_mib") is None else f"{r['cpu_ms_per_mib']:.2f}"
        cpu_req = "" if r.get("cpu_ms_per_req") is None else f"{r['cpu_ms_per_req']:.3f}"
        lines.append(
            f"| {r['db']} | {r['series']} | {r['config']} | {r['mib_s']:.0f} | {r['req_s']:.1f} "
            f"| {100 * r['mib_s'] / limit:.0f}% | {flt} | {cpu} | {cpu_req} | {hwm} | {wpb} "
            f"| {_ratio(r, temp)} | {_ratio(r, pair)} | {_ratio(r, tuned)} |"
        )
    series_set = QUICK if data["quick"] else FULL
    tiny, small = series_set[TINY].name, series_set[SMALL].name
    large = max((s for s in series_set if s.concurrency == 1), key=lambda s: s.size).name
    concurrent = series_set[-1].name
    ok = True
    lines += ["", "| db | target | measured | result |", "| --- | --- | --- | --- |"]

    def target(db: str, text: str, measured: str, passed: bool, miss: str) -> None:
        nonlocal ok
        ok = ok and passed
        lines.append(f"| {db} | {text} | {measured} | {'PASS' if passed else 'MISS ' + miss} |")

    for db in dict.fromkeys(r["db"] for r in data["results"]):
        errors = [e for r in data["results"] if r["db"] == db for e in r["errors"]]
        left = [
            r for r in data["results"] if r["db"] == db and (r["left_files"] or r["left_pending"])
        ]
        target(db, "every upload answered 200 with the right size and digest",
               f"{len(errors)} errors", not errors, f"{errors[:2]}")  # fmt: skip
        target(db, "nothing left behind (files, pending rows) after each series",
               f"{len(left)} series left something", not left,
               ", ".join(f"{r['series']}/{r['config']}" for r in left))  # fmt: skip
        asgis = [
            r for r in data["results"]
            if r["db"] == db and r["series"] == large and is_uvicorn(r["config"])
        ]  # fmt: skip
        wsgi = by_key.get((db, large, OURS))
        if not data["quick"] and asgis and wsgi is not None:
            # The target is uvicorn's: the fastest way this run served it counts.
            best = max(asgis, key=lambda r: r["mib_s"])
            ratio = best["mib_s"] / wsgi["mib_s"]
            others = ", ".join(
                f"{r['config']} {r['mib_s'] / wsgi['mib_s']:.2f}x" for r in asgis if r is not best
            )
            target(db, f"{large}: uvicorn (best of the run: {best['config']}) >= 0.9x {OURS} "
                   f"(gunicorn) MiB/s", f"{ratio:.2f}x" + (f" ({others})" if others else ""),
                   ratio >= 0.9, f"by {0.9 - ratio:.2f}x")  # fmt: skip
            if wsgi.get("cpu_ms_per_mib") and all(r.get("cpu_ms_per_mib") for r in asgis):
                lines.append(
                    f"| {db} | {large}: CPU ms/MiB, x {OURS} (gunicorn; lower is "
                    "cheaper, and less changed by the machine's load than MiB/s) | "
                    + ", ".join(
                        f"{r['config']} {r['cpu_ms_per_mib'] / wsgi['cpu_ms_per_mib']:.2f}x"
                        for r in asgis
                    )
                    + " | info |"
                )
            for asgi in asgis:
                writes = asgi["writes_per_byte"]
                if writes is None:  # The worker restarted mid-series: no figure.
                    continue
                target(db, f"{large}: {asgi['config']} writes each byte once (server write() "
                       "bytes per uploaded byte <= 1.05)", f"{writes:.3f}",
                       writes <= 1.05, f"by {writes - 1.05:.3f}")  # fmt: skip
        if data["quick"]:
            continue

        def pair(series: str, db: str = db) -> tuple[dict[str, Any], dict[str, Any]] | None:
            ours, stock = by_key.get((db, series, OURS)), by_key.get((db, series, STOCK))
            return None if ours is None or stock is None else (ours, stock)

        if found := pair(large):
            for label, share in ((NO_DIGEST, 0.5), (OURS, 0.35)):
                if (key := (db, large, label)) in by_key:
                    got = by_key[key]["mib_s"] / limit
                    target(db, f"{large}: {label} >= {share}x the limit", f"{got:.2f}x",
                           got >= share, f"by {share - got:.2f}x")  # fmt: skip
            ratio = found[0]["mib_s"] / found[1]["mib_s"]
            target(db, f"{large}: {OURS} >= 4x {STOCK} MiB/s", f"{ratio:.2f}x",
                   ratio >= 4, f"by {4 - ratio:.2f}x")  # fmt: skip
            if (key := (db, large, TUNED)) in by_key:
                ratio = found[0]["mib_s"] / by_key[key]["mib_s"]
                target(db, f"{large}: {OURS} >= 2x {TUNED} MiB/s", f"{ratio:.2f}x",
                       ratio >= 2, f"by {2 - ratio:.2f}x")  # fmt: skip
        for series in (tiny, small):
            if not (found := pair(series)):
                continue
            ratio = found[0]["req_s"] / found[1]["req_s"]
            target(db, f"{series}: {OURS} >= {SMALL_TARGET:.1f}x {STOCK} req/s", f"{ratio:.2f}x",
                   ratio >= SMALL_TARGET, f"by {SMALL_TARGET - ratio:.2f}x")  # fmt: skip
        relaxed = by_key.get((db, small, RELAXED[0]))
        if relaxed is not None and (found := pair(small)):
            ratio = relaxed["req_s"] / found[1]["req_s"]
            target(db, f"{small}: {RELAXED[0]} >= {SMALL_TARGET:.1f}x {STOCK} req/s (same "
                   "target, rows committed without a disk flush)", f"{ratio:.2f}x",
                   ratio >= SMALL_TARGET, f"by {SMALL_TARGET - ratio:.2f}x")  # fmt: skip
        if (big := pair(large)) and (one := pair(small)):
            growth = big[0]["hwm_mib"] - one[0]["hwm_mib"]
            target(db, f"peak RSS {large} - {small} <= 8 MiB ({OURS})", f"{growth:+.1f} MiB",
                   growth <= 8, f"by {growth - 8:.1f} MiB")  # fmt: skip
        conc = [by_key[key] for c in [*CONFIGS, WAL] if (key := (db, concurrent, c[0])) in by_key]
        c_ours, c_stock = by_key.get((db, concurrent, OURS)), by_key.get((db, concurrent, STOCK))
        if c_ours and c_stock:
            ratio = c_ours["mib_s"] / c_stock["mib_s"]
            target(db, f"{concurrent}: {OURS} >= 1.5x {STOCK} total MiB/s", f"{ratio:.2f}x",
                   ratio >= 1.5, f"by {1.5 - ratio:.2f}x")  # fmt: skip
        if c_stock and (c_wal := by_key.get((db, concurrent, WAL[0]))):
            ratio = c_wal["mib_s"] / c_stock["mib_s"]
            target(db, f"{concurrent}: {WAL[0]} >= 1.5x {STOCK} total MiB/s (same target, "
                   "SQLite in WAL mode as W008 asks)", f"{ratio:.2f}x",
                   ratio >= 1.5, f"by {1.5 - ratio:.2f}x")  # fmt: skip
        lines.append(
            f"| {db} | {concurrent} total MiB/s | "
            + ", ".join(f"{c['config']} {c['mib_s']:.0f}" for c in conc)
            + " | info |"
        )
    return "\n".join(lines), ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--db", default=None, help="sqlite,postgres (quick: sqlite)")
    parser.add_argument("--dir", default=None, help="work folder parent (default: system temp)")
    parser.add_argument("--json", action="store_true", help="print the raw results as JSON")
    parser.add_argument("--save", default=None, help="also write the raw results to this file")
    parser.add_argument(
        "--rounds", type=int, default=3, help="fresh-server runs per series and handler (median)"
    )
    parser.add_argument("--configs", default="", help="only these handler configs (comma list)")
    parser.add_argument("--series", default="", help="only these series (comma list)")
    parser.add_argument(
        "--env", action="append", default=[], help="KEY=VALUE for the servers (experiments)"
    )
    args = parser.parse_args(argv)
    EXTRA_ENV.update(item.split("=", 1) for item in args.env)
    if args.db is None:
        args.db = "sqlite" if args.quick else "sqlite,postgres"
    data = run(args)
    table, ok = report(data)
    data["table"], data["ok"] = table, ok
    if args.save:
        Path(args.save).parent.mkdir(parents=True, exist_ok=True)
        Path(args.save).write_text(json.dumps(data, indent=1))
    print(json.dumps(data) if args.json else "\n" + table)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
