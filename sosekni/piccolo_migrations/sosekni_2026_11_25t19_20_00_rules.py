from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-11-25T19:20:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "Database rules: one pending request per client, text and status checks, indexes"

_INDEXES = {
    "client_request_one_pending": "CREATE UNIQUE INDEX client_request_one_pending "
    "ON client_request (client_telegram_id) WHERE status = 'pending'",
    "admin_notification_message": "CREATE UNIQUE INDEX admin_notification_message "
    "ON admin_notification (chat_id, message_id)",
    "inbox_update_due": "CREATE INDEX inbox_update_due ON inbox_update (status, next_attempt_at, id)",
    "outbox_message_due": "CREATE INDEX outbox_message_due "
    "ON outbox_message (status, next_attempt_at, id)",
}
_SQLITE_TRIGGERS = {
    f"client_request_{rule}_{event.lower()}": (
        f"CREATE TRIGGER client_request_{rule}_{event.lower()} BEFORE {event} ON client_request "
        f"WHEN {condition} BEGIN SELECT RAISE(ABORT, '{message}'); END"
    )
    for event in ("INSERT", "UPDATE")
    for rule, condition, message in (
        (
            "text_length",
            "length(NEW.text) > 4096 OR length(NEW.text) = 0",
            "client_request.text must be 1-4096 characters",
        ),
        (
            "status_valid",
            "NEW.status NOT IN ('pending', 'approved', 'rejected')",
            "client_request.status must be pending, approved or rejected",
        ),
    )
}
_POSTGRES_CHECKS = {
    "client_request_text_length": "CHECK (char_length(text) BETWEEN 1 AND 4096)",
    "client_request_status_valid": "CHECK (status IN ('pending', 'approved', 'rejected'))",
}


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="sosekni", description=DESCRIPTION)

    # Rules the database itself keeps, whatever process or worker writes.
    async def add_rules() -> None:
        engine = engine_finder()
        for statement in _INDEXES.values():
            await engine.run_ddl(statement)
        if engine.engine_type == "sqlite":
            # SQLite ignores VARCHAR lengths and cannot add a CHECK later: triggers do it.
            for statement in _SQLITE_TRIGGERS.values():
                await engine.run_ddl(statement)
        else:
            for name, check in _POSTGRES_CHECKS.items():
                await engine.run_ddl(f"ALTER TABLE client_request ADD CONSTRAINT {name} {check}")

    async def drop_rules() -> None:
        engine = engine_finder()
        if engine.engine_type == "sqlite":
            for name in _SQLITE_TRIGGERS:
                await engine.run_ddl(f"DROP TRIGGER IF EXISTS {name}")
        else:
            for name in _POSTGRES_CHECKS:
                await engine.run_ddl(f"ALTER TABLE client_request DROP CONSTRAINT IF EXISTS {name}")
        for name in _INDEXES:
            await engine.run_ddl(f"DROP INDEX IF EXISTS {name}")

    manager.add_raw(add_rules)
    manager.add_raw_backwards(drop_rules)
    return manager
