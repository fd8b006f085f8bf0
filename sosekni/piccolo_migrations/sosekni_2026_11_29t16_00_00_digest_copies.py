from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-11-29T16:00:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "Digests: one administrator's message may show several requests"

# A digest is one Telegram message listing up to ten requests, so a message is no longer
# unique in admin_notification: a copy is (chat, message, request).


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="sosekni", description=DESCRIPTION)

    async def per_request() -> None:
        engine = engine_finder()
        await engine.run_ddl("DROP INDEX IF EXISTS admin_notification_message")
        await engine.run_ddl(
            "CREATE UNIQUE INDEX admin_notification_copy "
            "ON admin_notification (chat_id, message_id, request_id)"
        )

    async def per_message() -> None:
        engine = engine_finder()
        await engine.run_ddl("DROP INDEX IF EXISTS admin_notification_copy")
        # Going back keeps one request per message: the digest's first, as older code reads.
        await engine.run_ddl(
            "DELETE FROM admin_notification WHERE id NOT IN (SELECT min(id) FROM "
            "admin_notification GROUP BY chat_id, message_id)"
        )
        await engine.run_ddl(
            "CREATE UNIQUE INDEX admin_notification_message "
            "ON admin_notification (chat_id, message_id)"
        )

    manager.add_raw(per_request)
    manager.add_raw_backwards(per_message)
    return manager
