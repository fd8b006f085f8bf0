"""POST /webhook/telegram under hostile input: properties over the app in-process, and unicode.

The properties run against the webhook app in-process (its ASGI interface, no workers) on a
SQLite file of its own, so whatever they leave behind touches no other test. What needs the
real `sosekni-ops serve` runs on the module's server: the 413 of its HTTP server, the
processing of an accepted update, and hostile unicode carried through to Telegram.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from sosekni.standin import FakeTelegram, parse_html, utf16_length
from tests.conftest import WebhookApp, serving
from tests.harness import (
    SECRET,
    BotServer,
    Db,
    bot_message,
    callback,
    message,
    next_id,
    on_database,
    user,
)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
HANDLED_KINDS = ("message", "callback_query")
MAX_BODY = 1024 * 1024
EXPECTED_STATUSES = {200, 400, 403, 413, 415}
# Derandomized: CI runs the same 200 examples each time (a red run means a change broke
# something); HYPOTHESIS_SEED_RANDOM=1 explores new ones locally.
PROPERTY = settings(
    derandomize=not os.environ.get("HYPOTHESIS_SEED_RANDOM"),
    max_examples=200,
    deadline=None,
    database=None,
    print_blob=False,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)


# ----------------------------------------------------------------------------- the target


@dataclass
class Target:
    """The webhook app in-process on its own SQLite file, and the event loop it runs on.

    The properties are plain functions (Hypothesis drives them), so each request runs to
    completion on a loop of the module's own, through the app's ASGI interface.
    """

    app: WebhookApp
    loop: asyncio.AbstractEventLoop
    sqlite_path: Path

    def post(
        self,
        body: bytes,
        *,
        secret: bytes | None = SECRET.encode(),
        content_type: bytes | None = b"application/json",
    ) -> httpx.Response:
        return self.loop.run_until_complete(
            self.app.post(body, secret=secret, content_type=content_type)
        )

    def get(self, path: str) -> httpx.Response:
        return self.loop.run_until_complete(self.app.get(path))

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.sqlite_path, timeout=30) as conn:
            return conn.execute(sql, args).fetchall()

    def stored(self) -> int:
        return int(self.query("SELECT count(*) FROM inbox_update")[0][0])

    def payload(self, update_id: int) -> Any:
        rows = self.query("SELECT payload FROM inbox_update WHERE update_id = ?", update_id)
        return json.loads(rows[0][0]) if rows else None

    def row(self, update_id: int) -> dict[str, Any] | None:
        rows = self.query(
            "SELECT status, attempts, error FROM inbox_update WHERE update_id = ?", update_id
        )
        return dict(zip(("status", "attempts", "error"), rows[0], strict=True)) if rows else None


@pytest.fixture(scope="module")
def hostile(
    fake_telegram: FakeTelegram, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Target]:
    """One app for every property, on a migrated SQLite file of its own and no workers:
    what the properties leave behind touches no other test."""
    from sosekni import migrations

    path = tmp_path_factory.mktemp("hostile") / "bot.db"
    url = f"sqlite:///{path}"
    on_database(url, migrations.forwards)
    loop = asyncio.new_event_loop()
    served = serving(url, fake_telegram.base_url)
    try:
        app = loop.run_until_complete(served.__aenter__())
        try:
            yield Target(app, loop, path)
        finally:
            loop.run_until_complete(served.__aexit__(None, None, None))
    finally:
        loop.close()


# ----------------------------------------------------------------------------- strategies

SNIPPETS = (
    "\x00",
    "\ud800",
    "\udfff",
    "\udbff",
    "\u202e",
    "\u202d",
    "\u200f",
    "\u200e",
    "\u2066",
    "\u200d",
    "\u200b",
    "\ufeff",
    "\u0301\u0336\u0301",
    "\uffff",
    "\U0010ffff",
    "😀",
    "👨‍👩‍👧‍👦",
    "🏳️‍🌈",
    "\r\n",
    "\t",
    "\x1b[31m",
    "<b>",
    "</a>",
    "&amp;",
    "\\",
    '"',
    "'; DROP TABLE client_request; --",
    "%s",
    "{}",
    "{0}",
    "/request",
    "Approve",
    "Reject: ",
    "#1",
    "@SoSenkiTestBot",
)
snippet_text = st.lists(st.sampled_from(SNIPPETS) | st.text(max_size=8), max_size=12).map("".join)
huge_text = st.builds(
    lambda unit, times: (unit * times)[:100_000],
    st.sampled_from(SNIPPETS) | st.text(min_size=1, max_size=3),
    st.integers(1, 100_000),
)
texts = st.one_of(snippet_text, huge_text, st.text())
# JSON without object keys named "id": the ids that become columns are varied on purpose only
# by the tests about them, the others keep them integers of Telegram's size.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | snippet_text,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=8).filter(lambda k: k != "id"), inner, max_size=4)
    ),
    max_leaves=16,
)
usernames = st.none() | st.from_regex(r"[A-Za-z][A-Za-z0-9_]{4,31}", fullmatch=True)
commands = st.sampled_from(
    ["/start", "/request", "/status", "/pending", "/help", "/request@SoSenkiTestBot", "/"]
)


@st.composite
def senders(draw: st.DrawFn) -> dict[str, Any]:
    return user(
        next_id(),
        draw(snippet_text),
        draw(usernames),
        draw(st.sampled_from(["en", "ru", "", "de", "zz-ZZ"])),
    )


def _without_text(update: dict[str, Any], **content: Any) -> dict[str, Any]:
    msg = update["message"]
    msg.pop("text")
    msg.pop("entities", None)
    msg.update(content)
    return update


def _rekind(update: dict[str, Any], kind: str) -> dict[str, Any]:
    update[kind] = update.pop("message")
    if kind.endswith("channel_post"):
        update[kind]["chat"] = {"id": -1001234567890, "type": "channel", "title": "news"}
        update[kind].pop("from")
    return update


@st.composite
def valid_updates(draw: st.DrawFn) -> dict[str, Any]:
    """Updates as Telegram could send them, with hostile text wherever text goes."""
    sender = draw(senders())
    kind = draw(
        st.sampled_from(
            [
                "command",
                "text",
                "reply",
                "callback",
                "callback without message",
                "group",
                "photo",
                "sticker",
                "edited_message",
                "channel_post",
                "edited_channel_post",
                "other kind",
            ]
        )
    )
    on_message = bot_message(sender["id"], draw(st.integers(1, 2**31 - 1)), draw(snippet_text))
    if kind == "command":
        line = draw(commands) + draw(st.sampled_from(["", " ", "\n"])) + draw(texts)
        return message(sender, line)
    if kind == "text":
        return message(sender, draw(texts))
    if kind == "reply":
        return message(sender, draw(texts), reply_to=on_message)
    if kind.startswith("callback"):
        data = draw(st.sampled_from(["approve:1", "reject:999999999999999999", "x"]) | texts)
        update = callback(sender, data, on_message)
        if kind == "callback without message":
            update["callback_query"].pop("message")
        return update
    if kind == "group":
        update = message(sender, draw(commands) + " " + draw(snippet_text))
        kind_of_group = draw(st.sampled_from(["group", "supergroup"]))
        update["message"]["chat"] = {"id": -draw(st.integers(1, 2**52)), "type": kind_of_group}
        update["message"]["chat"]["title"] = draw(snippet_text)
        return update
    if kind == "photo":
        size = {"file_id": "AgAD", "file_unique_id": "AQAD", "width": 90, "height": 90}
        return _without_text(message(sender, ""), photo=[size], caption=draw(snippet_text))
    if kind == "sticker":
        sticker = {
            "file_id": "CAAC",
            "file_unique_id": "AgAD",
            "type": "regular",
            "width": 512,
            "height": 512,
            "is_animated": False,
            "is_video": False,
            "emoji": draw(snippet_text),
        }
        return _without_text(message(sender, ""), sticker=sticker)
    if kind in ("edited_message", "channel_post", "edited_channel_post"):
        return _rekind(message(sender, draw(texts)), kind)
    name = draw(
        st.sampled_from(
            ["poll_answer", "my_chat_member", "chat_join_request", "message_reaction", "zz_future"]
        )
    )
    return {"update_id": next_id(), name: draw(json_values)}


def encode(update: Any, ascii_only: bool) -> bytes:
    """JSON as UTF-8, escaping non-ASCII when asked or when a lone surrogate forces it."""
    try:
        body = json.dumps(update, ensure_ascii=ascii_only).encode()
    except UnicodeEncodeError:
        return json.dumps(update).encode()
    if len(body) >= MAX_BODY:  # raw UTF-8 is shorter, unless a lone surrogate forbids it
        with contextlib.suppress(UnicodeEncodeError):
            body = json.dumps(update, ensure_ascii=False).encode()
    return body


def is_handled(update: Any) -> bool:
    return isinstance(update, dict) and any(kind in update for kind in HANDLED_KINDS)


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every place inside `value` (dict keys and list positions), the value's own ids left out."""
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, inner in items:
        if prefix == () and key == "update_id":
            continue
        yield (*prefix, key)
        if isinstance(inner, dict | list):
            yield from paths(inner, (*prefix, key))


@st.composite
def mutated_updates(draw: st.DrawFn) -> dict[str, Any]:
    """A valid update with fields deleted, retyped, enlarged or added (ids stay integers)."""
    update = draw(valid_updates())
    for _ in range(draw(st.integers(1, 4))):
        places = list(paths(update))
        if not places:
            break
        *parent_path, key = draw(st.sampled_from(places))
        parent: Any = update
        for step in parent_path:
            parent = parent[step]
        action = draw(st.sampled_from(["delete", "retype", "enlarge", "add"]))
        if action == "delete" and isinstance(parent, dict):
            del parent[key]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.text(max_size=12).filter(lambda k: k != "id"))] = draw(json_values)
        elif key != "id":
            parent[key] = draw(huge_text if action == "enlarge" else json_values)
    return update


update_ids = st.one_of(
    st.integers(0, 2**63 - 1).map(lambda n: n if n > 10**12 else next_id()),
    st.integers(-(2**64), 2**64),
    json_values,
)
update_like = st.fixed_dictionaries(
    {"update_id": update_ids},
    optional={
        kind: json_values
        for kind in (*HANDLED_KINDS, "edited_message", "channel_post", "poll", "zz_future")
    },
)


@st.composite
def broken_json(draw: st.DrawFn) -> bytes:
    body = encode(draw(json_values | update_like), draw(st.booleans()))
    cut = draw(st.integers(0, len(body)))
    garbage = draw(st.binary(max_size=4))
    return body[:cut] + garbage + body[cut + draw(st.integers(0, 3)) :]


def header_values(alphabet: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """Header values HTTP/1.1 can carry: visible bytes, inner spaces or tabs, none at the ends."""
    return st.lists(alphabet, max_size=6).map(b" ".join)


ascii_words = st.binary(min_size=1, max_size=40).map(
    lambda raw: bytes(b for b in raw if 0x21 <= b <= 0x7E) or b"x"
)
utf8_words = st.text(
    st.characters(min_codepoint=0x21, exclude_categories=["Cc", "Cs", "Zs", "Zl", "Zp"]),
    min_size=1,
    max_size=20,
).map(str.encode)
any_words = st.binary(min_size=1, max_size=40).map(
    lambda raw: bytes(b for b in raw if b >= 0x21 and b != 0x7F) or b"\xff"
)


def json_media_type(value: bytes) -> bool:
    return value.split(b";")[0].strip(b" \t").lower() == b"application/json"


content_types = st.one_of(
    st.none(),
    st.builds(
        lambda media, params: (media + params).strip(b" \t"),
        st.sampled_from(
            [
                b"application/json",
                b"APPLICATION/JSON",
                b"Application/Json",
                b"application/json ",
                b"application/jsonx",
                b"application/json-patch+json",
                b"text/json",
                b"application/ld+json",
                b"application/*",
                b"*/*",
                b"text/plain",
                b"",
                b"application/x-www-form-urlencoded",
                b"multipart/form-data; boundary=x",
            ]
        )
        | ascii_words,
        st.sampled_from([b"", b"; charset=utf-8", b";charset=UTF-8", b";", b" ; x=y"])
        | ascii_words.map(lambda w: b";" + w),
    ),
)


# ----------------------------------------------------------------------------- properties


def test_any_bytes_as_body_get_200_or_400_and_are_stored_only_when_accepted(
    hostile: Target,
) -> None:
    @PROPERTY
    @given(body=st.binary(max_size=2048) | broken_json())
    def check(body: bytes) -> None:
        assume(len(body) <= MAX_BODY)  # the 413 is the HTTP server's: see the test below
        before = hostile.stored()
        answer = hostile.post(body)
        assert answer.status_code in (200, 400), answer.text
        if answer.status_code != 200:
            assert hostile.stored() == before

    check()


def test_any_json_value_gets_200_or_400_by_its_update_id_and_kind(hostile: Target) -> None:
    @PROPERTY
    @given(value=json_values | update_like, ascii_only=st.booleans())
    def check(value: Any, ascii_only: bool) -> None:
        before = hostile.stored()
        answer = hostile.post(encode(value, ascii_only))
        update_id = value.get("update_id") if isinstance(value, dict) else None
        if type(update_id) is not int or not 0 <= update_id < 2**63:
            assert answer.status_code == 400, answer.text
        elif not is_handled(value):
            assert (answer.status_code, answer.json()) == (200, {"ok": True})
        else:
            assert answer.status_code in (200, 400), answer.text
        if answer.status_code == 400 or not is_handled(value):
            assert hostile.stored() == before
        else:
            assert hostile.payload(update_id) is not None

    check()


def test_valid_update_with_right_secret_is_always_acknowledged_and_stored_if_handled(
    hostile: Target,
) -> None:
    @PROPERTY
    @given(update=valid_updates(), ascii_only=st.booleans())
    def check(update: dict[str, Any], ascii_only: bool) -> None:
        body = encode(update, ascii_only)
        assume(len(body) <= MAX_BODY)
        answer = hostile.post(body)
        assert (answer.status_code, answer.json()) == (200, {"ok": True})
        if is_handled(update):  # as JSON reads it back: adjacent surrogates form one character
            assert hostile.payload(update["update_id"]) == json.loads(json.dumps(update))
        else:
            assert hostile.payload(update["update_id"]) is None

    check()


def test_update_with_missing_or_wrongly_typed_fields_gets_200_or_400_never_500(
    hostile: Target,
) -> None:
    @PROPERTY
    @given(update=mutated_updates(), ascii_only=st.booleans())
    def check(update: dict[str, Any], ascii_only: bool) -> None:
        before = hostile.stored()
        body = encode(update, ascii_only)
        assume(len(body) <= MAX_BODY)  # the 413 is the HTTP server's: see the test below
        answer = hostile.post(body)
        assert answer.status_code in (200, 400), answer.text
        if answer.status_code != 200 or not is_handled(update):
            assert hostile.stored() == before
        else:  # as JSON reads it back: adjacent surrogates form one character
            assert hostile.payload(update["update_id"]) == json.loads(json.dumps(update))

    check()


def test_wrong_or_missing_secret_is_403_and_stores_nothing_whatever_else_is_sent(
    hostile: Target,
) -> None:
    @PROPERTY
    @given(
        secret=st.none() | header_values(ascii_words | utf8_words),
        body=valid_updates().map(lambda u: encode(u, True)) | st.binary(max_size=512),
        content_type=content_types,
    )
    @example(secret=SECRET[:-1].encode(), body=b"{}", content_type=b"application/json")
    @example(secret=(SECRET + "x").encode(), body=b"{}", content_type=b"application/json")
    @example(secret=SECRET.upper().encode(), body=b"{}", content_type=b"application/json")
    def check(secret: bytes | None, body: bytes, content_type: bytes | None) -> None:
        if secret == SECRET.encode():
            return
        before = hostile.stored()
        answer = hostile.post(body, secret=secret, content_type=content_type)
        assert answer.status_code == 403, answer.text
        assert hostile.stored() == before

    check()


def test_content_type_decides_between_200_and_415(hostile: Target) -> None:
    @PROPERTY
    @given(
        update=valid_updates(),
        content_type=content_types | header_values(any_words),
    )
    def check(update: dict[str, Any], content_type: bytes | None) -> None:
        answer = hostile.post(encode(update, True), content_type=content_type)
        ascii_value = content_type is not None and content_type.isascii()
        if content_type is not None and json_media_type(content_type):
            assert answer.status_code == 200, answer.text
        elif content_type is None or ascii_value:
            assert answer.status_code == 415, answer.text
        else:
            assert answer.status_code in (200, 415), answer.text
        if answer.status_code == 415:
            assert hostile.payload(update["update_id"]) is None

    check()


# ----------------------------------------------------------------------------- known bugs


def test_deeply_nested_json_is_refused_with_400_ignored_or_kept_as_failed(hostile: Target) -> None:
    @PROPERTY
    @given(
        depth=st.integers(1, 6000),
        shape=st.sampled_from(["list", "object"]),
        where=st.sampled_from(["body", "message", "unknown kind"]),
    )
    @example(depth=5000, shape="list", where="body")
    def check(depth: int, shape: str, where: str) -> None:
        nested = (
            "[" * depth + "]" * depth if shape == "list" else '{"a":' * depth + "0" + "}" * depth
        )
        update_id = next_id()
        if where == "body":
            body = nested
        else:
            kind = "message" if where == "message" else "poll"
            body = f'{{"update_id": {update_id}, "{kind}": {nested}}}'
        before = hostile.stored()
        answer = hostile.post(body.encode())
        if where == "message" and answer.status_code == 200:  # parsed, but no Message
            row = hostile.row(update_id)
            assert row is not None and row["status"] == "failed", row
            return
        if where == "unknown kind":  # ignored, or refused when too deep to parse at all
            assert answer.status_code in (200, 400), answer.text
        else:  # too deep to parse at all
            assert answer.status_code == 400, answer.text
        assert hostile.stored() == before

    check()


def test_secret_header_of_any_bytes_is_403(hostile: Target) -> None:
    @PROPERTY
    @given(secret=header_values(any_words))
    @example(secret=b"\xff")
    def check(secret: bytes) -> None:
        before = hostile.stored()
        answer = hostile.post(b"{}", secret=secret)
        assert answer.status_code == 403, answer.text
        assert hostile.stored() == before

    check()


def test_update_whose_chat_or_sender_id_is_no_64_bit_integer_is_kept_as_failed(
    hostile: Target,
) -> None:
    @PROPERTY
    @given(
        update=st.sampled_from(["message", "callback"]).map(
            lambda kind: (
                message(user(next_id()), "/start")
                if kind == "message"
                else callback(user(next_id()), "approve:1", bot_message(1, 1, "x"))
            )
        ),
        bad_id=st.one_of(
            st.integers(2**63, 2**80),
            st.integers(-(2**80), -(2**63) - 1),
            st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: not f.is_integer()),
            st.text(),
            st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
        ),
    )
    @example(update=message(user(1), "/start"), bad_id=2**63)
    def check(update: dict[str, Any], bad_id: Any) -> None:
        if "message" in update:
            update["message"]["chat"]["id"] = bad_id
        else:
            update["callback_query"].pop("message")
            update["callback_query"]["from"]["id"] = bad_id
        update["update_id"] = next_id()
        answer = hostile.post(encode(update, True))
        assert (answer.status_code, answer.json()) == (200, {"ok": True}), answer.text
        row = hostile.row(update["update_id"])
        assert row is not None and (row["status"], row["attempts"]) == ("failed", 0), row

    check()


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32"])
def test_update_not_in_utf8_is_refused_with_400(hostile: Target, encoding: str) -> None:
    update = message(user(next_id()), "/start")
    before = hostile.stored()
    answer = hostile.post(json.dumps(update).encode(encoding))
    assert answer.status_code == 400, answer.text
    assert hostile.stored() == before


def test_server_survived_every_hostile_input(hostile: Target) -> None:
    """Runs after the properties above: the same app answers, and is healthy. (No property
    saw a 500: an exception the route let out would have been one.)"""
    health = hostile.get("/health")
    assert health.status_code == 200, health.text
    assert health.json()["checks"]["database"] == "ok"


# ----------------------------------------------------------------------------- real process


OVERSIZED = {
    "bytes": b"x" * (MAX_BODY + 1),
    "update": json.dumps(message(user(1), "/request " + "x" * MAX_BODY)).encode(),
}


@pytest.mark.parametrize("shape", list(OVERSIZED))
async def test_any_body_over_one_mebibyte_is_413_stores_nothing_and_the_worker_survives(
    bot: tuple[BotServer, Db, FakeTelegram], shape: str
) -> None:
    # Sanic's HTTP server refuses the body from its headers, before any route: only the real
    # process enforces it, so the properties above leave bodies over 1 MiB to this test.
    server, db, _ = bot
    body = OVERSIZED[shape]
    assert len(body) > MAX_BODY
    try:
        answer = await server.post(body)
        assert answer.status_code == 413, answer.text
    except httpx.TransportError:
        pass  # Sanic may close while the client still sends the body: a reset, no answer
    assert await db.value("SELECT count(*) FROM inbox_update") == 0
    assert server.process is not None and server.process.poll() is None
    async with httpx.AsyncClient(timeout=30) as http:
        health = await http.get(f"{server.url}/health")
    assert health.status_code == 200, health.text
    assert server.log().count("Starting worker") == 1


async def test_update_with_utf8_byte_order_mark_is_processed_once_accepted(
    bot: tuple[BotServer, Db, FakeTelegram],
) -> None:
    server, db, _ = bot
    update = message(user(next_id()), "/start")
    answer = await server.post(b"\xef\xbb\xbf" + json.dumps(update).encode())
    if answer.status_code == 200:
        try:
            row = await processed(db, update["update_id"])
        finally:
            await abandon_unfinished(db)
        assert (row["status"], row["error"]) == ("done", None)
    else:
        assert answer.status_code == 400, answer.text


# ----------------------------------------------------------------------------- unicode text

UNICODE_REQUESTS = {
    "rtl and bidi marks": "Plot \u202e24 tolP\u202c, \u200fמגרש 42\u200e \u2067isolate\u2069",
    "zero width characters": "Pl\u200bot\u200d 4\u20602 \u2063x\ufeffy",
    "emoji sequences": "👨‍👩‍👧‍👦 🏳️‍🌈 👍🏽 family of four",
    "combining marks": "Z\u0335\u0321a\u0338l\u0335g\u0336o\u0337 e\u0301",
    "noncharacters": "a\uffffb\ufffec\U0010ffffd",
    "4096 emoji": "😀" * 4096,
    "NUL character": "before\x00after",
    "lone surrogate escape": "before\ud800after",
}
# No database stores NUL or a lone surrogate: the bot keeps the request with U+FFFD there.
STORED_AS = {
    "NUL character": "before\ufffdafter",
    "lone surrogate escape": "before\ufffdafter",
}


async def abandon_unfinished(db: Db) -> None:
    """Stop the retries of an update a test showed failing, so the next test starts clean."""
    await db.fetch(
        "UPDATE inbox_update SET status = 'failed', claim_token = NULL "
        "WHERE status IN ('new', 'processing')"
    )


async def processed(db: Db, update_id: int, timeout: float = 60) -> dict[str, Any]:
    """The update's inbox row once done or failed, or once it failed twice the same way."""
    deadline = time.monotonic() + timeout
    while True:
        rows = await db.fetch(
            "SELECT status, attempts, error FROM inbox_update WHERE update_id = {}", update_id
        )
        row = rows[0] if rows else None
        if row is not None and (
            row["status"] in ("done", "failed") or (row["error"] and row["attempts"] >= 2)
        ):
            return row
        if time.monotonic() > deadline:
            raise AssertionError(f"update {update_id} not processed after {timeout}s: {row}")
        await asyncio.sleep(0.05)


def raw_utf8(update: dict[str, Any]) -> bytes:
    """As Telegram sends it: raw UTF-8, or escapes when a lone surrogate leaves no choice."""
    try:
        return json.dumps(update, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return json.dumps(update).encode()


@pytest.mark.parametrize("case", list(UNICODE_REQUESTS))
async def test_request_with_hostile_unicode_is_stored_confirmed_and_announced(
    bot: tuple[BotServer, Db, FakeTelegram],
    backend: str,
    case: str,
) -> None:
    server, db, tg = bot
    admin = await db.new_admin()
    client = user(next_id())
    text = UNICODE_REQUESTS[case]
    update = message(client, f"/request {text}")
    try:
        answer = await server.post(raw_utf8(update))
        assert (answer.status_code, answer.json()) == (200, {"ok": True})
        row = await processed(db, update["update_id"])
        assert (row["status"], row["error"]) == ("done", None)
    finally:
        await abandon_unfinished(db)
    await db.settle()
    stored = await db.fetch("SELECT id, text FROM client_request")
    expected = STORED_AS.get(case, text)
    assert [r["text"] for r in stored] == [expected]
    request_id = stored[0]["id"]
    assert tg.sent_texts(client["id"]) == [
        f"Your request #{request_id} has been received and is pending review. "
        "You will get a message here as soon as an administrator decides."
    ]
    (card,) = tg.sent_texts(admin["id"])
    # A longest text is shortened to fit 4096 UTF-16 units: 4096 emoji to about 1900.
    assert html.escape(expected[:1800]) in card
    assert visible_length(card) <= 4096


async def test_request_over_4096_emoji_is_refused_as_too_long(
    bot: tuple[BotServer, Db, FakeTelegram],
) -> None:
    server, db, tg = bot
    client = user(next_id())
    answer = await server.post(raw_utf8(message(client, "/request " + "😀" * 4097)))
    assert answer.status_code == 200
    await db.settle()
    assert tg.sent_texts(client["id"]) == [
        "Your message is too long: at most 4096 characters, please."
    ]
    assert await db.value("SELECT count(*) FROM client_request") == 0
    assert await db.value("SELECT status FROM inbox_update") == "done"


def visible_length(html_text: str) -> int:
    """What Telegram counts once the HTML is parsed: UTF-16 units (an emoji past U+FFFF is
    2), by the stand-in's own parser, not the bot's."""
    return utf16_length(parse_html(html_text))


async def test_administrator_card_of_a_longest_request_fits_a_telegram_message(
    bot: tuple[BotServer, Db, FakeTelegram],
) -> None:
    server, db, tg = bot
    admin = await db.new_admin()
    client = user(next_id())
    assert (await server.post(message(client, "/request " + "x" * 4096))).status_code == 200
    await db.settle()
    (card,) = tg.sent_texts(admin["id"])
    assert visible_length(card) <= 4096
