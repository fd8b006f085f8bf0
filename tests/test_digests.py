"""Digests through the real server, on SQLite and on Postgres: a burst of requests reaches each
administrator as a few messages, and every way of deciding on a digest works."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from typing import Any

from sosekni.standin import FakeTelegram
from tests.harness import BotServer, Db, bot_message, callback, message, next_id, user


async def post_all(server: BotServer, updates: list[dict[str, Any]]) -> None:
    answers = await asyncio.gather(*(server.post(u) for u in updates))
    assert {a.status_code for a in answers} == {200}, [a.text for a in answers]


async def two_admins(db: Db) -> list[dict[str, Any]]:
    admins = [user(next_id(), "Olga", "olga_admin"), user(next_id(), "Ivan", None)]
    for admin in admins:
        await db.add_admin(admin["id"])
    return admins


async def burst(server: BotServer, db: Db, count: int) -> dict[int, int]:
    """`count` clients send /request at once; client id → request id."""
    clients = [user(next_id(), f"Client {n}", f"client_{n}") for n in range(count)]
    await post_all(server, [message(c, f"/request Plot {n}, hello") for n, c in enumerate(clients)])
    await db.settle(timeout=60)
    rows = await db.fetch("SELECT id, client_telegram_id FROM client_request")
    return {int(r["client_telegram_id"]): int(r["id"]) for r in rows}


async def copies(db: Db, admin: dict[str, Any], request_id: int) -> list[dict[str, Any]]:
    """The administrator's messages showing `request_id`, oldest first, as a reply or a tap
    carries them."""
    rows = await db.fetch(
        "SELECT message_id FROM admin_notification WHERE chat_id = {} AND request_id = {} "
        "ORDER BY id",
        admin["id"],
        request_id,
    )
    assert rows, f"#{request_id} was never shown to {admin['id']}"
    return [bot_message(admin["id"], int(r["message_id"]), "") for r in rows]


async def digest_of(db: Db, admin: dict[str, Any], request_id: int) -> dict[str, Any]:
    return (await copies(db, admin, request_id))[0]


def latest_text(tg: FakeTelegram, chat_id: int, message_id: int) -> str:
    edits = [
        c
        for c in tg.calls("editMessageText", chat_id=chat_id)
        if c.params["message_id"] == message_id and c.status == 200
    ]
    assert edits, f"message {message_id} in {chat_id} was never edited"
    return edits[-1].params["text"]


def buttons(tg: FakeTelegram, chat_id: int, message_id: int) -> list[str]:
    edits = [
        c
        for c in tg.calls("editMessageText", chat_id=chat_id)
        if c.params["message_id"] == message_id and c.status == 200
    ]
    markup = edits[-1].params.get("reply_markup") or {"inline_keyboard": []}
    return [b["callback_data"] for row in markup["inline_keyboard"] for b in row]


async def test_a_burst_of_25_reaches_each_administrator_in_a_few_digests_once_each(
    bot: tuple[BotServer, Db, FakeTelegram],
) -> None:
    server, db, tg = bot
    admins = await two_admins(db)
    ids = await burst(server, db, 25)
    for admin in admins:
        sent = tg.calls("sendMessage", chat_id=admin["id"])
        # Far fewer messages than requests. How many exactly depends on how many seconds
        # storing the burst takes against the chat's pace of about one message a second:
        # 3 or 4 on a quiet machine, 5 seen with the machine's two CPUs busy elsewhere.
        assert len(sent) <= 8, [c.params["text"][:40] for c in sent]
        assert Counter(tg.shown_requests(admin["id"])) == Counter(ids.values())
        digests = [c for c in sent if "new requests" in c.params["text"]]
        assert digests, "no digest"
        for call in digests:
            shown = len(call.params["reply_markup"]["inline_keyboard"])
            assert 2 <= shown <= 10
            assert call.params["text"].startswith(f"📥 <b>{shown} new requests</b>")
    for client_id, request_id in ids.items():
        (confirmation,) = tg.sent_texts(client_id)
        assert f"#{request_id} has been received" in confirmation


async def test_taps_and_text_replies_on_a_digest_decide_the_named_request(
    bot: tuple[BotServer, Db, FakeTelegram],
) -> None:
    server, db, tg = bot
    olga, ivan = await two_admins(db)
    ids = sorted((await burst(server, db, 4)).values())
    first, second, third, fourth = ids
    on_olga = await digest_of(db, olga, first)
    on_ivan = await digest_of(db, ivan, first)

    await post_all(server, [callback(olga, f"approve:{first}", on_olga)])
    await post_all(server, [message(ivan, f"Reject #{second}: not a resident", reply_to=on_ivan)])
    await post_all(server, [message(olga, f"approve {third}", reply_to=on_olga)])
    await post_all(server, [message(ivan, "Approve", reply_to=on_ivan)])  # which one?
    await db.settle(timeout=30)

    rows = {r["id"]: r for r in await db.fetch("SELECT * FROM client_request")}
    assert rows[first]["status"] == "approved" and rows[first]["admin_name"] == "Olga (@olga_admin)"
    assert rows[second]["status"] == "rejected" and rows[second]["reason"] == "not a resident"
    assert rows[third]["status"] == "approved"
    assert rows[fourth]["status"] == "pending"  # the bare Approve decided nothing
    assert re.search(
        rf"say which one, e\.g\. <code>Approve {first}</code>", tg.sent_texts(ivan["id"])[-1]
    )
    # Every copy shows each outcome in its block; only the undecided request keeps buttons.
    for admin, on in ((olga, on_olga), (ivan, on_ivan)):
        text = latest_text(tg, admin["id"], on["message_id"])
        assert text.startswith("📥 <b>4 requests</b> · 1 waiting")
        assert "✅ <b>Approved</b> by Olga (@olga_admin)" in text
        assert "❌ <b>Rejected</b> by Ivan" in text and "Reason: not a resident" in text
        assert buttons(tg, admin["id"], on["message_id"]) == [
            f"approve:{fourth}",
            f"reject:{fourth}",
        ]
    # The clients were told, each once.
    texts = {rid: tg.sent_texts(r["client_telegram_id"]) for rid, r in rows.items()}
    assert texts[first][-1].startswith("Good news")
    assert "Reason: not a resident" in texts[second][-1]
    assert len(texts[fourth]) == 1


async def test_first_decision_wins_under_20_taps_across_two_digests_and_a_card(
    bot: tuple[BotServer, Db, FakeTelegram],
) -> None:
    server, db, tg = bot
    olga, ivan = await two_admins(db)
    ids = sorted((await burst(server, db, 3)).values())
    target, *others = ids
    for other in others:  # leave only the target pending, so /pending shows it as one card
        await post_all(
            server, [callback(ivan, f"reject:{other}", await digest_of(db, ivan, other))]
        )
    await db.settle()
    await post_all(server, [message(olga, "/pending")])
    await db.settle()
    (card,) = [
        c
        for c in tg.calls("sendMessage", chat_id=olga["id"])
        if "Access request" in c.params["text"]
    ]
    assert f"approve:{target}" in str(card.params["reply_markup"])
    on_card = (await copies(db, olga, target))[-1]
    places = [
        (olga, await digest_of(db, olga, target)),
        (ivan, await digest_of(db, ivan, target)),
        (olga, on_card),
    ]
    taps = [
        callback(admin, f"{'approve' if n % 2 else 'reject'}:{target}", on)
        for n in range(20)
        for admin, on in [places[n % 3]]
    ]
    tg_before = len(tg.calls("answerCallbackQuery"))
    await post_all(server, taps)
    await db.settle(timeout=30)

    (row,) = await db.fetch("SELECT * FROM client_request WHERE id = {}", target)
    assert row["status"] in ("approved", "rejected")
    answers = [c.params["text"] for c in tg.calls("answerCallbackQuery")[tg_before:]]
    assert len(answers) == 20
    assert sum(a.startswith(f"Request #{target} ") and "already" not in a for a in answers) == 1
    assert sum("already processed" in a for a in answers) == 19
    decisions = await db.value(
        "SELECT count(*) FROM outbox_message WHERE purpose = 'decision' AND request_id = {}",
        target,
    )
    assert decisions == 1
    word = "Approved" if row["status"] == "approved" else "Rejected"
    for admin, on in places:  # every copy: both digests and the single card
        assert f"<b>{word}</b>" in latest_text(tg, admin["id"], on["message_id"])
        assert f"approve:{target}" not in buttons(tg, admin["id"], on["message_id"])


async def test_a_burst_delivered_twice_over_has_one_effect(
    bot: tuple[BotServer, Db, FakeTelegram],
) -> None:
    server, db, tg = bot
    olga, ivan = await two_admins(db)
    clients = [user(next_id(), f"Client {n}", None) for n in range(12)]
    updates = [message(c, f"/request Plot {n}") for n, c in enumerate(clients)]
    await post_all(server, updates + updates + updates)  # Telegram redelivers everything
    await db.settle(timeout=60)
    ids = sorted(int(r["id"]) for r in await db.fetch("SELECT id FROM client_request"))
    assert len(ids) == 12
    for admin in (olga, ivan):
        assert sorted(tg.shown_requests(admin["id"])) == ids
    taps = [callback(olga, f"approve:{rid}", await digest_of(db, olga, rid)) for rid in ids]
    await post_all(server, taps + taps)
    await db.settle(timeout=60)
    assert await db.value("SELECT count(*) FROM client_request WHERE status = 'approved'") == 12
    assert len(tg.calls("answerCallbackQuery")) == 12  # a redelivered tap is not processed again
    for client in clients:
        texts = tg.sent_texts(client["id"])
        assert len(texts) == 2 and texts[1].startswith("Good news"), texts
