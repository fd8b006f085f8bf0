"""Digest texts and replies as plain functions: what Telegram would accept, what is parsed."""

from __future__ import annotations

import html
from datetime import UTC, datetime
from typing import Any

import pytest

from sosekni.handlers.admin import parse_reply
from sosekni.render import (
    MESSAGE_MAX,
    REASON_IN_MESSAGE_MAX,
    admin_card,
    clip,
    digest_keyboard,
    digest_text,
    outcome_card,
    visible_length,
)
from sosekni.standin import check_text
from sosekni.texts import text

NOW = datetime(2026, 11, 29, 15, 31, tzinfo=UTC)


def request(n: int, **changes: Any) -> dict[str, Any]:
    found = {
        "id": n,
        "client_telegram_id": 10**12 + n,
        "client_first_name": f"Client {n}",
        "client_username": f"client_{n}",
        "text": f"Plot {n}, moving in",
        "status": "pending",
        "submitted_at": NOW,
        "admin_name": None,
        "admin_telegram_id": None,
        "responded_at": None,
        "reason": None,
    }
    found.update(changes)
    return found


def test_a_digest_lists_every_request_with_a_row_of_buttons_each() -> None:
    requests = [request(n) for n in (12, 13, 14)]
    message = digest_text(requests, "en")
    assert message.startswith("📥 <b>3 new requests</b>\n\n<b>#12</b> · ")
    assert '<a href="tg://user?id=1000000000013">Client 13</a> · @client_13' in message
    assert "2026-11-29 15:31 UTC\nPlot 14, moving in" in message
    keyboard = digest_keyboard(requests, "en")
    assert keyboard is not None
    assert [[b["text"] for b in row] for row in keyboard["inline_keyboard"]] == [
        ["✅ #12", "❌ #12"],
        ["✅ #13", "❌ #13"],
        ["✅ #14", "❌ #14"],
    ]
    assert keyboard["inline_keyboard"][1][1]["callback_data"] == "reject:13"


def test_a_decided_request_shows_its_outcome_and_loses_its_buttons() -> None:
    requests = [
        request(12),
        request(
            13,
            status="rejected",
            admin_name="Olga (@olga)",
            responded_at=NOW,
            reason="Not a <resident>",
        ),
    ]
    message = digest_text(requests, "en")
    assert message.startswith("📥 <b>2 requests</b> · 1 waiting")
    assert "❌ <b>Rejected</b> by Olga (@olga) at 2026-11-29 15:31 UTC" in message
    assert "Reason: Not a &lt;resident&gt;" in message
    keyboard = digest_keyboard(requests, "en")
    assert keyboard is not None
    assert [b["callback_data"] for b in keyboard["inline_keyboard"][0]] == [
        "approve:12",
        "reject:12",
    ]
    assert digest_keyboard([requests[1]], "en") is None


@pytest.mark.parametrize("language", ["en", "ru"])
def test_ten_of_the_longest_requests_still_fit_one_valid_message(language: str) -> None:
    hostile = "<b>&amp;" * 600  # 4096+ characters that all need escaping
    requests = [
        request(
            10**17 + n,
            client_first_name="<i>" + "Ж" * 250,
            client_username="u" * 32,
            text=hostile[:4096],
            status="approved" if n % 2 else "pending",
            admin_name="&" * 255,
            responded_at=NOW,
            reason="<" * 4000,
        )
        for n in range(10)
    ]
    message = digest_text(requests, language)
    assert visible_length(message) <= MESSAGE_MAX
    check_text(message, "HTML")  # Telegram's HTML rules, as the fake Bot API checks them
    assert message.count("<b>#1000000000000000") == 10


@pytest.mark.parametrize(
    ("reply", "parsed"),
    [
        ("Approve", ("approved", None, None)),
        ("reject: spam", ("rejected", None, "spam")),
        ("Approve 12", ("approved", 12, None)),
        ("approve #12", ("approved", 12, None)),
        ("REJECT 12: not a resident", ("rejected", 12, "not a resident")),
        ("Reject#12:no", ("rejected", 12, "no")),
        ("  reject 12  ", ("rejected", 12, None)),
        ("Reject: 12", ("rejected", None, "12")),
        ("Approve 12 please", None),
        ("Approved", None),
        ("Approve 12abc", None),
        ("maybe later", None),
    ],
)
def test_replies_name_the_request_when_they_must(
    reply: str, parsed: tuple[str, int | None, str | None] | None
) -> None:
    assert parse_reply(reply) == parsed


@pytest.mark.parametrize("language", ["en", "ru"])
def test_a_decision_that_never_reached_a_person_who_asked_to_join_is_said(language: str) -> None:
    told = request(12, status="approved", admin_name="Olga", responded_at=NOW)
    not_told = request(13, status="approved", admin_name="Olga", responded_at=NOW)
    not_told.update(join_chat_id=-1001234500002, join_notice="not_told")
    message = digest_text([told, not_told, request(14)], language)
    check_text(message, "HTML")
    note = {"en": "could not be told", "ru": "сообщить человеку не удалось"}[language]
    assert message.count(note) == 1
    assert message.index(note) > message.index("#13")


# The longest text real Telegram delivers in emoji past U+FFFF: 2048 of them are its 4096 UTF-16
# units. Telegram measures every message the bot sends in the same units, so a card that
# counted characters (2048) would leave the whole text in and be refused as too long.
EMOJI_TEXT = "😀" * 2048


@pytest.mark.parametrize("language", ["en", "ru"])
def test_cards_digests_and_replies_of_emoji_texts_fit_telegrams_utf16_limit(
    language: str,
) -> None:
    pending = request(7, text=EMOJI_TEXT, client_first_name="🙂" * 64)
    decided = dict(
        pending, status="rejected", admin_name="🦊" * 100, responded_at=NOW, reason=EMOJI_TEXT
    )
    messages = {
        "card": admin_card(pending, language),
        "reminder": admin_card(pending, language, reminder=True),
        "outcome": outcome_card(decided, language),
        "digest": digest_text([request(n, text=EMOJI_TEXT) for n in range(10)], language),
        "client's rejection": text(
            language,
            "rejected_reason",
            id=7,
            reason=html.escape(clip(EMOJI_TEXT, REASON_IN_MESSAGE_MAX)),
        ),
    }
    for name, message in messages.items():
        assert visible_length(message) <= MESSAGE_MAX, name
        check_text(message, "HTML")  # the stand-in's count: UTF-16 units of the parsed text
    assert "😀" * 1000 in messages["card"]  # shortened to fit, not emptied


def test_clip_counts_utf16_units_and_never_cuts_inside_a_character() -> None:
    assert clip("😀" * 3, 6) == "😀" * 3
    assert clip("😀" * 3, 5) == "😀😀…"
    assert clip("😀" * 3, 4) == "😀…"
    assert clip("ab😀", 3) == "ab…"
    assert visible_length("<b>😀&amp;</b>") == 3
