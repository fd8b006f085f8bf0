from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-12-03T18:20:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "Requests: the community chat's invite link, and the join request behind one"

# Nullable columns with no default: existing requests simply have no link. Raw SQL, as the
# other migrations, so that it runs the same on SQLite and Postgres (SQLite >= 3.35 drops
# columns).
COLUMNS = (
    ("invite_link", "TEXT"),
    ("invite_expires_at", "TIMESTAMPTZ"),
    ("invite_created_at", "TIMESTAMPTZ"),
    ("join_chat_id", "BIGINT"),  # the chat whose join request this request answers
    ("join_notice", "VARCHAR(16)"),  # `not_told`: the decision could not reach the person
)


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="sosekni", description=DESCRIPTION)

    async def add_columns() -> None:
        engine = engine_finder()
        for name, kind in COLUMNS:
            await engine.run_ddl(f"ALTER TABLE client_request ADD COLUMN {name} {kind} NULL")

    async def drop_columns() -> None:
        engine = engine_finder()
        for name, _ in reversed(COLUMNS):
            await engine.run_ddl(f"ALTER TABLE client_request DROP COLUMN {name}")

    manager.add_raw(add_columns)
    manager.add_raw_backwards(drop_columns)
    return manager
