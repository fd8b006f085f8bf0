"""The Telegram update types the bot handles, in a module that imports nothing.

`sosekni-ops webhook set` registers them, `poll` asks for them and the webhook refuses the
others. They live apart from `sosekni.bot` so that none of those pays for importing
python-telegram-bot and the handler table just to read a list of two words.
"""

from __future__ import annotations

ALLOWED_UPDATES: list[str] = ["message", "callback_query"]
JOIN_REQUEST = "chat_join_request"  # asked for only with COMMUNITY_CHAT_ID set
HANDLED_UPDATES: list[str] = [*ALLOWED_UPDATES, JOIN_REQUEST]


def allowed_updates(community_chat_id: int | None) -> list[str]:
    """What `webhook set` and `poll` ask Telegram for: join requests with a community chat."""
    return HANDLED_UPDATES if community_chat_id is not None else ALLOWED_UPDATES
