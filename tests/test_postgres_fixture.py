"""The PostgreSQL test infrastructure: a real throwaway cluster and throwaway databases."""

from __future__ import annotations

import asyncio
import sys
import types
from collections.abc import Iterator

import asyncpg
import pytest

from tests.fakes.postgres import (
    ENV_VAR,
    ThrowawayCluster,
    create_database,
    drop_database,
    find_bindir,
    postgres_server,
    temporary_database,
)


async def scalar(dsn: str, query: str, *args: object) -> object:
    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        return await connection.fetchval(query, *args)
    finally:
        await connection.close()


async def database_exists(admin_dsn: str, name: str) -> bool:
    return bool(await scalar(admin_dsn, "SELECT 1 FROM pg_database WHERE datname = $1", name))


@pytest.fixture(scope="module")
def admin_dsn() -> Iterator[str]:
    with postgres_server() as dsn:
        yield dsn


def test_local_binaries_are_found() -> None:
    bindir = find_bindir()
    assert bindir is not None
    assert (bindir / "initdb").is_file()
    assert (bindir / "pg_ctl").is_file()


async def test_throwaway_cluster_lifecycle() -> None:
    # Always the class itself, whatever TEST_DATABASE_URL says.
    cluster = ThrowawayCluster()
    try:
        await asyncio.to_thread(cluster.start)
        assert cluster.running
        port = cluster.port
        assert cluster.dsn == f"postgresql://postgres@127.0.0.1:{port}/postgres"
        base_dir = cluster.base_dir
        assert base_dir.is_dir()
        assert (cluster.data_dir / "PG_VERSION").is_file()

        assert await scalar(cluster.dsn, "SELECT 41 + 1") == 42
        assert await scalar(cluster.dsn, "SHOW fsync") == "off"
        assert await scalar(cluster.dsn, "SHOW listen_addresses") == "127.0.0.1"
        assert await scalar(cluster.dsn, "SELECT current_user") == "postgres"
        await scalar(cluster.dsn, "CREATE TABLE survivor (id int)")
        await scalar(cluster.dsn, "INSERT INTO survivor VALUES (7)")

        # An outage: the server goes away, then comes back on the same port with the same data.
        held = await asyncpg.connect(cluster.dsn, timeout=10)
        await asyncio.to_thread(cluster.stop)
        assert not cluster.running
        with pytest.raises((OSError, asyncpg.PostgresError, asyncpg.InterfaceError)):
            await asyncpg.connect(cluster.dsn, timeout=5)
        with pytest.raises((OSError, asyncpg.PostgresError, asyncpg.InterfaceError)):
            await held.fetchval("SELECT 1")
        held.terminate()

        await asyncio.to_thread(cluster.start)
        assert cluster.running
        assert cluster.port == port
        assert await scalar(cluster.dsn, "SELECT id FROM survivor") == 7

        dsn = await asyncio.to_thread(create_database, cluster.dsn, "cluster_check")
        assert await scalar(dsn, "SELECT current_database()") == dsn.rsplit("/", 1)[1]
        await asyncio.to_thread(drop_database, cluster.dsn, dsn)
    finally:
        cluster.cleanup()
    assert not cluster.running
    assert not base_dir.exists()
    cluster.cleanup()  # idempotent


def test_throwaway_cluster_context_manager() -> None:
    with ThrowawayCluster() as cluster:
        base_dir = cluster.base_dir
        assert asyncio.run(scalar(cluster.dsn, "SELECT 1")) == 1
    assert not base_dir.exists()
    with pytest.raises(RuntimeError, match="cleaned up"):
        cluster.start()


def test_postgres_server_prefers_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "postgresql://someone@db.invalid:6543/postgres")
    with postgres_server() as dsn:
        assert dsn == "postgresql://someone@db.invalid:6543/postgres"


def test_create_and_drop_database_sync(admin_dsn: str) -> None:
    dsn = create_database(admin_dsn)
    name = dsn.rsplit("/", 1)[1]
    assert name.startswith("sosekni_test_")
    assert asyncio.run(scalar(dsn, "SELECT current_database()")) == name
    assert asyncio.run(database_exists(admin_dsn, name))

    other = create_database(admin_dsn)
    assert other != dsn

    drop_database(admin_dsn, dsn)
    drop_database(admin_dsn, other)
    assert not asyncio.run(database_exists(admin_dsn, name))
    drop_database(admin_dsn, dsn)  # already gone: no error


async def test_create_and_drop_database_inside_running_loop(admin_dsn: str) -> None:
    # Called synchronously while this test's event loop runs in the same thread.
    dsn = create_database(admin_dsn, prefix="sosekni_loop")
    name = dsn.rsplit("/", 1)[1]
    assert name.startswith("sosekni_loop_")
    # A connection left open must not prevent the drop.
    lingering = await asyncpg.connect(dsn, timeout=10)
    assert await lingering.fetchval("SELECT current_database()") == name
    drop_database(admin_dsn, dsn)
    assert not await database_exists(admin_dsn, name)
    lingering.terminate()


def test_temporary_database_and_guards(admin_dsn: str) -> None:
    with temporary_database(admin_dsn) as dsn:
        name = dsn.rsplit("/", 1)[1]
        assert asyncio.run(database_exists(admin_dsn, name))
    assert not asyncio.run(database_exists(admin_dsn, name))
    with pytest.raises(ValueError):
        create_database(admin_dsn, prefix="Bad-Prefix")
    with pytest.raises(ValueError):
        drop_database(admin_dsn, admin_dsn)


def test_postgres_server_explains_when_nothing_works(monkeypatch: pytest.MonkeyPatch) -> None:
    import tests.fakes.postgres as module

    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setattr(module, "docker_available", lambda timeout=2.0: False)
    monkeypatch.setattr(module, "find_bindir", lambda: None)
    with pytest.raises(RuntimeError) as caught, postgres_server():
        pass
    message = str(caught.value)
    assert f"{ENV_VAR} is not set" in message
    assert "no Docker engine" in message
    assert "no PostgreSQL server binaries found" in message


class _DockerClient:
    """What `docker.from_env()` returns, answering `ping` as told."""

    def __init__(self, answer: bool | Exception, closed: list[bool]) -> None:
        self.answer, self.closed = answer, closed

    def ping(self) -> bool:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer

    def close(self) -> None:
        self.closed.append(True)


def test_docker_probe_is_quick(monkeypatch: pytest.MonkeyPatch) -> None:
    """The probe is bounded by its timeout, handed to Docker's client, and answers either way.

    Asserting the probe's elapsed time would fail on a loaded machine; what keeps it quick is
    that the client is built with the probe's timeout, which is what is checked.
    """
    from tests.fakes.postgres import docker_available

    # The real probe: no engine on most CI runners; it must answer either way.
    assert docker_available() in (True, False)

    asked: list[int] = []
    closed: list[bool] = []

    def docker_with(answer: bool | Exception, refuse: bool = False) -> types.ModuleType:
        module = types.ModuleType("docker")

        def from_env(timeout: int) -> _DockerClient:
            asked.append(timeout)
            if refuse:
                raise RuntimeError("no Docker socket")
            return _DockerClient(answer, closed)

        module.from_env = from_env  # type: ignore[attr-defined]
        return module

    monkeypatch.setitem(sys.modules, "docker", docker_with(True))
    assert docker_available(timeout=3.0) is True
    monkeypatch.setitem(sys.modules, "docker", docker_with(ConnectionError("refused")))
    assert docker_available(timeout=2.0) is False
    monkeypatch.setitem(sys.modules, "docker", docker_with(True, refuse=True))
    assert docker_available() is False
    assert asked == [3, 2, 2]  # whole seconds, as Docker's client takes them
    assert closed == [True, True]  # the client is closed whatever the ping answered
