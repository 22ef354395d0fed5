"""CPU time and memory of the processes a bench run involves, read from /proc (Linux)."""

from __future__ import annotations

import os
import resource
from collections.abc import Callable, Mapping
from pathlib import Path

PROC = Path("/proc")
UTIME, STIME, CUTIME, CSTIME = 11, 12, 13, 14
"""Fields of /proc/PID/stat after the command name (utime is the 14th field of the line)."""
PPID = 1

CpuReader = Callable[[], float]
"""Cumulative CPU seconds of one process (or process tree) so far."""


def _stat(pid: int) -> list[str]:
    # The command name (2nd field) is in parentheses and may hold spaces: split after it.
    return (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()


def _seconds(ticks: int) -> float:
    return ticks / os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` (all its threads) so far."""
    fields = _stat(pid)
    return _seconds(int(fields[UTIME]) + int(fields[STIME]))


def processes_cpu_seconds(pids: list[int]) -> float:
    """The CPU time of processes ``pids`` together (process_cpu_seconds of each)."""
    return sum(process_cpu_seconds(pid) for pid in pids)


def children(pid: int) -> list[int]:
    """The live processes whose parent is ``pid``."""
    found = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if int(_stat(int(entry.name))[PPID]) == pid:
                found.append(int(entry.name))
        except (OSError, IndexError, ValueError):  # gone meanwhile
            continue
    return found


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of a server that forks a process per connection (PostgreSQL's postmaster).

    The process's own time, the time of the children it has reaped (exited backends), and
    that of its live children. A child that exits between the two reads is missed once;
    a bench's pooled connections rarely do.
    """
    fields = _stat(pid)
    total = sum(int(fields[i]) for i in (UTIME, STIME, CUTIME, CSTIME))
    for child in children(pid):
        try:
            child_fields = _stat(child)
        except OSError:  # exited meanwhile
            continue
        total += int(child_fields[UTIME]) + int(child_fields[STIME])
    return _seconds(total)


def machine_busy_seconds() -> float:
    """CPU time the whole machine has been busy so far, all cores together: every process's,
    ours and others' (/proc/stat: user, nice, system, irq, softirq and steal)."""
    fields = (PROC / "stat").read_text().split("\n", 1)[0].split()[1:9]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields)
    return _seconds(user + nice + system + irq + softirq + steal)


def own_cpu_seconds() -> float:
    """User plus system CPU time of this process (all its threads, not its children)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mib(pid: int) -> float:
    """Peak resident memory of process ``pid`` (VmHWM), MiB to one decimal."""
    status = (PROC / str(pid) / "status").read_text()
    peak_kib = next(
        int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM")
    )
    return round(peak_kib / 1024, 1)


def read_all(readers: Mapping[str, CpuReader | None]) -> dict[str, float | None]:
    """Each reader's CPU seconds so far, by process; None where a process is not measured."""
    return {name: None if read is None else read() for name, read in readers.items()}
