from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-12-03T18:30:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "Blocked clients: chats whose messages are held, and unreachable requests"

# `blocked_chat`: a client's chat that answered 403 (the bot was blocked); messages to it are
# held (outbox status `held`) until the client writes again. `client_request.unreachable_at`:
# when its client was found unreachable, shown on the administrators' cards. Raw SQL, as
# Piccolo runs raw steps before its own column steps.


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="sosekni", description=DESCRIPTION)

    async def add() -> None:
        engine = engine_finder()
        await engine.run_ddl(
            "CREATE TABLE blocked_chat (chat_id BIGINT PRIMARY KEY, "
            "blocked_at TIMESTAMPTZ NOT NULL)"
        )
        await engine.run_ddl(
            "ALTER TABLE client_request ADD COLUMN unreachable_at TIMESTAMPTZ NULL"
        )

    async def drop() -> None:
        engine = engine_finder()
        await engine.run_ddl("ALTER TABLE client_request DROP COLUMN unreachable_at")
        await engine.run_ddl("UPDATE outbox_message SET status = 'pending' WHERE status = 'held'")
        await engine.run_ddl("DROP TABLE blocked_chat")

    manager.add_raw(add)
    manager.add_raw_backwards(drop)
    return manager
