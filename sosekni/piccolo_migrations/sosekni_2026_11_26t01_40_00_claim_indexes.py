from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-11-26T01:40:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "Partial indexes over open inbox and outbox rows: claims stay cheap as history grows"

# The claim queries look only at open rows (oldest first, and per chat for the ordering
# rule); done rows pile up forever, so an index of open rows keeps a claim's cost flat.
# (OR, not IN: Postgres prints an IN list over varchar differently once dumped and
# restored, and a backup must restore the schema exactly.)
_INDEXES = {
    "inbox_update_open": "CREATE INDEX inbox_update_open ON inbox_update (id) "
    "WHERE status = 'new' OR status = 'processing'",
    "inbox_update_open_chat": "CREATE INDEX inbox_update_open_chat ON inbox_update (chat_id, id) "
    "WHERE status = 'new' OR status = 'processing'",
    "outbox_message_open": "CREATE INDEX outbox_message_open ON outbox_message (id) "
    "WHERE status = 'pending' OR status = 'sending'",
    "outbox_message_open_chat": "CREATE INDEX outbox_message_open_chat "
    "ON outbox_message (chat_id, id) WHERE status = 'pending' OR status = 'sending'",
    "outbox_message_failed": "CREATE INDEX outbox_message_failed ON outbox_message (id) "
    "WHERE status = 'failed'",
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
