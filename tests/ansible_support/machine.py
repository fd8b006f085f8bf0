"""A copy of the Debian 12 root booted with systemd as PID 1 (systemd-nspawn), and commands in it.

The container shares the host's network (no --private-network): the fake Bot API in the test
process, the package index and PyPI are reachable as they are from the host, and the test
reaches nginx and the app on 127.0.0.1. So nothing in the container may take a port the host
uses: before the boot, the units that would listen on fixed ports (nginx on 80, PostgreSQL on
5432, exim4 on 25) are disabled or masked; the roles enable and start nginx and PostgreSQL on
the free ports the test gives them. The apt timers are kept from running during the apply
(they would hold apt's lock).

`nsenter -t <PID1> -a` runs commands in the container (machinectl and `systemd-run -M` need a
registered machine, which nspawn cannot do here without a system bus: --register=no).
booted() always powers the container off; if the test process itself is killed, the next run's
rootfs.sweep_stale_roots() ends the container from the pids noted next to its root.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.ansible_support import rootfs

# Units of the image that would listen on the host's fixed ports or hold apt's lock.
DISABLED_AT_BOOT = ("nginx.service", "postgresql.service")
MASKED = ("exim4.service", "exim4-base.timer", "apt-daily.timer", "apt-daily-upgrade.timer")


class BootError(Exception):
    """The container did not boot."""


def _wants_links(root: Path, unit: str) -> list[Path]:
    # Not glob("*.wants/unit"): the links point to /lib/... of the root, dangling on the host.
    wants = (root / "etc/systemd/system").glob("*.wants")
    return [link for link in (folder / unit for folder in wants) if link.is_symlink()]


def prepare_for_boot(root: Path) -> None:
    """Keep the image's own services off the host's ports (see the module docstring)."""
    for unit in DISABLED_AT_BOOT:
        for link in _wants_links(root, unit):
            link.unlink()
    for unit in MASKED:
        for link in _wants_links(root, unit):
            link.unlink()
        mask = root / "etc/systemd/system" / unit
        mask.unlink(missing_ok=True)
        mask.symlink_to("/dev/null")


def _children(pid: int) -> list[tuple[int, str]]:
    """(pid, command name) of the processes whose parent is `pid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            parent = int(stat[stat.rindex(")") + 2 :].split()[1])
            if parent == pid:
                found.append((int(entry.name), name))
    return found


@dataclass
class Machine:
    """The booted container: its root directory (as the host sees it) and its systemd's pid."""

    root: Path
    pid1: int

    def command(self, argv: Sequence[str], user: str | None = None) -> list[str]:
        """argv run in the container (as `user` if given) with a small, explicit environment."""
        inner = ["runuser", "-u", user, "--", *argv] if user else list(argv)
        env = [f"{key}={value}" for key, value in rootfs.root_env().items()]
        return ["nsenter", "-t", str(self.pid1), "-a", "env", "-i", *env, *inner]

    def run(
        self, *argv: str, user: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(argv, user),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def state(self) -> str:
        return self.run("systemctl", "is-system-running").stdout.strip()

    def listening_ports(self) -> set[int]:
        """Ports the container's processes listen on (TCP, or bound UDP): the host's, shared."""
        inside = os.readlink(f"/proc/{self.pid1}/ns/pid")
        found = set()
        listing = subprocess.run(
            ["ss", "-ltunpH"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
        for line in listing.splitlines():
            fields = line.split()
            port = int(fields[4].rsplit(":", 1)[1])
            for pid in re.findall(r"pid=(\d+)", line):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/ns/pid") == inside:
                        found.add(port)
        return found


def _wait_for(
    what: str,
    ready: Callable[[], bool],
    process: subprocess.Popen[bytes],
    log: Path,
    timeout: float,
) -> None:
    """Poll `ready` until it holds; fail with the end of nspawn's console log otherwise."""
    deadline = time.monotonic() + timeout
    while not ready():
        console = log.read_text(errors="replace")[-4000:]
        if process.poll() is not None:
            raise BootError(
                f"systemd-nspawn exited ({process.returncode}) before {what}:\n{console}"
            )
        if time.monotonic() > deadline:
            raise BootError(f"no {what} after {timeout:.0f}s:\n{console}")
        time.sleep(0.1)


def _stop(process: subprocess.Popen[bytes], machine: Machine | None, grace: float) -> None:
    """Power the container off and wait for nspawn; kill it (and its PID 1) if that hangs."""
    if process.poll() is None and machine is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            machine.run("systemctl", "poweroff", "--no-block", timeout=30)
    elif process.poll() is None:
        process.terminate()  # nspawn asks the container's systemd to power off
    try:
        process.wait(timeout=grace)
        return
    except subprocess.TimeoutExpired:
        rootfs.say("the container did not power off in time: killing it")
    if machine is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(machine.pid1, signal.SIGKILL)  # ends its whole PID namespace
    process.kill()
    process.wait(timeout=30)


@contextlib.contextmanager
def booted(root: Path, log: Path, timeout: float = 180) -> Iterator[Machine]:
    """Boot `root`, yield it once systemd says running/degraded; always power it off after."""
    prepare_for_boot(root)
    name = f"sosekni-test-{os.getpid()}"  # nspawn's runtime state is named after it
    started = time.monotonic()
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["systemd-nspawn", "-D", str(root), f"--machine={name}", "--boot",
             "--console=pipe", "--register=no", "--keep-unit"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    machine: Machine | None = None
    try:
        # nspawn's first child is a short-lived helper; PID 1 of the container is `systemd`.
        found: list[int] = []

        def pid1() -> bool:
            found[:] = [pid for pid, name in _children(process.pid) if name == "systemd"]
            return bool(found)

        _wait_for("systemd in the container", pid1, process, log, timeout)
        machine = Machine(root, found[0])
        # For rootfs.sweep_stale_roots, should this process be killed before the finally below.
        (root.parent / rootfs.NSPAWN_PID).write_text(f"{process.pid} {machine.pid1}\n")
        booting = machine
        _wait_for(
            "a booted system",
            lambda: booting.state() in ("running", "degraded"),
            process,
            log,
            timeout,
        )
        rootfs.say(f"booted the root with systemd-nspawn: {time.monotonic() - started:.1f}s")
        yield machine
    finally:
        _stop(process, machine, grace=90)
        rootfs.say("the container is powered off")
