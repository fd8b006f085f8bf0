"""`webhook set [--drop-pending]`, `webhook info`, `webhook delete`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated
from urllib.parse import urlparse

import typer
from rich.table import Table

from ops.common import console, fail, plain, settings_or_fail
from ops.telegram_api import run_telegram
from sosekni.config import Settings
from sosekni.updates import allowed_updates

app = typer.Typer(
    help="Register the webhook with Telegram, inspect it, remove it.\n\n"
    "Examples: sosekni-ops webhook set · sosekni-ops webhook info",
    no_args_is_help=True,
)

TELEGRAM_PORTS = (443, 80, 88, 8443)


def checked_url(settings: Settings) -> str:
    """WEBHOOK_URL, refused unless Telegram can deliver to it."""
    url = settings.webhook_url
    if not url:
        fail("WEBHOOK_URL is not set: the public https:// URL of /webhook/telegram")
    parsed = urlparse(url)
    if parsed.scheme != "https":
        fail(
            f"WEBHOOK_URL must use https:// (Telegram only delivers over TLS), not {parsed.scheme}://"
        )
    port = parsed.port or 443
    if port not in TELEGRAM_PORTS:
        ports = ", ".join(map(str, TELEGRAM_PORTS))
        fail(f"WEBHOOK_URL port {port} is not one Telegram delivers to: use {ports}")
    return url


@app.command("set")
def set_(
    drop_pending: Annotated[
        bool, typer.Option("--drop-pending", help="Drop updates Telegram is still holding.")
    ] = False,
    max_connections: Annotated[
        int,
        typer.Option(help="Simultaneous connections Telegram may open (1-100).", min=1, max=100),
    ] = 40,
) -> None:
    """Register WEBHOOK_URL with the secret token and the update types the bot handles.

    Example: sosekni-ops webhook set --drop-pending
    """
    settings = settings_or_fail(need_admins=False, need_token=True, need_webhook_secret=True)
    url = checked_url(settings)
    kinds = allowed_updates(settings.community_chat_id)
    run_telegram(
        settings,
        lambda bot: bot.set_webhook(
            url,
            secret_token=settings.require_webhook_secret(),
            allowed_updates=kinds,
            max_connections=max_connections,
            drop_pending_updates=drop_pending,
        ),
    )
    dropped = ", pending updates dropped" if drop_pending else ""
    console.print(plain(f"webhook set to {url} ({', '.join(kinds)}{dropped})"))


def _when(timestamp: datetime | int | None) -> str:
    if timestamp is None:
        return "—"
    if isinstance(timestamp, int):
        timestamp = datetime.fromtimestamp(timestamp, UTC)
    return f"{timestamp.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"


@app.command("info")
def info() -> None:
    """Show what Telegram has: URL, pending updates, the last delivery error, connections.

    Example: sosekni-ops webhook info
    """
    settings = settings_or_fail(need_admins=False, need_token=True)
    found = run_telegram(settings, lambda bot: bot.get_webhook_info())
    table = Table("", "", title="Telegram webhook", show_header=False)
    table.add_row("URL", plain(found.url) if found.url else "[yellow](none: polling or not set)[/]")
    table.add_row("pending updates", str(found.pending_update_count))
    table.add_row("last error", _when(found.last_error_date))
    table.add_row("last error message", plain(found.last_error_message or "—"))
    table.add_row("max connections", str(found.max_connections or "—"))
    table.add_row("allowed updates", plain(", ".join(found.allowed_updates or []) or "all"))
    console.print(table)


@app.command("delete")
def delete(
    drop_pending: Annotated[
        bool, typer.Option("--drop-pending", help="Drop updates Telegram is still holding.")
    ] = False,
) -> None:
    """Remove the webhook (for example before `sosekni-ops poll`).

    Example: sosekni-ops webhook delete
    """
    settings = settings_or_fail(need_admins=False, need_token=True)
    run_telegram(settings, lambda bot: bot.delete_webhook(drop_pending_updates=drop_pending))
    console.print("webhook deleted")
