from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-11-29T20:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "Partial indexes over finished inbox and outbox rows: retention deletes by age"

# Retention deletes finished rows older than a cutoff, a thousand at a time. These indexes
# hold only finished rows, ordered by when they arrived, so each batch reads just the rows
# it deletes: never the open rows, never the whole table. Their WHERE is written exactly as
# the retention queries write it (SQLite uses a partial index only for a query that repeats
# its condition; OR, not IN, for the reason given in the claim indexes' migration).
_INDEXES = {
    "inbox_update_finished": "CREATE INDEX inbox_update_finished ON inbox_update (received_at) "
    "WHERE status = 'done' OR status = 'failed'",
    "outbox_message_finished": "CREATE INDEX outbox_message_finished "
    "ON outbox_message (created_at) "
    "WHERE status = 'sent' OR status = 'failed' OR status = 'dropped'",
}


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="sosekni", description=DESCRIPTION)

    async def add_indexes() -> None:
        engine = engine_finder()
        for statement in _INDEXES.values():
            await engine.run_ddl(statement)

    async def drop_indexes() -> None:
        engine = engine_finder()
        for name in _INDEXES:
            await engine.run_ddl(f"DROP INDEX IF EXISTS {name}")

    manager.add_raw(add_indexes)
    manager.add_raw_backwards(drop_indexes)
    return manager
