"""CPU time and peak RSS of process trees, from /proc (Linux)."""

from __future__ import annotations

import os
from dataclasses import dataclass

CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcInfo:
    pid: int
    ppid: int
    name: str
    cmdline: str
    cpu_s: float  # user + system
    rss_mb: float
    peak_rss_mb: float  # VmHWM


def read(pid: int) -> ProcInfo | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        with open(f"/proc/{pid}/status") as f:
            status = f.read()
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    name = stat[stat.index("(") + 1 : stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2 :].split()
    ppid = int(fields[1])
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
    values = {}
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(value.split()[0]) / 1024
    return ProcInfo(
        pid, ppid, name, cmdline, cpu, values.get("VmRSS", 0.0), values.get("VmHWM", 0.0)
    )


def tree(root: int) -> list[ProcInfo]:
    """`root` and all its descendants that are alive now."""
    infos = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            info = read(int(entry))
            if info is not None:
                infos[info.pid] = info
    found, frontier = [], [root]
    while frontier:
        pid = frontier.pop()
        if pid in infos:
            found.append(infos[pid])
            frontier.extend(p.pid for p in infos.values() if p.ppid == pid)
    return found


def python_processes(root: int) -> list[ProcInfo]:
    """The Python processes of a server tree (not `uv`, not multiprocessing's helpers)."""
    return [
        p
        for p in tree(root)
        if "python" in p.name.lower() or p.cmdline.split(" ", 1)[0].endswith(("python", "-ops"))
        if "resource_tracker" not in p.cmdline and p.name != "uv"
    ]


def cpu_by_pid(infos: list[ProcInfo]) -> dict[int, float]:
    return {p.pid: p.cpu_s for p in infos}


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds spent between two samples (processes new since `before` count in full)."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())
