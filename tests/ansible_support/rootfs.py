"""A Debian 12 (bookworm) root file system to boot with systemd-nspawn and provision.

The root is built once with `debootstrap` and kept as a tarball under CACHE_DIR, named after a
hash of everything that goes into it (suite, mirror, package lists), so a changed package list
builds a new one. Every test run unpacks a fresh copy and throws it away afterwards.

Building it runs commands in the root through chroot. Mounts never touch the host's mount
table: every command that needs /proc, /dev or /sys in the root runs in a private mount
namespace (`unshare --mount --propagation private`), where they are mounted; the mounts vanish
with the last process of that namespace, even if the build dies.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

CACHE_DIR = Path(os.environ.get("SOSEKNI_TEST_CACHE", "/var/cache/sosekni-tests"))
WORK_DIR = Path(os.environ.get("SOSEKNI_TEST_ROOTS", "/var/tmp"))
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
# Installed by debootstrap itself: nothing here starts a service.
BOOTSTRAP_PACKAGES = ("ca-certificates", "python3", "python3-apt", "systemd")
# Installed afterwards with policy-rc.d in place. The roles install these themselves; having
# them in the image only saves the download on every run.
PACKAGES = (
    "acl",
    "certbot",
    "git",
    "nginx",
    "openssl",
    "postgresql",
    "postgresql-client",
    "python3-packaging",
    "python3-psycopg2",
    "python3-venv",
    "sudo",
)
FORMAT_VERSION = 1  # bump to rebuild cached roots after a change in how they are made
# Package installs start no service in the root, neither while it is built nor in the booted
# container (a package's own service could take one of the host's ports; see machine.py).
POLICY_RC_D = "#!/bin/sh\n# No service starts inside this root (tests/ansible_support).\nexit 101\n"
# Where machine.booted() notes the pid of systemd-nspawn, next to the root.
NSPAWN_PID = "nspawn.pid"
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class RootError(Exception):
    """A prerequisite is missing or building the root failed."""


def say(message: str) -> None:
    """Progress on the terminal even under pytest's capture (the cold build takes minutes)."""
    line = f"[ansible test {time.strftime('%H:%M:%S')}] {message}\n"
    try:
        with open("/dev/tty", "w") as tty:
            tty.write(line)
    except OSError:
        sys.__stderr__.write(line)
        sys.__stderr__.flush()


def require_tools() -> None:
    """Fail loudly, naming the package, when a host tool is missing."""
    if os.geteuid() != 0:
        raise RootError("the provisioning test needs root (debootstrap, mounts, systemd-nspawn)")
    missing = [
        f"{tool} (apt-get install -y {package})"
        for tool, package in (
            ("debootstrap", "debootstrap"),
            ("unshare", "util-linux"),
            ("chroot", "coreutils"),
            ("systemd-nspawn", "systemd-container"),
            ("nsenter", "util-linux"),
            ("git", "git"),
        )
        if shutil.which(tool) is None
    ]
    if missing:
        raise RootError("missing on the host: " + ", ".join(missing))


def cache_key() -> str:
    spec = {
        "suite": SUITE,
        "mirror": MIRROR,
        "bootstrap": sorted(BOOTSTRAP_PACKAGES),
        "packages": sorted(PACKAGES),
        "format": FORMAT_VERSION,
        "arch": os.uname().machine,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def _compressor() -> tuple[list[str], list[str], str]:
    if shutil.which("zstd"):
        return ["zstd", "-T0", "-3", "-q"], ["zstd", "-dcq"], ".tar.zst"
    return ["cat"], ["cat"], ".tar"


def tarball_path() -> Path:
    return CACHE_DIR / f"debian-{SUITE}-{cache_key()}{_compressor()[2]}"


def namespaced(root: Path, command: Sequence[str]) -> list[str]:
    """`command`, run in a private mount namespace with /proc, /dev and /sys mounted in `root`."""
    script = (
        'set -e; r="$1"; shift; '
        'mount -t proc proc "$r/proc"; '
        'mount --rbind /dev "$r/dev"; '
        'mount -t sysfs -o ro sysfs "$r/sys"; '
        'exec "$@"'
    )
    return [
        "unshare", "--mount", "--propagation", "private", "--",
        "sh", "-c", script, "sh", str(root), *command,
    ]  # fmt: skip


def run(
    command: Sequence[str], *, timeout: float, env: dict[str, str] | None = None, what: str
) -> subprocess.CompletedProcess[str]:
    """Run `command`; raise RootError with the end of its output when it fails."""
    started = time.monotonic()
    try:
        done = subprocess.run(
            list(command), capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise RootError(f"{what}: timed out after {timeout:.0f}s") from exc
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-40:])
        raise RootError(f"{what} failed with exit code {done.returncode}:\n{tail}")
    say(f"{what}: {time.monotonic() - started:.0f}s")
    return done


def root_env() -> dict[str, str]:
    """The whole environment of commands run in the root (nothing of the host's leaks in)."""
    return {
        "PATH": SAFE_PATH,
        "LANG": "C.UTF-8",
        "DEBIAN_FRONTEND": "noninteractive",
        "HOME": "/root",
    }


def _copy_from_host(path: str, root: Path) -> None:
    source = Path(path)
    if not source.is_file():
        return
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() or target.exists():
        target.unlink()
    shutil.copyfile(source, target)


def prepare(root: Path) -> None:
    """What every copy of the root needs: no service starts; the network as the host sees it.

    Name resolution, and trust: where the host reaches PyPI through a TLS-inspecting proxy,
    its local certificate authorities (and pip's setting to use them) are needed in the root
    too. A real server has none of this and needs none of it.
    """
    policy = root / "usr/sbin/policy-rc.d"
    policy.write_text(POLICY_RC_D)
    policy.chmod(0o755)
    for path in ("/etc/resolv.conf", "/etc/hosts", "/etc/ssl/certs/ca-certificates.crt",
                 "/etc/pip.conf"):  # fmt: skip
        _copy_from_host(path, root)
    local_cas = Path("/usr/local/share/ca-certificates")
    if local_cas.is_dir():
        for ca in local_cas.rglob("*.crt"):
            _copy_from_host(str(ca), root)


def build(target: Path) -> None:
    """debootstrap a minimal system, then install PACKAGES with services kept from starting."""
    say(f"building a Debian {SUITE} root with debootstrap (once; cached in {CACHE_DIR})")
    run(
        [
            "debootstrap", "--variant=minbase", f"--include={','.join(BOOTSTRAP_PACKAGES)}",
            SUITE, str(target), MIRROR,
        ],
        timeout=1800,
        what="debootstrap",
    )  # fmt: skip
    prepare(target)
    env = root_env()
    run(
        namespaced(target, ["chroot", str(target), "apt-get", "update", "-q"]),
        timeout=600,
        env=env,
        what="apt-get update in the root",
    )
    run(
        namespaced(target, ["chroot", str(target), "apt-get", "install", "-y", "-q", *PACKAGES]),
        timeout=1800,
        env=env,
        what=f"apt-get install {len(PACKAGES)} packages in the root",
    )
    run(
        namespaced(target, ["chroot", str(target), "apt-get", "clean"]),
        timeout=120,
        env=env,
        what="apt-get clean",
    )


def cached_tarball() -> Path:
    """The tarball of the root, built first if no cached one matches the package lists."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    path = tarball_path()
    with open(CACHE_DIR / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time; others wait and reuse it
        if path.exists():
            return path
        scratch = CACHE_DIR / f"build-{os.getpid()}"
        try:
            remove_tree(scratch)
            scratch.mkdir()
            build(scratch)
            compress, _, _ = _compressor()
            partial = path.with_name(path.name + ".partial")
            with partial.open("wb") as out:
                tar = subprocess.Popen(
                    ["tar", "-C", str(scratch), "--numeric-owner", "-cf", "-", "."],
                    stdout=subprocess.PIPE,
                )
                squeeze = subprocess.run(compress, stdin=tar.stdout, stdout=out, check=False)
                assert tar.stdout is not None
                tar.stdout.close()
                if tar.wait() != 0 or squeeze.returncode != 0:
                    raise RootError("packing the root into a tarball failed")
            os.replace(partial, path)
            for stale in CACHE_DIR.glob(f"debian-{SUITE}-*"):
                if stale != path:
                    stale.unlink()  # a root for an older package list
            say(f"cached the root as {path} ({path.stat().st_size // 2**20} MiB)")
        finally:
            remove_tree(scratch)
        return path


def unpack(tarball: Path, target: Path) -> None:
    started = time.monotonic()
    _, decompress, _ = _compressor()
    target.mkdir(parents=True)
    source = subprocess.Popen([*decompress, str(tarball)], stdout=subprocess.PIPE)
    done = subprocess.run(
        ["tar", "-C", str(target), "--numeric-owner", "-xpf", "-"],
        stdin=source.stdout,
        capture_output=True,
        check=False,
    )
    assert source.stdout is not None
    source.stdout.close()
    if source.wait() != 0 or done.returncode != 0:
        raise RootError(f"unpacking {tarball} failed: {done.stderr.decode()[-500:]}")
    prepare(target)
    say(f"unpacked a fresh root in {target}: {time.monotonic() - started:.0f}s")


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below `path` in this (the host's) mount namespace."""
    prefix = str(path.resolve())
    found = []
    with open("/proc/self/mountinfo") as info:
        for line in info:
            point = line.split()[4].replace("\\040", " ")
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return found


def processes_in(root: Path) -> list[int]:
    """Pids of the processes whose root directory is `root` (whatever their mount namespace)."""
    wanted = str(root.resolve())
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if os.readlink(entry / "root") == wanted:
                found.append(int(entry.name))
    return found


def kill_processes_in(root: Path, grace: float = 10) -> None:
    """SIGTERM every process living in `root`, then SIGKILL what is left after `grace`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = processes_in(root)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while processes_in(root) and time.monotonic() < deadline:
            time.sleep(0.2)
    left = processes_in(root)
    if left:
        raise RootError(f"processes still running in {root}: {left}")


def remove_tree(path: Path) -> None:
    """rm -rf that refuses to run while anything is mounted below `path`."""
    if not path.exists():
        return
    mounted = mounts_under(path)
    if mounted:
        raise RootError(f"refusing to remove {path}: still mounted: {mounted}")
    subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale_roots() -> None:
    """Remove copies left by a test run that was killed before its cleanup."""
    for base in WORK_DIR.glob("sosekni-ansible-*"):
        owner = base / "owner.pid"
        try:
            pid = int(owner.read_text())
        except (OSError, ValueError):
            if time.time() - base.stat().st_mtime < 3600:
                continue  # being created right now
            pid = 0
        if pid and _alive(pid):
            continue
        say(f"removing {base}, left behind by an interrupted run")
        stop_container(base)
        if (base / "root").exists():
            kill_processes_in(base / "root")
        remove_tree(base)


def stop_container(base: Path, grace: float = 30) -> None:
    """End a container left booted on base/root by a killed run, and what was attached to it.

    Its processes live in their own mount namespace, where their root is "/": processes_in()
    does not see them. machine.booted() notes nspawn's pid and the container's PID 1 in
    base/NSPAWN_PID; SIGTERM asks nspawn to power the container off; if that hangs (a process
    entered with nsenter by the killed run keeps it waiting), SIGKILL to its PID 1 ends every
    process of its PID namespace, and the nsenter processes still aimed at it are killed too.
    """
    try:
        nspawn, pid1 = (int(word) for word in (base / NSPAWN_PID).read_text().split())
    except (OSError, ValueError):
        return
    root = str(base / "root").encode()
    if root not in _cmdline(nspawn):
        nspawn = 0  # gone, or the pid was reused
    with contextlib.suppress(ProcessLookupError):
        if nspawn:
            os.kill(nspawn, signal.SIGTERM)  # nspawn powers the container off
    deadline = time.monotonic() + grace
    while nspawn and _alive(nspawn) and time.monotonic() < deadline:
        time.sleep(0.2)
    attached = [
        pid
        for pid in _pids()
        if (argv := _cmdline(pid)) and argv[0].endswith(b"nsenter")
        and (f"--target={pid1}".encode() in argv or str(pid1).encode() in argv[1:4])
    ]  # fmt: skip
    with contextlib.suppress(OSError):  # OSError: gone already
        # Only a PID 1 of another PID namespace: never a reused pid of the host's.
        if os.readlink(f"/proc/{pid1}/ns/pid") != os.readlink("/proc/self/ns/pid"):
            os.kill(pid1, signal.SIGKILL)
    for pid in [*attached, nspawn]:
        with contextlib.suppress(ProcessLookupError):
            if pid and _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _pids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def _cmdline(pid: int) -> list[bytes]:
    """The argv of `pid`, or [] when it is gone (or a zombie)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return [word for word in cmdline.read().split(b"\0") if word]
    except OSError:
        return []


@contextlib.contextmanager
def fresh_root() -> Iterator[Path]:
    """A throwaway copy of the cached root; every process in it is killed and it is removed."""
    require_tools()
    tarball = cached_tarball()
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    sweep_stale_roots()
    base = Path(
        subprocess.check_output(
            ["mktemp", "-d", str(WORK_DIR / "sosekni-ansible-XXXXXX")], text=True
        ).strip()
    )
    (base / "owner.pid").write_text(str(os.getpid()))
    root = base / "root"
    try:
        unpack(tarball, root)
        yield root
    finally:
        try:
            kill_processes_in(root)
        finally:
            remove_tree(base)


if __name__ == "__main__":  # python -m tests.ansible_support.rootfs: build the cache only
    require_tools()
    print(cached_tarball())
