from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-11-29T20:10:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "Administrators: where each came from (ADMIN_TELEGRAM_ID or the operator)"

# `config`: seeded from ADMIN_TELEGRAM_ID, deactivated at start once no longer listed.
# `cli`: the operator's own (`admin add`, `admin deactivate`), left alone by the list.
#
# Existing rows have no recorded origin. An active one becomes `config`: revocation is the
# safe side, so an id that is not listed any more loses access at the next start (logged with
# the command that keeps it). An inactive one was deactivated by `admin deactivate` (nothing
# else deactivated before this migration), so it becomes `cli` and stays deactivated even
# when listed, as before. Raw SQL, as Piccolo runs raw steps before its own column steps.


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="sosekni", description=DESCRIPTION)

    async def add_source() -> None:
        engine = engine_finder()
        await engine.run_ddl(
            "ALTER TABLE administrator ADD COLUMN source VARCHAR(16) NOT NULL DEFAULT 'config'"
        )
        await engine.run_ddl("UPDATE administrator SET source = 'cli' WHERE NOT active")

    async def drop_source() -> None:
        engine = engine_finder()
        await engine.run_ddl("ALTER TABLE administrator DROP COLUMN source")

    manager.add_raw(add_source)
    manager.add_raw_backwards(drop_source)
    return manager
