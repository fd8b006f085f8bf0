"""Which process sends the outbox: exactly one per database, whoever holds this lease.

One sender keeps Telegram's limits (about 30 messages/s overall, 1/s per chat) true for
the whole service, however many workers run. On Postgres the lease is a session advisory
lock on a dedicated connection, which also LISTENs for new outbox rows; on SQLite it is an
exclusive `flock` beside the database file. Either is released by the operating system or
the server when its holder dies, and another worker takes over within seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from typing import Any

import asyncpg

from sosekni.services.work import OUTBOX_CHANNEL, outbox_ready

log = logging.getLogger(__name__)

LOCK_KEY = 0x50EC5E4D  # an arbitrary constant: "the outbox sender" for pg_advisory_lock
CHANNEL = OUTBOX_CHANNEL


def _announced(connection: Any, pid: int, channel: str, payload: str) -> None:
    """NOTIFY from a committed transaction: its first outbox row id (or empty: just wake)."""
    outbox_ready.announce(int(payload) if payload.isdigit() else None)


class SenderLease:
    async def acquire(self) -> bool:
        """Try once, without waiting; True when this process now holds the lease."""
        raise NotImplementedError

    async def still_held(self) -> bool:
        raise NotImplementedError

    async def release(self) -> None:
        raise NotImplementedError


class PostgresLease(SenderLease):
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.conn: Any = None

    async def acquire(self) -> bool:
        await self.release()
        conn = await asyncpg.connect(self.dsn, timeout=5)
        try:
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY):
                await conn.close()
                return False
            await conn.add_listener(CHANNEL, _announced)
        except BaseException:
            await conn.close()
            raise
        self.conn = conn
        return True

    async def still_held(self) -> bool:
        if self.conn is None or self.conn.is_closed():
            return False
        try:
            await asyncio.wait_for(self.conn.fetchval("SELECT 1"), 5)
            return True
        except Exception:
            await self.release()
            return False

    async def release(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 5)


class FileLease(SenderLease):
    def __init__(self, path: str) -> None:
        self.path = path
        self.fd: int | None = None

    async def acquire(self) -> bool:
        if self.fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self.fd = fd
        return True

    async def still_held(self) -> bool:
        return self.fd is not None

    async def release(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor drops the flock


def lease_for(database_url: str) -> SenderLease:
    if database_url.startswith("sqlite:"):
        path = database_url[len("sqlite:///") :]
        return FileLease(f"{path}.sender.lock")
    return PostgresLease(database_url.replace("postgres://", "postgresql://", 1))
