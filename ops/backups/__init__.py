"""Backups of the bot's database, by concern: files and their names (`files`), PostgreSQL
(`postgres`), SQLite (`sqlite`), and the operations that choose between them
(`operations`). `ops.backup` holds the Typer commands; `deploy` backs up through here."""

from ops.backups.files import Backup, BackupError, backups_in, check_checksum, prune
from ops.backups.operations import create_backup, database_name, restore_backup, verify_backup
from ops.backups.postgres import PgTarget

__all__ = [
    "Backup", "BackupError", "PgTarget", "backups_in", "check_checksum", "create_backup",
    "database_name", "prune", "restore_backup", "verify_backup",
]  # fmt: skip
