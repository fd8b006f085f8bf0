"""The Telegram update types the bot handles, in a module that imports nothing.

`sosekni-ops webhook set` registers them, `poll` asks for them and the webhook refuses the
others. They live apart from `sosekni.bot` so that none of those pays for importing
python-telegram-bot and the handler table just to read a list of two words.
"""

from __future__ import annotations

ALLOWED_UPDATES: list[str] = ["message", "callback_query"]
