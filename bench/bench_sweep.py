"""Sweep 100 000 orphan files and 100 000 expired rows; compare with ``find -delete``.

    python -m bench.bench_sweep                          # SQLite and PostgreSQL, 3 rounds
    python -m bench.bench_sweep --db sqlite --files 20000 --rounds 1
    python -m bench.bench_sweep --dir /dev/shm           # tmpfs: the sweep's own CPU cost shows

Each database runs in its own process (the settings pick one). Every round builds three
identical trees of ``--files`` files of 64 bytes with the same names (one after the other, in the
same filesystem) and deletes them: ``find DIR -type f -delete``, the sweep of orphan files (no rows
at all) and the sweep of as many expired kept rows, each with its file. The three run in a rotated
order (the disk's background work after one deletion slows the next, whichever it is), and each
round's ratio is taken between its own figures; the median ratio counts.

Target: the orphan sweep at least 0.75x the files/s of ``find -delete`` on each database
(``PASS``/``MISS``); the expired rows' ratio to ``find`` is shown for information. Peak RSS is shown
before and after the sweeps (memory must not grow with the number of files or rows). Exit status
1 when a target is missed. Not a unit test.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TARGET = 0.75
DBS = ("sqlite", "postgres")


def loadavg() -> str:
    with open("/proc/loadavg") as fh:
        return " ".join(fh.read().split()[:3])


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_files(directory: Path, names: list[str], size: int = 64) -> None:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    data = b"x" * size
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for name in names:
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=dir_fd)
            os.write(fd, data)
            os.close(fd)
    finally:
        os.close(dir_fd)
    # Flush the creations now, so that their writeback does not slow down the deletions timed next.
    os.sync()


def child(args: argparse.Namespace) -> dict[str, Any]:
    """Measure one database (the one ``TEMPSTORE_TEST_DB`` names), in this process."""
    work = Path(args.workdir)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    os.environ["TEMPSTORE_TEST_WORKDIR"] = str(work)
    os.environ["TEMPSTORE_DIR"] = str(work / "tempstore")
    sys.path.insert(0, str(ROOT))

    import django

    django.setup()

    from django.core.management import call_command
    from django.db import connection
    from django.test.utils import setup_databases, teardown_databases
    from django.utils import timezone

    from django_tempstore.conf import conf
    from django_tempstore.models import State, TempUpload
    from django_tempstore.storage import ensure_dir, new_name
    from django_tempstore.sweep import sweep

    queries = [0]

    def count(execute, sql, params, many, context):  # type: ignore[no-untyped-def]
        queries[0] += 1
        return execute(sql, params, many, context)

    def timed_sweep(**kwargs: Any) -> tuple[Any, float, int]:
        queries[0] = 0
        with connection.execute_wrapper(count):
            start = time.perf_counter()
            report = sweep(**kwargs)
            elapsed = time.perf_counter() - start
        return report, elapsed, queries[0]

    old_config = setup_databases(verbosity=0, interactive=False)
    rounds = []
    try:
        call_command("migrate", verbosity=0)
        directory = ensure_dir(conf.DIR)
        rss_start = peak_rss_mib()
        for number in range(args.rounds):
            names = [new_name() for _ in range(args.files)]
            figures: dict[str, Any] = {"load_before": loadavg()}

            def find(names: list[str], number: int = number) -> dict[str, Any]:
                tree = work / f"find-{number}"
                make_files(tree, names)
                start = time.perf_counter()
                subprocess.run(["find", str(tree), "-type", "f", "-delete"], check=True)
                elapsed = time.perf_counter() - start
                tree.rmdir()
                return {"find_s": elapsed}

            def orphans(names: list[str]) -> dict[str, Any]:
                make_files(directory, names)
                report, elapsed, count = timed_sweep(older_than=timedelta(0))
                assert report.counts["orphan"] == len(names), report.as_dict()
                assert not any(directory.iterdir())
                return {"orphan_s": elapsed, "orphan_queries": count}

            def rows(names: list[str]) -> dict[str, Any]:
                make_files(directory, names)
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
                report, elapsed, count = timed_sweep()
                assert report.counts["expired"] == len(names), report.as_dict()
                assert TempUpload.objects.pending().count() == 0
                assert not any(directory.iterdir())
                TempUpload.objects.all().delete()
                return {"rows_s": elapsed, "rows_queries": count}

            steps = [find, orphans, rows]
            shift = number % len(steps)
            order = steps[shift:] + steps[:shift]
            for step in order:
                figures.update(step(names))
            figures["order"] = [step.__name__ for step in order]
            figures["load_after"] = loadavg()
            figures["orphan_ratio"] = figures["find_s"] / figures["orphan_s"]
            figures["rows_ratio"] = figures["find_s"] / figures["rows_s"]
            rounds.append(figures)
            print(
                f"{connection.vendor} round {number + 1}: find {figures['find_s']:.2f}s, "
                f"orphans {figures['orphan_s']:.2f}s, rows {figures['rows_s']:.2f}s",
                file=sys.stderr,
                flush=True,
            )
        return {
            "vendor": connection.vendor,
            "dir": str(directory),
            "files": args.files,
            "rounds": rounds,
            "rss_start": rss_start,
            "rss_end": peak_rss_mib(),
        }
    finally:
        teardown_databases(old_config, verbosity=0)


def run_database(db: str, args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="tsbench-", dir=args.dir))
    env = {**os.environ, "TEMPSTORE_TEST_DB": db}
    env.setdefault("TEMPSTORE_TEST_DB_NAME", f"bench_sweep_{os.getpid()}")
    command = [sys.executable, __file__, "--child", "--workdir", str(work)]
    command += ["--files", str(args.files), "--rounds", str(args.rounds)]
    try:
        done = subprocess.run(command, env=env, stdout=subprocess.PIPE, text=True, check=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def show(db: str, result: dict[str, Any]) -> bool:
    files = result["files"]
    print(f"\n{db}: {files} files per tree, temp dir {result['dir']}")
    print("| round | order | load before / after | find files/s | orphans files/s | queries "
          "| x find | expired rows/s | queries | x find |")  # fmt: skip
    print("| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for number, r in enumerate(result["rounds"], 1):
        print(
            f"| {number} | {', '.join(r['order'])} | {r['load_before']} / {r['load_after']} "
            f"| {files / r['find_s']:,.0f} | {files / r['orphan_s']:,.0f} | {r['orphan_queries']} "
            f"| {r['orphan_ratio']:.2f} | {files / r['rows_s']:,.0f} | {r['rows_queries']} "
            f"| {r['rows_ratio']:.2f} |"
        )
    orphan = statistics.median(r["orphan_ratio"] for r in result["rounds"])
    rows = statistics.median(r["rows_ratio"] for r in result["rounds"])
    verdict = "PASS" if orphan >= TARGET else f"MISS by {TARGET - orphan:.2f}x"
    print(f"{db}: orphan sweep / find -delete, median {orphan:.2f}x (>= {TARGET}x): {verdict}")
    print(f"{db}: expired rows sweep / find -delete, median {rows:.2f}x (info)")
    print(
        f"{db}: peak RSS {result['rss_start']:.1f} MiB before the sweeps, "
        f"{result['rss_end']:.1f} after"
    )
    return orphan >= TARGET


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="sqlite,postgres", help="sqlite,postgres")
    parser.add_argument("--files", type=int, default=100_000, help="files per tree")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", default=None, help="work folder parent (default: system temp)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return 0
    dbs = [db for db in args.db.split(",") if db]
    if unknown := set(dbs) - set(DBS):
        parser.error(f"unknown --db {', '.join(sorted(unknown))}")
    print(f"load average at the start: {loadavg()}")
    met = [show(db, run_database(db, args)) for db in dbs]
    print(f"\nload average at the end: {loadavg()}")
    return 0 if all(met) else 1


if __name__ == "__main__":
    sys.exit(main())
