"""Where tests get a real PostgreSQL server, and throwaway databases on it.

``postgres_server()`` yields an admin DSN, trying in order:

1. ``TEST_DATABASE_URL`` from the environment, used as given;
2. a ``postgres:16-alpine`` container through testcontainers, when a Docker engine answers;
3. a :class:`ThrowawayCluster` built from the local PostgreSQL binaries.

``create_database()`` / ``drop_database()`` make and remove uniquely named databases on it; they
are synchronous and also work while an event loop runs in the calling thread.

A :class:`ThrowawayCluster` can be stopped and started again on the same port, which is how tests
simulate a database outage.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

import asyncpg

from ops.common import free_port

ENV_VAR = "TEST_DATABASE_URL"
DOCKER_IMAGE = "postgres:16-alpine"
SUPERUSER = "postgres"
_PREFIX_RE = re.compile(r"^[a-z_][a-z0-9_]{0,39}$")
_T = TypeVar("_T")


# --------------------------------------------------------------------------------------------
# Local binaries
# --------------------------------------------------------------------------------------------


def _version_key(path: Path) -> tuple[int, ...]:
    numbers = re.findall(r"\d+", path.parent.name)
    return tuple(int(n) for n in numbers)


def find_bindir() -> Path | None:
    """The directory holding ``initdb``/``pg_ctl``/``postgres``, or None.

    ``pg_config --bindir`` when ``pg_config`` is on PATH (and that directory has ``initdb``),
    otherwise the highest ``/usr/lib/postgresql/*/bin``.
    """
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
            if out and (Path(out) / "initdb").is_file():
                return Path(out)
    candidates = [
        path for path in Path("/usr/lib/postgresql").glob("*/bin") if (path / "initdb").is_file()
    ]
    if candidates:
        return max(candidates, key=_version_key)
    return None


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no server log)"
    return "\n".join(text.splitlines()[-lines:]) or "(server log is empty)"


_live_clusters: weakref.WeakSet[ThrowawayCluster] = weakref.WeakSet()


@atexit.register
def _cleanup_live_clusters() -> None:
    for cluster in list(_live_clusters):
        with contextlib.suppress(Exception):
            cluster.cleanup()


class ThrowawayCluster:
    """A private PostgreSQL cluster in a temporary directory, for tests.

    ``initdb`` (trust auth, superuser ``postgres``) happens at the first ``start()``; the server
    listens on 127.0.0.1 only, keeps its unix socket inside the temporary directory and runs with
    ``fsync=off``. ``stop()`` then ``start()`` reuses the same port. ``cleanup()`` stops it and
    removes the directory. When running as root, the binaries are run as the ``postgres`` user.
    """

    def __init__(
        self,
        bindir: str | Path | None = None,
        *,
        port: int = 0,
        startup_timeout: float = 60.0,
    ) -> None:
        found = Path(bindir) if bindir is not None else find_bindir()
        if found is None or not (found / "initdb").is_file():
            raise RuntimeError(
                "ThrowawayCluster: no PostgreSQL server binaries found (looked for "
                "`pg_config --bindir` and /usr/lib/postgresql/*/bin/initdb)"
            )
        self.bindir = found
        self.startup_timeout = startup_timeout
        self._fixed_port = port
        self._port = port
        self._base: Path | None = None
        self._initialized = False
        self._running = False
        self._cleaned = False
        self._owner: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            try:
                self._owner = pwd.getpwnam(SUPERUSER)
            except KeyError:
                raise RuntimeError(
                    "ThrowawayCluster: running as root but there is no `postgres` OS user to run "
                    "initdb/postgres as (they refuse to run as root)"
                ) from None

    # ---- paths -----------------------------------------------------------------------------

    @property
    def base_dir(self) -> Path:
        """The temporary directory holding data, socket and log (created on first use)."""
        if self._base is None:
            if self._cleaned:
                raise RuntimeError("ThrowawayCluster: already cleaned up")
            if self._owner is not None:
                # /tmp is traversable by everyone; mkdtemp gives 0700, owned by postgres below.
                base = Path(tempfile.mkdtemp(prefix="sosekni-pg-", dir="/tmp"))
                os.chown(base, self._owner.pw_uid, self._owner.pw_gid)
            else:
                base = Path(tempfile.mkdtemp(prefix="sosekni-pg-"))
            self._base = base
            _live_clusters.add(self)
        return self._base

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base_dir / "sock"

    @property
    def log_file(self) -> Path:
        return self.base_dir / "postgres.log"

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError("ThrowawayCluster: no port yet, call start() first")
        return self._port

    @property
    def dsn(self) -> str:
        """Admin DSN: ``postgresql://postgres@127.0.0.1:PORT/postgres``."""
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/postgres"

    @property
    def running(self) -> bool:
        return self._running

    # ---- running the binaries --------------------------------------------------------------

    def _command(self, binary: str, *args: str) -> list[str]:
        command = [str(self.bindir / binary), *args]
        if self._owner is None:
            return command
        setpriv = shutil.which("setpriv")
        if setpriv:
            return [
                setpriv,
                f"--reuid={self._owner.pw_uid}",
                f"--regid={self._owner.pw_gid}",
                "--clear-groups",
                "--",
                *command,
            ]
        runuser = shutil.which("runuser")
        if runuser:
            return [runuser, "-u", SUPERUSER, "--", *command]
        raise RuntimeError(
            "ThrowawayCluster: running as root and neither setpriv nor runuser is available to "
            "run PostgreSQL as the `postgres` user"
        )

    def _run(self, binary: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        return subprocess.run(
            self._command(binary, *args),
            cwd=self.base_dir,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def _initdb(self) -> None:
        result = self._run(
            "initdb",
            "-D",
            str(self.data_dir),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
            timeout=self.startup_timeout,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"ThrowawayCluster: initdb failed (exit {result.returncode}) in {self.data_dir}:\n"
                f"{result.stdout}\n{result.stderr}"
            )
        self.socket_dir.mkdir(exist_ok=True)
        if self._owner is not None:
            os.chown(self.socket_dir, self._owner.pw_uid, self._owner.pw_gid)
        self._initialized = True

    def _server_options(self, port: int) -> str:
        return " ".join(
            [
                f"-p {port}",
                "-c listen_addresses=127.0.0.1",
                f"-c unix_socket_directories={self.socket_dir}",
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
                "-c max_connections=200",
            ]
        )

    def _pg_ctl_start(self, port: int) -> subprocess.CompletedProcess[str]:
        return self._run(
            "pg_ctl",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_file),
            "-o",
            self._server_options(port),
            "-w",
            "-t",
            str(int(self.startup_timeout)),
            "start",
            timeout=self.startup_timeout + 10,
        )

    def _accepting(self, port: int) -> bool:
        result = subprocess.run(
            [str(self.bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)],
            capture_output=True,
            timeout=10,
            check=False,
        )
        return result.returncode == 0

    def _wait_ready(self, port: int) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while not self._accepting(port):
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"ThrowawayCluster: PostgreSQL on 127.0.0.1:{port} did not accept "
                    f"connections within {self.startup_timeout:g}s. Server log tail:\n"
                    f"{_tail(self.log_file)}"
                )
            time.sleep(0.1)

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> ThrowawayCluster:
        """initdb on first use, then start the server and wait until it accepts connections."""
        if self._running:
            return self
        if self._cleaned:
            raise RuntimeError("ThrowawayCluster: already cleaned up")
        if not self._initialized:
            self._initdb()
        # A port picked by us may be grabbed by someone else before postgres binds it: retry.
        attempts = 1 if self._port else 3
        failure = ""
        for _ in range(attempts):
            port = self._port or free_port()
            result = self._pg_ctl_start(port)
            if result.returncode == 0:
                self._port = port
                self._running = True
                self._wait_ready(port)
                return self
            failure = (
                f"ThrowawayCluster: pg_ctl start on 127.0.0.1:{port} failed "
                f"(exit {result.returncode}):\n{result.stdout}{result.stderr}\n"
                f"Server log tail:\n{_tail(self.log_file)}"
            )
        raise RuntimeError(failure)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast`` by default); the data directory and port are kept."""
        if not self._running:
            return
        result = self._run(
            "pg_ctl",
            "-D",
            str(self.data_dir),
            "-m",
            mode,
            "-w",
            "-t",
            "60",
            "stop",
            timeout=70,
        )
        if result.returncode != 0 and (self.data_dir / "postmaster.pid").exists():
            raise RuntimeError(
                f"ThrowawayCluster: pg_ctl stop failed (exit {result.returncode}):\n"
                f"{result.stdout}{result.stderr}\nServer log tail:\n{_tail(self.log_file)}"
            )
        self._running = False

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        """Stop the server (if running) and remove the temporary directory."""
        if self._cleaned:
            return
        try:
            if self._running:
                try:
                    self.stop()
                except Exception:
                    self.stop(mode="immediate")
        finally:
            if self._base is not None:
                shutil.rmtree(self._base, ignore_errors=True)
            self._cleaned = True
            _live_clusters.discard(self)

    def server_log(self, lines: int = 40) -> str:
        return _tail(self.log_file, lines)

    def __enter__(self) -> ThrowawayCluster:
        try:
            return self.start()
        except BaseException:
            self.cleanup()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()


# --------------------------------------------------------------------------------------------
# Choosing a server
# --------------------------------------------------------------------------------------------


def docker_available(timeout: float = 2.0) -> bool:
    """True when a Docker engine answers a ping within about ``timeout`` seconds."""
    try:
        import docker

        client = docker.from_env(timeout=max(1, int(timeout)))
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


@contextlib.contextmanager
def _container_server() -> Iterator[str]:
    try:
        from testcontainers.community.postgres import PostgresContainer
    except ImportError:
        from testcontainers.postgres import PostgresContainer

    container = PostgresContainer(
        DOCKER_IMAGE, username=SUPERUSER, password=SUPERUSER, dbname="postgres", driver=None
    )
    container.start()
    try:
        yield container.get_connection_url(driver=None)
    finally:
        container.stop()


@contextlib.contextmanager
def _postgres_server() -> Iterator[str]:
    url = os.environ.get(ENV_VAR)
    if url:
        yield url
        return
    tried = [f"{ENV_VAR} is not set"]

    if docker_available():
        stack = contextlib.ExitStack()
        try:
            dsn = stack.enter_context(_container_server())
        except Exception as exc:
            tried.append(f"testcontainers {DOCKER_IMAGE} failed: {exc!r}")
        else:
            with stack:
                yield dsn
            return
    else:
        tried.append("no Docker engine answered a ping, so no testcontainers")

    cluster: ThrowawayCluster | None = None
    try:
        cluster = ThrowawayCluster()
        cluster.start()
    except Exception as exc:
        if cluster is not None:
            with contextlib.suppress(Exception):
                cluster.cleanup()
        tried.append(f"throwaway cluster from local binaries failed: {exc}")
        raise RuntimeError(
            "postgres_server: no PostgreSQL available for tests. Tried:\n- "
            + "\n- ".join(tried)
            + f"\nSet {ENV_VAR}=postgresql://user@host:port/postgres to use an existing server."
        ) from exc
    try:
        yield cluster.dsn
    finally:
        cluster.cleanup()


def postgres_server() -> contextlib.AbstractContextManager[str]:
    """Context manager yielding an admin DSN of a real PostgreSQL server (see module doc)."""
    return _postgres_server()


# --------------------------------------------------------------------------------------------
# Databases
# --------------------------------------------------------------------------------------------


def _run_sync(factory: Callable[[], Awaitable[_T]]) -> _T:
    """Run a coroutine to completion from sync code, even inside a running event loop."""

    async def runner() -> _T:
        return await factory()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(runner())
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, runner()).result()


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _database_name(dsn: str) -> str:
    return unquote(urlsplit(dsn).path.lstrip("/"))


def _with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{name}"))


def create_database(admin_dsn: str, prefix: str = "sosekni_test") -> str:
    """Create a uniquely named database on the admin DSN's server and return its DSN."""
    if not _PREFIX_RE.match(prefix):
        raise ValueError(f"create_database: prefix {prefix!r} must match {_PREFIX_RE.pattern}")
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"

    async def create() -> None:
        connection = await asyncpg.connect(admin_dsn, timeout=15)
        try:
            await connection.execute(f"CREATE DATABASE {_quote_ident(name)}")
        finally:
            await connection.close()

    _run_sync(create)
    return _with_database(admin_dsn, name)


def drop_database(admin_dsn: str, dsn: str) -> None:
    """Drop the database named in ``dsn`` (disconnecting its users first); no error if gone."""
    name = _database_name(dsn)
    if not name or name in ("postgres", "template0", "template1", _database_name(admin_dsn)):
        raise ValueError(f"drop_database: refusing to drop {name!r}")

    async def drop() -> None:
        connection = await asyncpg.connect(admin_dsn, timeout=15)
        try:
            await connection.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid()",
                name,
            )
            force = " WITH (FORCE)" if connection.get_server_version().major >= 13 else ""
            await connection.execute(f"DROP DATABASE IF EXISTS {_quote_ident(name)}{force}")
        finally:
            await connection.close()

    _run_sync(drop)


@contextlib.contextmanager
def temporary_database(admin_dsn: str, prefix: str = "sosekni_test") -> Iterator[str]:
    """``create_database`` on enter, ``drop_database`` on exit."""
    dsn = create_database(admin_dsn, prefix)
    try:
        yield dsn
    finally:
        drop_database(admin_dsn, dsn)
