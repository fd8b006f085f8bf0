"""Run Piccolo migrations from code (forwards, backwards, status) on the bound engine.

Piccolo's migration commands are imported inside the functions that run them: they import
`piccolo.conf.apps`, which imports `black` (a code formatter, for `piccolo migrations new`),
about 0.1 s that `sosekni-ops --help` and every other command would pay for nothing.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

APP_NAME = "sosekni"


class MigrationError(Exception):
    """A migration run that did not succeed."""


@dataclass(frozen=True)
class MigrationState:
    migration_id: str
    description: str
    applied: bool


async def status() -> list[MigrationState]:
    """Every migration of the app, oldest first, and whether it has run."""
    from piccolo.apps.migrations.commands.check import CheckMigrationManager

    with contextlib.redirect_stdout(io.StringIO()):
        found = await CheckMigrationManager(APP_NAME).get_migration_statuses()
    return [MigrationState(s.migration_id, s.description, s.has_ran) for s in found]


async def applied_ids() -> list[str]:
    """The ids of the applied migrations, oldest first (creating Piccolo's table if new)."""
    from piccolo.apps.migrations.commands.check import CheckMigrationManager
    from piccolo.apps.migrations.tables import Migration

    with contextlib.redirect_stdout(io.StringIO()):
        await CheckMigrationManager(APP_NAME).create_migration_table()
        return await Migration.get_migrations_which_ran(app_name=APP_NAME)


async def forwards() -> list[str]:
    """Apply every pending migration; return the ids applied now."""
    from piccolo.apps.migrations.commands.forwards import run_forwards

    before = set(await applied_ids())
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        result = await run_forwards(app_name=APP_NAME, migration_id="all")
    if not result.success:
        raise MigrationError(result.message or out.getvalue().strip().splitlines()[-1])
    return [m for m in await applied_ids() if m not in before]


async def backwards(count: int) -> list[str]:
    """Undo the newest `count` applied migrations; return the ids undone."""
    from piccolo.apps.migrations.commands.backwards import run_backwards

    if count < 1:
        raise MigrationError("--down needs a positive number of migrations")
    ran = await applied_ids()
    if count > len(ran):
        raise MigrationError(f"only {len(ran)} migration(s) applied, cannot undo {count}")
    earliest = ran[-count]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        result = await run_backwards(app_name=APP_NAME, migration_id=earliest, auto_agree=True)
    if not result.success:
        raise MigrationError(result.message or "migration backwards failed")
    return list(reversed(ran[-count:]))


async def backwards_to(migration_id: str | None) -> list[str]:
    """Undo every migration applied after `migration_id` (None: undo all)."""
    ran = await applied_ids()
    if migration_id is not None and migration_id not in ran:
        raise MigrationError(f"migration {migration_id} is not applied")
    newer = ran[ran.index(migration_id) + 1 :] if migration_id is not None else ran
    return await backwards(len(newer)) if newer else []
