"""Piccolo configuration: DATABASE_URL picks PostgresEngine (asyncpg) or SQLiteEngine."""

from piccolo.conf.apps import AppRegistry

from sosekni.config import DEFAULT_DATABASE_URL, environment
from sosekni.db import engine_for

DB = engine_for(environment().get("DATABASE_URL") or DEFAULT_DATABASE_URL)

APP_REGISTRY = AppRegistry(apps=["sosekni.piccolo_app"])
