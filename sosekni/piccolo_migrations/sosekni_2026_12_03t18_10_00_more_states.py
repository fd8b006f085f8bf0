from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.engine import engine_finder

ID = "2026-12-03T18:10:00:000000"
VERSION = "1.38.0"
DESCRIPTION = "Request states: cancelled (withdrawn by the client) and expired"

# The status rule of `rules` (a CHECK on Postgres, triggers on SQLite, which cannot alter a
# CHECK) with the two new states. Backwards, a cancelled or expired request becomes
# `rejected`: for the older code that is the one state in which a client may ask again.
_OLD = ("pending", "approved", "rejected")
_NEW = (*_OLD, "cancelled", "expired")
_CHECK = "client_request_status_valid"


def _listed(states: tuple[str, ...]) -> str:
    return ", ".join(f"'{s}'" for s in states)


async def _set_rule(states: tuple[str, ...]) -> None:
    engine = engine_finder()
    if engine.engine_type == "sqlite":
        for event in ("insert", "update"):
            name = f"client_request_status_valid_{event}"
            await engine.run_ddl(f"DROP TRIGGER IF EXISTS {name}")
            await engine.run_ddl(
                f"CREATE TRIGGER {name} BEFORE {event.upper()} ON client_request "
                f"WHEN NEW.status NOT IN ({_listed(states)}) BEGIN SELECT RAISE(ABORT, "
                f"'client_request.status must be one of {', '.join(states)}'); END"
            )
    else:
        await engine.run_ddl(f"ALTER TABLE client_request DROP CONSTRAINT IF EXISTS {_CHECK}")
        await engine.run_ddl(
            f"ALTER TABLE client_request ADD CONSTRAINT {_CHECK} "
            f"CHECK (status IN ({_listed(states)}))"
        )


async def forwards():
    manager = MigrationManager(migration_id=ID, app_name="sosekni", description=DESCRIPTION)

    async def allow_new_states() -> None:
        await _set_rule(_NEW)

    async def back_to_old_states() -> None:
        engine = engine_finder()
        await engine.run_ddl(
            "UPDATE client_request SET status = 'rejected' WHERE status IN ('cancelled', 'expired')"
        )
        await _set_rule(_OLD)

    manager.add_raw(allow_new_states)
    manager.add_raw_backwards(back_to_old_states)
    return manager
