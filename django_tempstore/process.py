"""Who wrote a row: a process identity that survives pid reuse and tells PID namespaces apart."""

from __future__ import annotations

import functools
import os

#: Field 22 of /proc/<pid>/stat (1-based): the process start, in clock ticks since boot.
_STARTTIME_FIELD = 22


def _read(path: str) -> str:
    with open(path) as fh:
        return fh.read()


def start_ticks(pid: int) -> str | None:
    """When ``pid`` started (clock ticks since boot); None if it is gone or a zombie."""
    try:
        data = _read(f"/proc/{pid}/stat")
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ")".
    fields = data[data.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None  # Dead, not yet reaped by its parent (gunicorn's arbiter).
    return fields[_STARTTIME_FIELD - 3]


@functools.cache
def _machine() -> str | None:
    """This boot and PID namespace; pids of another one mean nothing here."""
    try:
        boot = _read("/proc/sys/kernel/random/boot_id").strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return None
    return f"{boot}:{namespace}"


def identity() -> str:
    """``"<boot id>:<pid namespace>:<start ticks>"`` of this process.

    Empty where /proc cannot tell (not Linux): then only the pid is known.
    """
    return _identity(os.getpid())


@functools.lru_cache(maxsize=64)
def _identity(pid: int) -> str:
    # Cached by pid: a forked worker has a new pid, so a fresh entry.
    machine = _machine()
    start = start_ticks(pid)
    if machine is None or start is None:
        return ""
    return f"{machine}:{start}"


def is_gone(pid: int, recorded: str) -> bool | None:
    """True if the process that recorded ``recorded`` (its ``identity()``) has ended.

    False if it still runs; None if this process cannot tell (another boot's or
    PID namespace's identity, or none recorded).
    """
    machine = _machine()
    if not recorded or machine is None or not recorded.startswith(machine + ":"):
        return None
    if pid <= 0:
        return True
    start = start_ticks(pid)
    # A pid that now belongs to a younger process is the old one gone.
    return start is None or f"{machine}:{start}" != recorded


__all__ = ["identity", "is_gone", "start_ticks"]
