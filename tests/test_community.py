"""The community chat (COMMUNITY_CHAT_ID): one-time invite links, through the webhook on
SQLite and Postgres.

A real `sosekni-ops serve` per engine with COMMUNITY_CHAT_ID set; the stand-in plays the
community chat (`set_bot_member`) and keeps the links it created (`invite_links`)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sosekni.services.invites import is_member
from sosekni.standin import CANNOT_INITIATE, FakeTelegram
from tests.conftest import StartBot, running_bot
from tests.harness import BotServer, Db, join_request, message, next_id, user
from tests.test_workflow import World

COMMUNITY = -1001234500002
TTL_HOURS = 48


@pytest.fixture(scope="module")
def server(
    module_database: str, fake_telegram: FakeTelegram, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[BotServer, Db]]:
    """The module's bot, with a community chat."""
    log_path = tmp_path_factory.mktemp("bot") / "serve.log"
    with running_bot(
        module_database,
        fake_telegram.base_url,
        log_path,
        COMMUNITY_CHAT_ID=str(COMMUNITY),
        INVITE_TTL_HOURS=str(TTL_HOURS),
    ) as running:
        yield running


@pytest.fixture
async def world(bot: tuple[BotServer, Db, FakeTelegram]) -> World:
    server, db, tg = bot
    admins = [user(next_id(), "Olga", "olga_admin"), user(next_id(), "Ivan", None)]
    for admin in admins:
        await db.add_admin(admin["id"])
    return World(server, db, tg, admins)


def moment(value: Any) -> datetime:
    """A stored timestamp (a datetime on Postgres, text on SQLite) in UTC."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


async def approved(world: World, client: dict[str, Any]) -> int:
    request_id = await world.request(client)
    await world.tap(world.admins[0], "approve", request_id)
    return request_id


def refusals(world: World) -> list[str]:
    return [
        t
        for admin in world.admins
        for t in world.texts(admin["id"])
        if "cannot create invite links" in t
    ]


async def test_an_approval_creates_a_one_time_link_and_the_welcome_carries_it(
    world: World,
) -> None:
    world.tg.set_bot_member(COMMUNITY, "administrator", can_invite_users=True)
    client = world.client()
    before = datetime.now(UTC)
    request_id = await approved(world, client)

    (create,) = world.tg.calls("createChatInviteLink")
    assert create.status == 200
    params = create.params
    assert params["chat_id"] == COMMUNITY
    assert params["name"] == f"request #{request_id}"
    assert params["member_limit"] == 1
    expires = datetime.fromtimestamp(params["expire_date"], UTC)
    ttl = timedelta(hours=TTL_HOURS)
    assert before + ttl - timedelta(seconds=1) <= expires <= datetime.now(UTC) + ttl
    (link,) = world.tg.invite_links(COMMUNITY)
    welcome = world.last_text(client["id"])
    assert welcome.startswith(f"Good news: your request #{request_id} has been approved.")
    assert link["invite_link"] in welcome and f"{expires:%Y-%m-%d %H:%M} UTC" in welcome
    row = await world.request_row(request_id)
    assert row["invite_link"] == link["invite_link"]
    assert moment(row["invite_expires_at"]) == expires
    assert world.texts(client["id"]).count(welcome) == 1

    await world.send(message(client, "/status"))
    status = world.last_text(client["id"])
    assert status.startswith(f"Your request #{request_id} was approved on ")
    assert f"Your link to the community chat: {link['invite_link']}" in status
    assert len(world.tg.invite_links()) == 1  # a valid link is shown, not replaced


async def test_a_refused_link_still_welcomes_and_tells_the_administrators_once(
    world: World,
) -> None:
    world.tg.set_bot_member(COMMUNITY, "member", can_invite_users=False)
    first, second = world.client(), world.client(lang="ru", first_name="Boris")
    one = await approved(world, first)
    two = await approved(world, second)

    assert world.last_text(first["id"]) == (
        f"Good news: your request #{one} has been approved. Welcome to SOSenki!\n\n"
        "Next steps: an administrator will contact you with the access details; "
        "keep this chat open."
    )
    assert world.last_text(second["id"]).startswith(f"Отличные новости: ваш запрос #{two}")
    creates = world.tg.calls("createChatInviteLink")
    assert [c.status for c in creates] == [400, 400]
    told = refusals(world)
    assert len(told) == len(world.admins)  # once each, not once per approval
    assert "not enough rights to manage chat invite links" in told[0].lower()
    assert str(COMMUNITY) in told[0]
    failed = await world.db.fetch(
        "SELECT request_id, last_error FROM outbox_message WHERE method = 'createChatInviteLink'"
    )
    assert {r["request_id"] for r in failed} == {one, two}
    assert all("not enough rights" in r["last_error"].lower() for r in failed)
    assert (await world.request_row(one))["invite_link"] is None

    # /status tries again; still refused: the client is told, the administrators not again.
    await world.send(message(first, "/status"))
    texts = world.texts(first["id"])
    assert "A new link to the community chat is on its way." in texts[-2]
    assert texts[-1] == (
        "A new link to the community chat could not be made just now; "
        "the administrators have been told."
    )
    assert len(refusals(world)) == len(world.admins)

    # Fixed by the chat's owner: the next /status brings a link.
    world.tg.set_bot_member(COMMUNITY, "administrator", can_invite_users=True)
    await world.send(message(first, "/status"))
    (link,) = world.tg.invite_links(COMMUNITY)
    assert world.last_text(first["id"]).startswith(
        f"Your link to the community chat: {link['invite_link']}"
    )


async def expire_link(world: World, request_id: int) -> None:
    """Time passes: the link's expiry is behind us (the stored moment, as Telegram's is)."""
    past = datetime.now(UTC) - timedelta(minutes=1)
    await world.db.fetch(
        "UPDATE client_request SET invite_expires_at = {} WHERE id = {} RETURNING id",
        past if world.db.sqlite_path is None else past.isoformat(),
        request_id,
    )


async def test_an_expired_unused_link_at_status_is_revoked_and_replaced(world: World) -> None:
    world.tg.set_bot_member(COMMUNITY, "administrator", can_invite_users=True)
    client = world.client()
    request_id = await approved(world, client)
    (old,) = world.tg.invite_links(COMMUNITY)
    await expire_link(world, request_id)

    await world.send(message(client, "/status"))

    (check,) = world.tg.calls("getChatMember")
    assert check.params == {"chat_id": COMMUNITY, "user_id": client["id"]}
    assert check.status == 200  # the stand-in's default: the client has "left"
    (revoke,) = world.tg.calls("revokeChatInviteLink")
    assert revoke.params == {"chat_id": COMMUNITY, "invite_link": old["invite_link"]}
    links = {link["invite_link"]: link for link in world.tg.invite_links(COMMUNITY)}
    assert links[old["invite_link"]]["is_revoked"] is True
    (fresh,) = [link for link in links.values() if not link["is_revoked"]]
    assert fresh["name"] == f"request #{request_id}" and fresh["member_limit"] == 1
    texts = world.texts(client["id"])
    assert texts[-2].startswith(f"Your request #{request_id} was approved on ")
    assert "on its way" not in texts[-2]  # a member would get no link: the answer says
    assert texts[-1].startswith(f"Your link to the community chat: {fresh['invite_link']}")
    assert (await world.request_row(request_id))["invite_link"] == fresh["invite_link"]


async def test_an_expired_link_of_a_member_at_status_is_not_replaced(world: World) -> None:
    world.tg.set_bot_member(COMMUNITY, "administrator", can_invite_users=True)
    client = world.client(lang="ru", first_name="Vera")
    request_id = await approved(world, client)
    (old,) = world.tg.invite_links(COMMUNITY)
    world.tg.set_member(COMMUNITY, client["id"], "member")  # joined through it
    await expire_link(world, request_id)

    await world.send(message(client, "/status"))

    (check,) = world.tg.calls("getChatMember")
    assert check.params == {"chat_id": COMMUNITY, "user_id": client["id"]}
    assert world.tg.calls("revokeChatInviteLink") == []
    assert len(world.tg.calls("createChatInviteLink")) == 1  # the approval's only
    assert world.tg.invite_links(COMMUNITY) == [old]
    status, member = world.texts(client["id"])[-2:]
    assert status.startswith(f"Ваш запрос #{request_id} одобрен")
    assert member == "Вы уже участник чата сообщества."
    assert (await world.request_row(request_id))["invite_link"] == old["invite_link"]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_a_refused_membership_check_renews_the_expired_link_as_before(
    backend: str, start_bot: StartBot, telegram: FakeTelegram
) -> None:
    """A server of its own, with a community chat of its own: one more link cycle in the
    module's chat would take it past the 20 calls a minute the sender keeps per group."""
    community = COMMUNITY - 7
    server, db = start_bot(
        backend, COMMUNITY_CHAT_ID=str(community), INVITE_TTL_HOURS=str(TTL_HOURS)
    )
    admin = user(next_id(), "Olga", "olga_admin")
    await db.add_admin(admin["id"])
    world = World(server, db, telegram, [admin])
    telegram.set_bot_member(community, "administrator", can_invite_users=True)
    client = world.client()
    request_id = await approved(world, client)
    (old,) = telegram.invite_links(community)
    await expire_link(world, request_id)
    refused = "Bad Request: chat not found"
    telegram.fail_next(status=400, description=refused, method="getChatMember")

    await world.send(message(client, "/status"))

    (check,) = telegram.calls("getChatMember")
    assert check.status == 400
    (revoke,) = telegram.calls("revokeChatInviteLink")
    assert revoke.params == {"chat_id": community, "invite_link": old["invite_link"]}
    (fresh,) = [link for link in telegram.invite_links(community) if not link["is_revoked"]]
    assert world.texts(client["id"])[-1].startswith(
        f"Your link to the community chat: {fresh['invite_link']}"
    )
    assert (await world.request_row(request_id))["invite_link"] == fresh["invite_link"]


def test_is_member_reads_telegrams_chat_member() -> None:
    assert all(is_member({"status": s}) for s in ("creator", "administrator", "member"))
    assert is_member({"status": "restricted", "is_member": True})
    assert not is_member({"status": "restricted", "is_member": False})
    assert not any(is_member({"status": s}) for s in ("left", "kicked"))
    assert not is_member(None)


async def test_a_create_retried_after_a_server_error_gives_one_welcome_and_says_so(
    world: World,
) -> None:
    world.tg.set_bot_member(COMMUNITY, "administrator", can_invite_users=True)
    world.tg.fail_next(1, 500, method="createChatInviteLink")
    client = world.client()
    request_id = await approved(world, client)

    assert [c.status for c in world.tg.calls("createChatInviteLink")] == [500, 200]
    (link,) = world.tg.invite_links(COMMUNITY)
    welcomes = [t for t in world.texts(client["id"]) if t.startswith("Good news")]
    assert len(welcomes) == 1 and link["invite_link"] in welcomes[0]
    # An attempt whose outcome is unknown may have made a link nobody recorded: logged.
    assert f"request #{request_id}: invite link created at attempt 2" in world.server.log()


async def test_a_rejection_creates_no_link(world: World) -> None:
    world.tg.set_bot_member(COMMUNITY, "administrator", can_invite_users=True)
    client = world.client()
    request_id = await world.request(client)
    await world.tap(world.admins[0], "reject", request_id)
    assert world.tg.calls("createChatInviteLink") == []
    assert world.last_text(client["id"]).startswith(f"Sorry, your request #{request_id} has been")


# ----------------------------------------------------------------------------- join requests


async def asked_to_join(world: World, client: dict[str, Any], **kwargs: Any) -> int:
    world.tg.add_join_request(COMMUNITY, client["id"])
    await world.send(join_request(client, COMMUNITY, **kwargs))
    rows = await world.db.fetch(
        "SELECT id FROM client_request WHERE client_telegram_id = {} ORDER BY id DESC",
        client["id"],
    )
    assert rows, world.tg.summary()
    return int(rows[0]["id"])


async def test_a_join_request_becomes_a_request_and_approval_lets_the_person_in(
    world: World,
) -> None:
    world.tg.set_bot_member(COMMUNITY, "administrator", can_invite_users=True)
    client = world.client()
    request_id = await asked_to_join(world, client, bio="Plot 42 <since 2020>")

    row = await world.request_row(request_id)
    assert row["status"] == "pending" and row["text"] == "Plot 42 <since 2020>"
    assert row["join_chat_id"] == COMMUNITY
    assert world.texts(client["id"]) == [
        f"Your request #{request_id} has been received and is pending review. "
        "You will get a message here as soon as an administrator decides."
    ]
    for admin in world.admins:
        (card,) = world.texts(admin["id"])
        assert f"Access request #{request_id}" in card and "Plot 42 &lt;since 2020&gt;" in card

    await world.tap(world.admins[0], "approve", request_id)

    (approve,) = world.tg.calls("approveChatJoinRequest")
    assert approve.status == 200
    assert approve.params == {"chat_id": COMMUNITY, "user_id": client["id"]}
    assert world.tg.join_request_state(COMMUNITY, client["id"]) == "approved"
    assert world.last_text(client["id"]) == (
        f"Good news: your request #{request_id} has been approved. Welcome to SOSenki! "
        "You are now a member of the community chat."
    )
    assert world.tg.calls("createChatInviteLink") == []  # they are in: no link needed


async def test_a_join_request_without_bio_names_the_link_and_rejection_declines_it(
    world: World,
) -> None:
    world.tg.set_bot_member(COMMUNITY, "administrator", can_invite_users=True)
    client = world.client()
    request_id = await asked_to_join(world, client)
    assert (await world.request_row(request_id))["text"] == "asked to join through Website"

    await world.tap(world.admins[1], "reject", request_id)

    (decline,) = world.tg.calls("declineChatJoinRequest")
    assert decline.params == {"chat_id": COMMUNITY, "user_id": client["id"]}
    assert world.tg.join_request_state(COMMUNITY, client["id"]) == "declined"
    assert world.last_text(client["id"]).startswith(f"Sorry, your request #{request_id}")
    assert world.tg.calls("approveChatJoinRequest") == []


async def test_a_join_request_decided_after_five_minutes_says_so_in_every_card(
    world: World,
) -> None:
    world.tg.set_bot_member(COMMUNITY, "administrator", can_invite_users=True)
    client = world.client()
    request_id = await asked_to_join(world, client)
    # Five minutes later Telegram no longer lets the bot write to them.
    world.tg.block_chat(client["id"], 403, CANNOT_INITIATE)

    await world.tap(world.admins[0], "approve", request_id)

    assert world.tg.join_request_state(COMMUNITY, client["id"]) == "approved"
    (told,) = world.tg.calls("sendMessage", chat_id=client["id"])[-1:]
    assert told.status == 403
    row = await world.request_row(request_id)
    assert row["status"] == "approved" and row["join_notice"] == "not_told"
    for admin in world.admins:
        card = (await world.copy(admin, request_id))["text"]
        shown = world.tg.calls("editMessageText", chat_id=admin["id"])[-1].params["text"]
        assert "Approved" in shown and "could not be told" in shown, card
    failed = await world.db.fetch(
        "SELECT status, last_error FROM outbox_message WHERE chat_id = {} AND purpose = {}",
        client["id"],
        "decision",
    )
    assert [r["status"] for r in failed] == ["failed"]  # not retried


async def test_someone_approved_before_is_let_in_at_once(world: World) -> None:
    world.tg.set_bot_member(COMMUNITY, "administrator", can_invite_users=True)
    client = world.client()
    request_id = await approved(world, client)
    cards_before = sum(len(world.texts(a["id"])) for a in world.admins)

    again = await asked_to_join(world, client)

    assert again == request_id  # no new request
    (approve,) = world.tg.calls("approveChatJoinRequest")
    assert approve.params == {"chat_id": COMMUNITY, "user_id": client["id"]}
    assert world.last_text(client["id"]) == (
        f"Your request #{request_id} was approved: you already have access."
    )
    assert sum(len(world.texts(a["id"])) for a in world.admins) == cards_before


async def test_a_join_request_while_one_is_pending_is_answered_by_its_decision(
    world: World,
) -> None:
    world.tg.set_bot_member(COMMUNITY, "administrator", can_invite_users=True)
    client = world.client()
    request_id = await world.request(client)
    assert await asked_to_join(world, client) == request_id  # the same pending request
    assert "You already have a pending request" in world.last_text(client["id"])

    await world.tap(world.admins[0], "approve", request_id)

    assert world.tg.join_request_state(COMMUNITY, client["id"]) == "approved"
    assert world.tg.calls("createChatInviteLink") == []


async def test_a_join_request_to_another_chat_is_left_alone(world: World) -> None:
    client = world.client()
    other = COMMUNITY - 1
    world.tg.add_join_request(other, client["id"])
    await world.send(join_request(client, other))
    assert await world.db.fetch("SELECT id FROM client_request") == []
    assert world.texts(client["id"]) == []
    assert world.tg.join_request_state(other, client["id"]) == "pending"
