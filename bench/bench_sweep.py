"""Sweep 100 000 orphan files and 100 000 expired rows; compare with ``find -delete``.

    python bench/bench_sweep.py                      # SQLite
    TEMPSTORE_TEST_DB=postgres python bench/bench_sweep.py
    python bench/bench_sweep.py --files 20000 --rows 20000

Target: the orphan sweep runs at least half as fast as ``find DIR -type f -delete``
on the same number of files (ratio >= 0.5), in memory that does not grow with
the number of files or rows (batched queries, ``os.scandir``). Not a unit test.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
WORK = Path(tempfile.mkdtemp(prefix="tsbench-"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
os.environ["TEMPSTORE_TEST_WORKDIR"] = str(WORK)
os.environ["TEMPSTORE_DIR"] = str(WORK / "tempstore")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test.utils import setup_databases, teardown_databases  # noqa: E402
from django.utils import timezone  # noqa: E402

from django_tempstore.conf import conf  # noqa: E402
from django_tempstore.models import State, TempUpload  # noqa: E402
from django_tempstore.storage import ensure_dir, new_name  # noqa: E402
from django_tempstore.sweep import sweep  # noqa: E402


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_files(directory: Path, count: int, size: int = 64) -> list[str]:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    data = b"x" * size
    names = []
    for _ in range(count):
        name = new_name()
        fd = os.open(directory / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, data)
        os.close(fd)
        names.append(name)
    # Flush the creations now, so that their writeback does not slow down the deletions timed next.
    os.sync()
    return names


class QueryCounter:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self, execute, sql, params, many, context):  # type: ignore[no-untyped-def]
        self.count += 1
        return execute(sql, params, many, context)


def timed_sweep(**kwargs):  # type: ignore[no-untyped-def]
    counter = QueryCounter()
    with connection.execute_wrapper(counter):
        start = time.perf_counter()
        report = sweep(**kwargs)
        elapsed = time.perf_counter() - start
    return report, elapsed, counter.count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()

    old_config = setup_databases(verbosity=0, interactive=False)
    try:
        call_command("migrate", verbosity=0)
        vendor = connection.vendor
        directory = ensure_dir(conf.DIR)

        # 1. find -delete on the same number of files, same filesystem.
        find_dir = WORK / "find"
        make_files(find_dir, args.files)
        start = time.perf_counter()
        subprocess.run(["find", str(find_dir), "-type", "f", "-delete"], check=True)
        find_time = time.perf_counter() - start
        find_rate = args.files / find_time

        # 2. The sweep on as many orphan files (no rows at all).
        make_files(directory, args.files)
        rss_before = peak_rss_mib()
        report, orphan_time, orphan_queries = timed_sweep(older_than=timedelta(0))
        assert report.counts["orphan"] == args.files, report.as_dict()
        assert not any(directory.iterdir())
        orphan_rate = args.files / orphan_time
        rss_orphans = peak_rss_mib()

        # 3. Expired kept rows, each with its file.
        names = make_files(directory, args.rows)
        past = timezone.now() - timedelta(hours=1)
        for i in range(0, len(names), 5000):
            TempUpload.objects.bulk_create(
                TempUpload(
                    name=name,
                    state=State.KEPT,
                    size=64,
                    expires_at=past,
                    host=conf.HOSTNAME,
                    pid=os.getpid(),
                )  # fmt: skip
                for name in names[i : i + 5000]
            )
        del names
        rss_before_rows = peak_rss_mib()
        report, rows_time, rows_queries = timed_sweep()
        assert report.counts["expired"] == args.rows, report.as_dict()
        assert TempUpload.objects.pending().count() == 0
        rows_rate = args.rows / rows_time
        rss_rows = peak_rss_mib()

        ratio = orphan_rate / find_rate
        print(f"database: {vendor}; temp dir: {directory}")
        print(
            f"find -type f -delete: {args.files} files in {find_time:.2f}s "
            f"= {find_rate:,.0f} files/s"
        )
        print(
            f"sweep, orphan files:  {args.files} files in {orphan_time:.2f}s "
            f"= {orphan_rate:,.0f} files/s, {orphan_queries} queries; "
            f"ratio to find: {ratio:.2f} (target >= 0.50: {'met' if ratio >= 0.5 else 'NOT met'})"
        )
        print(
            f"sweep, expired rows:  {args.rows} rows+files in {rows_time:.2f}s "
            f"= {rows_rate:,.0f} rows/s, {rows_queries} queries"
        )
        print(
            f"peak RSS: {rss_before:.1f} MiB before the orphan sweep, {rss_orphans:.1f} after; "
            f"{rss_before_rows:.1f} before the rows sweep, {rss_rows:.1f} after"
        )
    finally:
        teardown_databases(old_config, verbosity=0)
        shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
