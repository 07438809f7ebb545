"""Multipart parsers side by side: ``python -m bench.bench_parsers [--mib 512] [--rounds 3]``.

Each parser reads the same ``--mib`` MiB multipart body (one file part) from an
in-memory stream in 1 MiB reads and throws the file's bytes away, so what is
measured is the parser alone: Django's ``MultiPartParser``, ours
(``StreamingMultiPartParser``, both driving a do-nothing upload handler), and the
three maintained parsers on PyPI (python-multipart, streaming-form-data,
multipart), each through its own push API. ``read only`` is the stream without a
parser, the ceiling. Best of ``--rounds`` runs; the ratios are against Django's.
A parser that is not installed is skipped.

The process's allocator is primed first, as ``TempStoreUploadHandler`` primes a
worker's (see ``prime_allocator``): without it every 1 MiB bytes object a parser
makes is a fresh ``mmap`` whose pages all fault, which slows the parsers that copy
(Django's most) by more than their own work. ``--no-prime`` measures that case.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from io import BytesIO
from typing import Any

import django
from django.conf import settings

MiB = 1024 * 1024
BOUNDARY = "----benchboundary7MA4YWxkTrZu0gW"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


class Body:
    """A multipart body of ``size`` file bytes, read as a socket would give it."""

    def __init__(self, size: int) -> None:
        self.head = (
            f"--{BOUNDARY}\r\nContent-Disposition: form-data; "
            'name="file"; filename="bench.bin"\r\nContent-Type: application/octet-stream\r\n\r\n'
        ).encode()
        self.tail = f"\r\n--{BOUNDARY}--\r\n".encode()
        self.block = os.urandom(MiB)
        self.size = size
        self.length = len(self.head) + size + len(self.tail)

    def reader(self) -> Callable[[int], bytes]:
        pieces = iter([self.head] + [self.block] * (self.size // MiB) + [self.tail])
        # The same bytes objects every time: the stream itself costs (almost) nothing.
        return lambda n: next(pieces, b"")

    def stream(self) -> Any:
        stream = BytesIO()  # only its read() is used
        stream.read = self.reader()  # type: ignore[method-assign]
        return stream


def read_only(body: Body) -> int:
    read, total = body.reader(), 0
    while data := read(MiB):
        total += len(data)
    return total


def django_parser(body: Body, parser_class: Any = None) -> int:
    from django.core.files.uploadhandler import FileUploadHandler
    from django.http.multipartparser import MultiPartParser

    class Sink(FileUploadHandler):
        chunk_size = MiB
        total = 0

        def receive_data_chunk(self, raw_data: bytes, start: int) -> None:
            Sink.total += len(raw_data)

        def file_complete(self, file_size: int) -> None:
            return None

    meta = {"CONTENT_TYPE": CONTENT_TYPE, "CONTENT_LENGTH": str(body.length)}
    (parser_class or MultiPartParser)(meta, body.stream(), [Sink()], "utf-8").parse()
    return Sink.total


def ours(body: Body) -> int:
    from django_tempstore.multipart import StreamingMultiPartParser

    return django_parser(body, StreamingMultiPartParser)


def python_multipart(body: Body) -> int:
    from python_multipart import MultipartParser

    total = 0

    def on_part_data(data: bytes, start: int, end: int) -> None:
        nonlocal total
        total += end - start

    parser = MultipartParser(BOUNDARY, {"on_part_data": on_part_data})
    read = body.reader()
    while data := read(MiB):
        parser.write(data)
    parser.finalize()
    return total


def streaming_form_data(body: Body) -> int:
    from streaming_form_data import StreamingFormDataParser
    from streaming_form_data.targets import BaseTarget

    class Count(BaseTarget):
        total = 0

        def on_data_received(self, chunk: bytes) -> None:
            Count.total += len(chunk)

    parser = StreamingFormDataParser(headers={"Content-Type": CONTENT_TYPE})
    parser.register("file", Count())
    read = body.reader()
    while data := read(MiB):
        parser.data_received(data)
    return Count.total


def multipart(body: Body) -> int:
    from multipart import PushMultipartParser

    total = 0
    read = body.reader()
    with PushMultipartParser(BOUNDARY) as parser:
        while data := read(MiB):
            for event in parser.parse(data):
                if isinstance(event, (bytes, bytearray, memoryview)):
                    total += len(event)
    return total


PARSERS: list[tuple[str, Callable[[Body], int]]] = [
    ("read only", read_only),
    ("django MultiPartParser", django_parser),
    ("ours StreamingMultiPartParser", ours),
    ("python-multipart", python_multipart),
    ("streaming-form-data", streaming_form_data),
    ("multipart", multipart),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-prime", action="store_true", help="leave glibc's malloc as it starts")
    args = parser.parse_args()
    if not args.no_prime:
        block = bytearray(16 * MiB)  # calloc'd, then freed: glibc raises its mmap threshold
        del block
    settings.configure(DEFAULT_CHARSET="utf-8")
    django.setup()
    body = Body(args.mib * MiB)
    speeds: dict[str, float] = {}
    for name, run in PARSERS:
        best = float("inf")
        try:
            for _ in range(args.rounds):
                start = time.perf_counter()
                total = run(body)
                best = min(best, time.perf_counter() - start)
        except ImportError as exc:
            print(f"# {name}: skipped ({exc})")
            continue
        if name != "read only":
            assert total == body.size, (name, total)
        speeds[name] = args.mib / best
    with open("/proc/loadavg") as load:
        primed = "not primed" if args.no_prime else "allocator primed"
        print(f"# {args.mib} MiB body, best of {args.rounds}, {primed}; "
              f"/proc/loadavg: {load.read().strip()}")  # fmt: skip
    base = speeds.get("django MultiPartParser")
    print("| parser | MiB/s | x Django |\n| --- | ---: | ---: |")
    for name, speed in speeds.items():
        ratio = f"{speed / base:.2f}" if base else ""
        print(f"| {name} | {speed:.0f} | {ratio} |")


if __name__ == "__main__":
    main()
