"""Piccolo app registration for the bot's tables and migrations."""

import os

from piccolo.conf.apps import AppConfig

from sosekni.tables import ALL_TABLES

APP_CONFIG = AppConfig(
    app_name="sosekni",
    migrations_folder_path=os.path.join(os.path.dirname(__file__), "piccolo_migrations"),
    table_classes=list(ALL_TABLES),
    migration_dependencies=[],
    commands=[],
)
