"""The sandbox's page in a real headless Chromium: the whole workflow by clicking.

`sosekni-ops sandbox` runs as a real process (the bot, the stand-in and the page on one
port) and Debian's chromium, driven through selenium and Debian's chromedriver, does what
a person would: a client sends `/request`, an administrator approves with the button (or
rejects by replying), and every pane shows what Telegram would. Only a browser proves the
page: its script, the live events and the safe rendering run nowhere else.

Each step leaves a screenshot in the test's temporary directory; on a failure they are
copied next to it and the failure message names them. `SOSEKNI_SCREENSHOT=docs/sandbox.png`
also writes the README's picture (the administrator's card after the approval, the
client's chat beside it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import (
    NoAlertPresentException,
    StaleElementReferenceException,
    WebDriverException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.harness import free_port, ops_command

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WAIT_S = 30  # the longest any one step may take: the bot answers in well under a second
CLIENT, FIRST_ADMIN, SECOND_ADMIN = 1001, 101, 102

pytestmark = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason="needs Debian's chromium and chromium-driver (/usr/bin/chromium, "
    "/usr/bin/chromedriver): apt-get install chromium chromium-driver (.ci/run does)",
)


# ---- the sandbox process -------------------------------------------------------------------
class Sandbox:
    """`sosekni-ops sandbox` on a free port with its own data directory."""

    def __init__(self, where: Path) -> None:
        self.port = free_port()
        self.data_dir = where / "data"
        self.log_path = where / "sandbox.log"
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("TELEGRAM_", "WEBHOOK_", "ADMIN_", "DATABASE_", "SERVE_"))
        }
        # No .env of the developer's checkout: the sandbox makes its own settings.
        env["SOSEKNI_ENV_FILE"] = "/nonexistent/.env"
        argv = [*ops_command(), "sandbox", "--port", str(self.port)]
        argv += ["--data-dir", str(self.data_dir)]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                argv, env=env, cwd=where, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def ready(self) -> bool:
        """The sandbox has said where to open the page: its bot answered /health."""
        if self.process.poll() is not None:
            raise AssertionError(f"the sandbox exited with {self.process.returncode}")
        return f"open {self.url}" in self.log() and self.state() is not None

    def bot_log(self) -> str:
        path = self.data_dir / "bot.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def state(self) -> dict[str, Any] | None:
        """The page's state as the server tells it, or None while it does not answer."""
        if self.process.poll() is not None:
            raise AssertionError(f"the sandbox exited with {self.process.returncode}")
        try:
            with urllib.request.urlopen(f"{self.url}/sandbox/state", timeout=2) as answer:
                return json.loads(answer.read())
        except (OSError, urllib.error.URLError, ValueError):
            return None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    server = Sandbox(tmp_path)
    try:
        yield server
    finally:
        server.stop()


# ---- the browser ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    """One headless Chromium for the file; Debian's binaries, nothing downloaded."""
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--window-size=1280,860",
        "--disable-dev-shm-usage",
        "--lang=en-US",
        "--force-device-scale-factor=1",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()


class Page:
    """The sandbox page as a person uses it, with a screenshot of every step."""

    def __init__(self, driver: WebDriver, sandbox: Sandbox, shots: Path) -> None:
        self.driver = driver
        self.sandbox = sandbox
        self.shots = shots
        self.taken: list[Path] = []
        self.console: list[dict[str, Any]] = []

    # waiting on the page's state, never on the clock
    def until(self, what: str, condition: Callable[[WebDriver], Any]) -> Any:
        wait = WebDriverWait(
            self.driver, WAIT_S, ignored_exceptions=(StaleElementReferenceException,)
        )
        return wait.until(condition, message=f"waited {WAIT_S}s for {what}")

    def css(self, selector: str) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, selector)

    def one(self, selector: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, selector)

    def shot(self, name: str) -> Path:
        path = self.shots / f"{len(self.taken) + 1:02d}-{name}.png"
        self.driver.save_screenshot(str(path))
        self.taken.append(path)
        return path

    def open(self) -> None:
        # The bot starts in the sandbox's own time (up to a minute, it says): not a step's.
        WebDriverWait(self.driver, 90).until(
            lambda _: self.sandbox.ready(), message="waited 90s for the sandbox to start"
        )
        self.driver.get(self.sandbox.url)
        self.until("the page's state", lambda d: d.find_element(By.TAG_NAME, "body")
                   .get_attribute("data-ready") == "true")  # fmt: skip
        self.until("the live connection", lambda _: self.one("#live").get_attribute(
            "data-state") == "live")  # fmt: skip

    def click(self, what: str, find: Callable[[], WebElement]) -> None:
        """Click what `find` finds, found again if the page redrew it meanwhile."""

        def clicked(_: WebDriver) -> bool:
            find().click()
            return True

        self.until(what, clicked)

    def select(self, person_id: int) -> None:
        self.click(
            f"the entry of {person_id}", lambda: self.one(f'button[data-person-id="{person_id}"]')
        )
        self.until(
            f"the chat of {person_id}",
            lambda _: self.one("#chat").get_attribute("data-person-id") == str(person_id),
        )

    def send(self, text: str) -> None:
        """Type into the composer and press Enter, as a person does."""
        box = self.one(".composer textarea")
        box.send_keys(text)
        box.send_keys(Keys.ENTER)
        self.until(f"our message {text!r}", lambda _: self.message(text, from_bot=False))

    def messages(self, from_bot: bool | None = None) -> list[WebElement]:
        found = self.css("#messages .message")
        if from_bot is None:
            return found
        flag = "true" if from_bot else "false"
        return [m for m in found if m.get_attribute("data-from-bot") == flag]

    def text_of(self, message: WebElement) -> str:
        return message.find_element(By.CSS_SELECTOR, ".text").text

    def message(self, *parts: str, from_bot: bool = True) -> WebElement | None:
        """The last message of the shown chat whose text holds every part."""
        for message in reversed(self.messages(from_bot)):
            if all(part in self.text_of(message) for part in parts):
                return message
        return None

    def wait_message(self, *parts: str) -> WebElement:
        return self.until(f"a bot message with {parts}", lambda _: self.message(*parts))

    def card_of(self, message_id: str) -> WebElement:
        return self.one(f'#messages .message[data-message-id="{message_id}"]')

    def wait_card_decided(self, message_id: str, what: str, text: str) -> None:
        """Wait until the card holds `text` and has no buttons left to press."""

        def decided(_: WebDriver) -> bool:
            card = self.card_of(message_id)
            return text in self.text_of(card) and not card.find_elements(
                By.CSS_SELECTOR, "[data-callback]"
            )

        self.until(what, decided)

    def errors(self) -> list[str]:
        """The page's console errors so far (each read drains chromium's buffer)."""
        self.console += self.driver.get_log("browser")
        return [e["message"] for e in self.console if e.get("level") == "SEVERE"]


@contextmanager
def evidence(page: Page, sandbox: Sandbox, tmp_path: Path) -> Iterator[None]:
    """On a failure: one more screenshot, all of them copied next to the test's temporary
    directory (which pytest rotates away), and a message naming them with the server's log."""
    try:
        yield
    except Exception as exc:
        try:
            page.shot("failure")
        except WebDriverException:
            pass
        kept = tmp_path.parent / f"{tmp_path.name}-screenshots"
        kept.mkdir(exist_ok=True)
        copies = [Path(shutil.copy2(path, kept)) for path in page.taken]
        try:
            console = "\n".join(page.errors()) or "(none)"
        except WebDriverException:
            console = "(unreadable)"
        names = "\n".join(f"  {path}" for path in copies) or "  (none taken)"
        raise AssertionError(
            f"{exc}\nscreenshots:\n{names}\nconsole errors:\n{console}\n"
            f"sandbox log ({sandbox.log_path}), the end:\n{sandbox.log()[-2000:]}\n"
            f"bot log, the end:\n{sandbox.bot_log()[-3000:]}"
        ) from exc


def readme_picture(page: Page) -> None:
    """Write the README's screenshot when SOSEKNI_SCREENSHOT names where."""
    target = os.environ.get("SOSEKNI_SCREENSHOT")
    if target:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        page.driver.save_screenshot(target)


def fresh_page(browser: WebDriver, sandbox: Sandbox, tmp_path: Path) -> Page:
    shots = tmp_path / "screenshots"
    shots.mkdir()
    browser.get("about:blank")
    browser.get_log("browser")  # the previous test's console lines stay with it
    return Page(browser, sandbox, shots)


@pytest.fixture
def page(browser: WebDriver, sandbox: Sandbox, tmp_path: Path) -> Page:
    return fresh_page(browser, sandbox, tmp_path)


# ---- the workflow --------------------------------------------------------------------------
def test_a_client_requests_and_an_administrator_approves_with_the_button(
    page: Page, sandbox: Sandbox, tmp_path: Path
) -> None:
    with evidence(page, sandbox, tmp_path):
        page.open()
        people = [b.get_attribute("data-person-id") for b in page.css("[data-person-id]")]
        assert people[:3] == [str(CLIENT), str(FIRST_ADMIN), str(SECOND_ADMIN)], people
        assert page.one("#chat").get_attribute("data-person-id") == str(CLIENT)
        page.shot("client-empty")

        page.send("/request I live at plot 12")
        page.wait_message("has been received and is pending review")
        page.shot("client-request-received")

        page.select(FIRST_ADMIN)
        card_id = page.wait_message("I live at plot 12").get_attribute("data-message-id")
        assert "Anna" in page.text_of(page.card_of(card_id))
        link = page.card_of(card_id).find_element(By.CSS_SELECTOR, ".text a")
        assert link.get_attribute("href") == f"tg://user?id={CLIENT}"
        assert link.get_attribute("rel") == "noopener noreferrer"
        page.shot("admin-card")

        page.click("Approve", lambda: page.card_of(card_id).find_element(
            By.CSS_SELECTOR, 'button[data-callback^="approve:"]'))  # fmt: skip
        page.wait_card_decided(
            card_id, "the card to show the approval, without buttons", "Approved"
        )
        assert page.card_of(card_id).get_attribute("data-edited") == "true"
        assert page.card_of(card_id).find_element(By.CSS_SELECTOR, ".edited").text == "edited"
        page.until("the callback's toast", lambda _: any(
            "approved" in t.text for t in page.css("#toasts .toast")))  # fmt: skip
        page.until("the client's welcome in the list", lambda _: "Welcome to SOSenki" in page.one(
            f'[data-person-id="{CLIENT}"] .person-preview').text)  # fmt: skip
        page.shot("admin-approved")

        Select(page.one("#beside-select")).select_by_value(str(CLIENT))
        page.until("the client's welcome beside", lambda _: any(
            "Welcome to SOSenki" in m.text for m in page.css("#side .message .text")))  # fmt: skip
        page.shot("client-beside")
        readme_picture(page)

        page.select(SECOND_ADMIN)
        other = page.wait_message("I live at plot 12", "Approved")
        assert not other.find_elements(By.CSS_SELECTOR, "[data-callback]")
        page.shot("second-admin-copy")

        page.select(CLIENT)
        page.wait_message("Welcome to SOSenki")
        page.shot("client-welcome")

        # What a person types is shown as typed: markup in it is text, never elements.
        typed = "<i>not italic</i> & <script>window.hacked = 1</script>"
        page.send(typed)
        mine = page.message(typed, from_bot=False)
        assert mine is not None
        assert not mine.find_elements(By.CSS_SELECTOR, ".text i, .text script")
        assert page.driver.execute_script("return window.hacked === undefined")
        assert page.errors() == []


def test_a_russian_client_is_rejected_by_a_reply_with_a_reason(
    page: Page, sandbox: Sandbox, tmp_path: Path
) -> None:
    with evidence(page, sandbox, tmp_path):
        page.open()
        name = page.one("#client-first-name")
        name.clear()
        name.send_keys("Ольга")
        username = page.one("#client-username")
        username.clear()
        username.send_keys("olga")
        page.one("#client-language option[value='ru']").click()
        page.one("#client-save").click()
        page.until("the client saved", lambda _: page.one("#client-status").text == "saved")
        page.until("the client's new name in the list", lambda _: "Ольга" in page.one(
            f'[data-person-id="{CLIENT}"] .person-name').text)  # fmt: skip
        assert page.one(f'[data-person-id="{CLIENT}"] .badge.lang').text.lower() == "ru"
        page.shot("client-in-russian")

        page.send("/request I live at plot 12")
        page.wait_message("получен и ожидает рассмотрения")
        page.shot("client-request-received")

        page.select(FIRST_ADMIN)
        card = page.wait_message("I live at plot 12", "Ольга")
        card_id = card.get_attribute("data-message-id")

        def reply() -> WebElement:
            return page.card_of(card_id).find_element(By.CSS_SELECTOR, ".reply-btn")

        page.click("Reply", reply)
        page.until("the reply bar", lambda _: page.one("#reply-bar").is_displayed())
        page.one(".composer textarea").send_keys(Keys.ESCAPE)  # a change of mind
        page.until("the reply cancelled", lambda _: not page.one("#reply-bar").is_displayed())
        page.click("Reply", reply)
        page.until("the reply bar", lambda _: page.one("#reply-bar").is_displayed())
        assert page.one("#reply-bar").get_attribute("data-reply-to") == card_id
        assert "I live at plot 12" in page.one("#reply-text").text
        page.shot("admin-replying")

        page.send("Reject: not a resident")
        mine = page.message("Reject: not a resident", from_bot=False)
        assert mine is not None
        assert "I live at plot 12" in mine.find_element(By.CSS_SELECTOR, ".quote").text
        assert not page.one("#reply-bar").is_displayed()
        page.wait_card_decided(
            card_id, "the card to show the rejection and its reason", "not a resident"
        )
        page.shot("admin-rejected")

        page.select(CLIENT)
        page.wait_message("отклонён", "not a resident")
        page.shot("client-rejected")
        assert page.errors() == []


# ---- the bot's HTML against the page's whitelist ---------------------------------------------
# What a person types is escaped by the server, so the page's whitelist (web/app.js) only matters
# for the bot's own HTML. Each of these passes the stand-in's check, as Telegram's parser would
# let it pass (Telegram ignores attributes it does not use and drops links it cannot open), yet
# means harm to a page that copied it as it is. Each sets window.pwned where it would run.
HOSTILE_BOT_HTML = (
    '<a href="javascript:window.pwned=1">js link</a>',
    '<a href="data:text/html,&lt;script&gt;window.pwned=2&lt;/script&gt;">data link</a>',
    '<a href=" JaVaScRiPt:window.pwned=3">mixed case</a>',
    '<a href="java&#x09;script:window.pwned=4">tab inside</a>',
    '<a href="vbscript:window.pwned=5">vbscript</a>',
    '<a href="https://example.org/" onclick="window.pwned=6" style="color:red">http link</a>',
    '<a href="tg://user?id=1&quot; onclick=&quot;window.pwned=7">tg link</a>',
    '<b onclick="window.pwned=8" onmouseover="window.pwned=8" style="position:fixed">bold</b>',
    '<pre><code class="language-x" onmouseover="window.pwned=9">code</code></pre>',
    '<code class="language-x&quot; onmouseover=&quot;window.pwned=10">quoted class</code>',
    '<span class="tg-spoiler" onclick="window.pwned=11">spoiler</span>',
    '<tg-emoji emoji-id="5368324170671202286" onmouseover="window.pwned=12">emoji</tg-emoji>',
    '<blockquote expandable onmouseenter="window.pwned=13">quote</blockquote>',
    "<i>&lt;img src=x onerror=window.pwned=14&gt;</i>",
    "<b>&lt;script&gt;window.pwned=15&lt;/script&gt;</b>",
)
HOSTILE_BUTTONS = {
    "inline_keyboard": [
        [
            {"text": "js button", "url": "javascript:window.pwned=16"},
            {"text": "data button", "url": "data:text/html,<script>window.pwned=17</script>"},
        ]
    ]
}


class InProcessSandbox:
    """The stand-in with its sandbox page in this process, no bot: the test is the bot, and
    sends with the run's token what the bot could send."""

    def __init__(self) -> None:
        from sosekni.standin import TelegramStandIn
        from sosekni.standin.sandbox import Sandbox as People

        self.standin = TelegramStandIn(port=free_port(), username="SOSenkiSandboxBot")
        self.people = People(self.standin, 2)
        self.standin.start()
        self.log_path = Path("/dev/null")

    @property
    def url(self) -> str:
        return self.standin.base_url

    def ready(self) -> bool:
        return True

    def log(self) -> str:
        return ""

    def bot_log(self) -> str:
        return ""

    def bot_call(self, method: str, **params: Any) -> dict[str, Any]:
        """A Bot API call as the bot makes it: JSON, with the run's token."""
        request = urllib.request.Request(
            f"{self.standin.base_url}/bot{self.standin.token}/{method}",
            data=json.dumps(params).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return json.loads(answer.read())
        except urllib.error.HTTPError as error:
            return json.loads(error.read())


def test_the_page_renders_the_bots_hostile_html_inertly(browser: WebDriver, tmp_path: Path) -> None:
    server = InProcessSandbox()
    page = fresh_page(browser, server, tmp_path)  # type: ignore[arg-type]
    try:
        with evidence(page, server, tmp_path):  # type: ignore[arg-type]
            for text in HOSTILE_BOT_HTML:
                sent = server.bot_call("sendMessage", chat_id=CLIENT, text=text, parse_mode="HTML")
                assert sent["ok"], (text, sent)  # Telegram would take it: so must the page
            sent = server.bot_call(
                "sendMessage", chat_id=CLIENT, text="buttons", reply_markup=HOSTILE_BUTTONS
            )
            assert sent["ok"], sent
            page.open()
            page.select(CLIENT)
            expected = len(HOSTILE_BOT_HTML) + 1
            page.until(f"{expected} bot messages", lambda _: len(page.messages(True)) == expected)
            page.wait_message("http link")
            page.shot("hostile-html")

            # Every element the bot's messages became: hovered and clicked where harmless (a
            # link would open a tab), then searched for anything that could run.
            texts = page.css("#messages .message .text *")
            assert texts, "the bot's messages rendered no elements at all"
            actions = ActionChains(page.driver)
            for element in texts:
                actions.move_to_element(element)
            actions.perform()
            for element in texts:
                if element.tag_name.lower() != "a":
                    element.click()
            found = page.driver.execute_script(
                """
                const inMessages = [...document.querySelectorAll("#messages *")];
                const handlers = inMessages.flatMap((e) =>
                  [...e.attributes].filter((a) => /^on/i.test(a.name))
                    .map((a) => e.tagName + " " + a.name));
                const styled = [...document.querySelectorAll("#messages .text [style]")]
                  .map((e) => e.outerHTML);
                const hrefs = [...document.querySelectorAll("#messages [href]")]
                  .map((e) => e.getAttribute("href"))
                  .filter((h) => !/^(https?:|tg:)/i.test(h));
                const scripts = document.querySelectorAll("#messages script, #messages iframe,"
                  + " #messages img, #messages object, #messages embed").length;
                return {handlers, styled, hrefs, scripts, pwned: window.pwned ?? null};
                """
            )
            assert found == {
                "handlers": [],
                "styled": [],
                "hrefs": [],
                "scripts": 0,
                "pwned": None,
            }, found
            with pytest.raises(NoAlertPresentException):
                page.driver.switch_to.alert.text  # noqa: B018
            # The texts stay, as text: nothing of the message is lost, only what could run.
            shown = " ".join(page.text_of(m) for m in page.messages(True))
            for words in ("js link", "tab inside", "quoted class", "window.pwned=14"):
                assert words in shown, shown
            assert page.errors() == []
    finally:
        server.standin.stop()
