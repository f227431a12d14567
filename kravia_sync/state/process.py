"""Who a process is, for the writer lease: enough to tell whether a lease holder still runs.

A lease names its holder by a random id; whether that holder is alive can only be told for a
process of this machine's kernel in this process namespace (two containers with the same
hostname both run their process as PID 1: a PID alone says nothing). So a process is known
by its host key (hostname, kernel boot id and PID namespace), its PID and its start time
(a PID reused by a later process has another start time).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ProcessIdentity", "holder_alive", "this_process"]


@dataclass(frozen=True, slots=True)
class ProcessIdentity:
    host: str  # the hostname, for people
    host_key: str  # hostname, boot id and PID namespace: where PIDs mean the same process
    pid: int
    started: str | None  # the process's start time in clock ticks since boot, where known


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None


def _pid_namespace() -> str | None:
    try:
        return str(Path("/proc/self/ns/pid").readlink())
    except OSError:
        return None


def start_time(pid: int) -> str | None:
    """A process's start time (field 22 of /proc/PID/stat), or None where unknown."""
    stat = _read(f"/proc/{pid}/stat")
    if stat is None:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ")".
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None


def this_process() -> ProcessIdentity:
    host = socket.gethostname()
    boot = _read("/proc/sys/kernel/random/boot_id") or "?"
    namespace = _pid_namespace() or "?"
    pid = os.getpid()
    return ProcessIdentity(host, f"{host}|{boot}|{namespace}", pid, start_time(pid))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def holder_alive(host_key: str, pid: int, started: str | None) -> bool | None:
    """Whether the process that took a lease still runs: True, False, or None when this
    process cannot tell (another host, another PID namespace, a boot id we cannot read)."""
    me = this_process()
    if host_key != me.host_key or "?" in host_key.split("|")[1:]:
        return None
    if not _pid_alive(pid):
        return False
    if started is None:
        return True  # no start time to compare: assume the worst
    return start_time(pid) == started  # another start time: the PID was reused
