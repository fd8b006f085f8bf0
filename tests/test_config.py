"""Settings: every bad or missing value stops `serve`/`poll` with one line naming the variable.

Reading settings is pure code, so the commands run in-process through Typer's `CliRunner`
(a real process pays ~1.5 s of imports for what takes milliseconds here), `.env` handling
too, and `load_settings` is called directly for the rest. One real `sosekni-ops` process
remains: the long error line as systemd sees it, which only a process without a terminal and
without COLUMNS can show.
"""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock
from urllib.parse import urlsplit, urlunsplit

import pytest
from typer.testing import CliRunner

from ops import common
from ops.backups import PgTarget
from ops.cli import app
from sosekni.config import ConfigError, Secret, load_settings, read_dotenv
from tests.harness import ROOT, SECRET, base_env, ops_command, ops_in_process

# Built, not written out: a token-shaped literal in git looks like a leaked secret.
TOKEN = ":".join(["5550001234", "SECRET" * 6])
API = "http://127.0.0.1:9"  # nothing listens: no run may get as far as calling Telegram


@dataclass(frozen=True)
class Case:
    """One broken setting: what to change in a valid environment and the variable to name."""

    name: str
    variable: str
    changes: dict[str, str | None]
    commands: tuple[str, ...] = ("serve", "poll")


SERVE = ("serve",)
CASES = [
    Case("missing-token", "TELEGRAM_BOT_TOKEN", {"TELEGRAM_BOT_TOKEN": None}),
    Case("malformed-token", "TELEGRAM_BOT_TOKEN", {"TELEGRAM_BOT_TOKEN": TOKEN + "!"}),
    Case("missing-admin", "ADMIN_TELEGRAM_ID", {"ADMIN_TELEGRAM_ID": None}, SERVE),
    Case("malformed-admin", "ADMIN_TELEGRAM_ID", {"ADMIN_TELEGRAM_ID": "12,abc"}),
    Case("secret-with-space", "WEBHOOK_SECRET", {"WEBHOOK_SECRET": "my webhook secret"}, SERVE),
    Case("secret-300-chars", "WEBHOOK_SECRET", {"WEBHOOK_SECRET": "s" * 300}, SERVE),
    Case("missing-secret", "WEBHOOK_SECRET", {"WEBHOOK_SECRET": None}, SERVE),
    Case("mysql-database", "DATABASE_URL", {"DATABASE_URL": "mysql://x"}),
    Case("bad-log-level", "LOG_LEVEL", {"LOG_LEVEL": "LOUD"}, SERVE),
    Case("bad-language", "DEFAULT_LANGUAGE", {"DEFAULT_LANGUAGE": "de"}, SERVE),
    Case("bad-reminder", "PENDING_REMINDER_HOURS", {"PENDING_REMINDER_HOURS": "soon"}, SERVE),
    Case("bad-log-format", "LOG_FORMAT", {"LOG_FORMAT": "xml"}, SERVE),
    Case("bad-expiry", "PENDING_EXPIRY_DAYS", {"PENDING_EXPIRY_DAYS": "-1"}, SERVE),
    Case("user-as-community", "COMMUNITY_CHAT_ID", {"COMMUNITY_CHAT_ID": "12345"}, SERVE),
    Case("bad-invite-ttl", "INVITE_TTL_HOURS", {"INVITE_TTL_HOURS": "0"}, SERVE),
    Case("bad-serve-port", "SERVE_PORT", {"SERVE_PORT": "80a"}, SERVE),
    Case("serve-port-too-big", "SERVE_PORT", {"SERVE_PORT": "70000"}, SERVE),
    Case("serve-port-0", "SERVE_PORT", {"SERVE_PORT": "0"}, SERVE),
    Case("serve-host-a-url", "SERVE_HOST", {"SERVE_HOST": "http://0.0.0.0/"}, SERVE),
]
RUNS = [(command, case) for case in CASES for command in case.commands]


@dataclass
class Run:
    returncode: int | None
    stdout: str
    stderr: str
    connections: list[object] = field(default_factory=list)  # addresses it tried to reach

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    @property
    def lines(self) -> list[str]:
        return [line for line in self.output.splitlines() if line.strip()]


def launch(
    args: tuple[str, ...], env: dict[str, str], cwd: Path = ROOT, timeout: float = 30
) -> Run:
    """Run the real `sosekni-ops ARGS` with exactly `env` (no COLUMNS unless given)."""
    process = subprocess.Popen(
        [*ops_command(), *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
    return Run(process.returncode, stdout, stderr)


def invoke(args: tuple[str, ...], env: dict[str, str], cwd: Path = ROOT) -> Run:
    """`sosekni-ops ARGS` in this process, with exactly `env`, in `cwd`.

    Variables of this process that `env` lacks are removed for the run. Every network
    connection the command tries is refused and recorded: a command that stops at its
    settings tries none, which is what "it does not wait for a network or a database" means.
    The logging the command configures is undone after, and the error line is never
    coloured (as from a process whose stderr is no terminal).
    """
    tried: list[object] = []

    def refuse(sock: socket.socket, address: object) -> None:
        tried.append(address)
        raise ConnectionRefusedError(f"refused by the test: {address}")

    with (
        contextlib.chdir(cwd),
        mock.patch.object(socket.socket, "connect", refuse),
        mock.patch.object(common.error_console, "_color_system", None),
    ):
        done = ops_in_process(args, env)
    return Run(done.returncode, done.stdout, done.stderr, tried)


def valid_env(**changes: str | None) -> dict[str, str]:
    """Every setting `serve` needs, valid, with `changes` applied (None removes a variable)."""
    env = base_env(
        "sqlite:////nonexistent-dir/never-opened.db", API, TELEGRAM_BOT_TOKEN=TOKEN, COLUMNS="200"
    )
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def without(env: dict[str, str], *names: str) -> dict[str, str]:
    return {k: v for k, v in env.items() if k not in names}


@pytest.fixture(scope="module")
def dotenv_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`.env` files for the runs that read one."""
    root = tmp_path_factory.mktemp("dotenv")
    (root / "named.env").write_text(
        "# settings for the test\n"
        "\n"
        f'export DATABASE_URL="sqlite:///{root / "from-named-file.db"}"\n'
        "LOG_LEVEL=WARNING  # quieter\n",
        encoding="utf-8",
    )
    cwd = root / "workdir"
    cwd.mkdir()
    (cwd / ".env").write_text("DATABASE_URL=sqlite:///from-cwd.db\n", encoding="utf-8")
    (root / "overridden.env").write_text(
        f"DATABASE_URL=sqlite:///{root / 'from-file.db'}\nLOG_LEVEL=LOUD\n", encoding="utf-8"
    )
    (root / "serve.env").write_text(
        f"TELEGRAM_BOT_TOKEN='{TOKEN}'\nADMIN_TELEGRAM_ID=12,34\n", encoding="utf-8"
    )
    (root / "broken.env").write_text(f"ADMIN_TELEGRAM_ID=12\n\n{TOKEN}\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def runs(dotenv_dir: Path) -> Iterator[dict[str, Run]]:
    """Every run of this module, in-process, by name."""
    jobs: dict[str, tuple[tuple[str, ...], dict[str, str], Path]] = {}
    for command, case in RUNS:
        jobs[f"{command}:{case.name}"] = ((command,), valid_env(**case.changes), ROOT)
    plain = without(valid_env(), "DATABASE_URL", "LOG_LEVEL", "SOSEKNI_ENV_FILE")
    jobs["named-file"] = (
        ("migrate",),
        {**plain, "SOSEKNI_ENV_FILE": str(dotenv_dir / "named.env")},
        ROOT,
    )
    jobs["cwd-file"] = (("migrate", "status"), plain, dotenv_dir / "workdir")
    jobs["environment-wins"] = (
        ("migrate", "status"),
        {
            **plain,
            "SOSEKNI_ENV_FILE": str(dotenv_dir / "overridden.env"),
            "DATABASE_URL": f"sqlite:///{dotenv_dir / 'from-environment.db'}",
            "LOG_LEVEL": "WARNING",
        },
        ROOT,
    )
    jobs["serve-from-file"] = (
        ("serve",),
        {
            **without(plain, "TELEGRAM_BOT_TOKEN", "ADMIN_TELEGRAM_ID", "WEBHOOK_SECRET"),
            "SOSEKNI_ENV_FILE": str(dotenv_dir / "serve.env"),
        },
        ROOT,
    )
    jobs["broken-file"] = (
        ("serve",),
        {**plain, "SOSEKNI_ENV_FILE": str(dotenv_dir / "broken.env")},
        ROOT,
    )
    yield {name: invoke(*job) for name, job in jobs.items()}


# ----------------------------------------------------------------------------- bad settings


@pytest.mark.parametrize(("command", "case"), RUNS, ids=[f"{c}-{k.name}" for c, k in RUNS])
def test_bad_setting_stops_quickly_with_one_line_naming_the_variable(
    runs: dict[str, Run], command: str, case: Case
) -> None:
    run = runs[f"{command}:{case.name}"]
    assert run.returncode not in (0, None), run.output
    assert run.connections == []  # it waited for no network and no database
    assert len(run.lines) == 1, run.output
    assert run.lines[0].startswith(f"error: {case.variable} ")
    assert "Traceback" not in run.output


@pytest.mark.parametrize(("command", "case"), RUNS, ids=[f"{c}-{k.name}" for c, k in RUNS])
def test_bad_setting_message_never_contains_the_token_or_the_secret(
    runs: dict[str, Run], command: str, case: Case
) -> None:
    output = runs[f"{command}:{case.name}"].output
    assert TOKEN.split(":")[1] not in output
    assert TOKEN.split(":")[0] not in output
    for value in case.changes.values():
        if value is not None and case.variable in ("TELEGRAM_BOT_TOKEN", "WEBHOOK_SECRET"):
            assert value not in output
    assert SECRET not in output


NEEDS = {
    "serve": {"need_token": True, "need_webhook_secret": True},
    "poll": {"need_token": True},
}


@pytest.mark.parametrize(("command", "case"), RUNS, ids=[f"{c}-{k.name}" for c, k in RUNS])
def test_load_settings_refuses_each_bad_setting_naming_the_variable(
    command: str, case: Case
) -> None:
    # The pure function under the commands, asked for what each command needs.
    with pytest.raises(ConfigError) as error:
        load_settings(valid_env(**case.changes), **NEEDS[command])
    message = str(error.value)
    assert message.startswith(f"{case.variable} ")
    assert len(message.splitlines()) == 1
    assert TOKEN.split(":")[1] not in message


def test_long_error_stays_one_line_when_stderr_is_not_a_terminal() -> None:
    # The real process, as under systemd or in a pipe: stderr is no terminal and COLUMNS is not
    # set. This is also the proof that the installed script stops on a bad setting with exit 1.
    run = launch(("serve",), without(valid_env(ADMIN_TELEGRAM_ID="12,abc"), "COLUMNS"))
    assert run.returncode == 1
    assert run.stdout == ""
    assert run.lines == [
        "error: ADMIN_TELEGRAM_ID must be Telegram user ids separated by commas, "
        "e.g. 123456789,987654321 (got 'abc')"
    ]


# ----------------------------------------------------------------------------- .env


def test_settings_come_from_the_file_named_by_SOSEKNI_ENV_FILE(
    runs: dict[str, Run], dotenv_dir: Path
) -> None:
    run = runs["named-file"]
    assert (run.returncode, run.stderr) == (0, ""), run.output
    assert run.stdout.startswith("applied ")
    assert (dotenv_dir / "from-named-file.db").is_file()


def test_settings_come_from_dotenv_in_the_working_directory(
    runs: dict[str, Run], dotenv_dir: Path
) -> None:
    run = runs["cwd-file"]
    assert (run.returncode, run.stderr) == (0, ""), run.output
    assert "migrations on sqlite:///from-cwd.db" in run.stdout
    assert (dotenv_dir / "workdir" / "from-cwd.db").is_file()


def test_environment_overrides_dotenv(runs: dict[str, Run], dotenv_dir: Path) -> None:
    run = runs["environment-wins"]
    # LOG_LEVEL=LOUD in the file would be refused: the environment's WARNING wins.
    assert (run.returncode, run.stderr) == (0, ""), run.output
    assert f"migrations on sqlite:///{dotenv_dir / 'from-environment.db'}" in run.stdout
    assert not (dotenv_dir / "from-file.db").exists()


def test_serve_takes_the_token_from_dotenv_and_never_prints_it(runs: dict[str, Run]) -> None:
    run = runs["serve-from-file"]
    # The token and the administrators were found (they are checked first): only the secret
    # is missing.
    assert run.returncode == 1
    assert run.lines == [
        "error: WEBHOOK_SECRET is not set: choose 1-256 characters of A-Z a-z 0-9 _ -"
    ]
    assert TOKEN.split(":")[1] not in run.output


def test_a_malformed_dotenv_line_is_named_by_number_without_its_content(
    runs: dict[str, Run], dotenv_dir: Path
) -> None:
    run = runs["broken-file"]
    assert run.returncode == 1
    assert run.lines == [f"error: {dotenv_dir / 'broken.env'}: line 3 is not KEY=VALUE"]
    assert TOKEN.split(":")[1] not in run.output


def test_read_dotenv_understands_export_quotes_and_comments(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text(
        "# a comment\n"
        "export A=1\n"
        'B="two words # not a comment"\n'
        "C='single'\n"
        "D=plain # a comment\n"
        "E=\n"
        "  F = spaced  \n",
        encoding="utf-8",
    )
    assert read_dotenv(path) == {
        "A": "1",
        "B": "two words # not a comment",
        "C": "single",
        "D": "plain",
        "E": "",
        "F": "spaced",
    }
    assert read_dotenv(tmp_path / "missing.env") == {}


# ----------------------------------------------------------------------------- repr


def full_env(**extra: str) -> dict[str, str]:
    return {
        "TELEGRAM_BOT_TOKEN": TOKEN,
        "WEBHOOK_SECRET": "hook-SECRET_value",
        "ADMIN_TELEGRAM_ID": "12, 34,12",
        "WEBHOOK_URL": "https://bot.example.org/webhook/telegram",
        **extra,
    }


def test_settings_repr_never_shows_the_token_or_the_webhook_secret() -> None:
    settings = load_settings(full_env(), need_token=True, need_webhook_secret=True)

    for shown in (repr(settings), str(settings), f"{settings!r}", repr(vars(settings))):
        assert TOKEN not in shown
        assert TOKEN.split(":")[1] not in shown
        assert "hook-SECRET_value" not in shown
    assert repr(settings.telegram_bot_token) == "Secret('***')"
    assert repr(settings.webhook_secret) == "Secret('***')"
    # The values themselves are intact for the code that needs them.
    assert settings.require_token() == TOKEN
    assert settings.require_webhook_secret() == "hook-SECRET_value"
    assert settings.admin_telegram_ids == (12, 34)


def test_secret_repr_hides_the_value_wherever_it_is_nested() -> None:
    secret = Secret(TOKEN)
    assert repr([secret]) == "[Secret('***')]"
    assert repr({"token": secret}) == "{'token': Secret('***')}"


def test_settings_repr_never_shows_the_database_password() -> None:
    url = "postgresql://bot:db-pass-SECRET@db.example.org:5432/sosekni"
    settings = load_settings(full_env(DATABASE_URL=url))
    assert "db-pass-SECRET" in settings.secrets
    assert "db-pass-SECRET" not in repr(settings)


@pytest.mark.parametrize(
    "changes",
    [
        {"TELEGRAM_BOT_TOKEN": TOKEN + " x"},
        {"WEBHOOK_SECRET": TOKEN + "!"},
    ],
    ids=["token", "secret"],
)
def test_config_errors_never_quote_a_token_like_value(changes: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings(full_env(**changes), need_token=True, need_webhook_secret=True)
    assert "SECRETSECRET" not in str(error.value)


# ----------------------------------------------------------------------------- DATABASE_URL
# A password holding an unescaped / # or ? ends the URL's host part early: the rest of the
# password and the real host are read as the database name, the query or the fragment.

PASSWORDS = {
    "slash": "Kq7x/Zw9y",
    "hash": "Kq7x#Zw9y",
    "question-mark": "Kq7x?Zw9y",
    "all-three": "Kq7x/Zw9y#Mv2z?Pt5w",
    "digits-then-slash": "1234/Zw9y",  # `bot:1234` alone even looks like host:port
}


def pieces(password: str) -> list[str]:
    return [piece for piece in re.split(r"[/#?]", password) if piece]


@pytest.mark.parametrize("password", PASSWORDS.values(), ids=PASSWORDS.keys())
def test_a_database_password_with_an_unescaped_slash_hash_or_question_mark_is_refused(
    password: str,
) -> None:
    url = f"postgresql://bot:{password}@db.example.org:5432/sosekni"

    with pytest.raises(ConfigError) as error:
        load_settings(full_env(DATABASE_URL=url))

    message = str(error.value)
    assert message.startswith("DATABASE_URL: percent-encode")
    assert len(message.splitlines()) == 1
    for piece in [*pieces(password), "db.example.org", "sosekni"]:
        assert piece not in message


def test_a_percent_encoded_database_password_is_accepted_and_decoded_for_the_tools() -> None:
    url = "postgresql://bot:Kq7x%2FZw9y%23Mv2z%3FPt5w@db.example.org:5432/sosekni"

    settings = load_settings(full_env(DATABASE_URL=url))

    assert settings.database_url == url
    assert PgTarget(url).env()["PGPASSWORD"] == "Kq7x/Zw9y#Mv2z?Pt5w"  # pg_dump, pg_restore
    assert PgTarget(url).env()["PGHOST"] == "db.example.org"
    assert {"Kq7x%2FZw9y%23Mv2z%3FPt5w", "Kq7x/Zw9y#Mv2z?Pt5w"} <= set(settings.secrets)
    assert "Kq7x" not in repr(settings)


@pytest.mark.parametrize(
    "command", [["migrate", "status"], ["backup", "create"], ["health"]], ids=" ".join
)
def test_commands_refuse_such_a_url_in_one_line_showing_no_part_of_the_password(
    command: list[str], tmp_path: Path
) -> None:
    password = PASSWORDS["all-three"]
    env = {
        "DATABASE_URL": f"postgresql://bot:{password}@127.0.0.1:5432/sosekni",
        "TELEGRAM_BOT_TOKEN": "123456:TEST-fake-token",
        "SOSEKNI_ENV_FILE": "/nonexistent/.env",
        "BACKUP_DIR": str(tmp_path / "backups"),
    }

    done = CliRunner().invoke(app, command, env=env)

    assert done.exit_code == 1
    assert isinstance(done.exception, SystemExit)
    assert done.stdout == ""
    assert done.stderr.startswith("error: DATABASE_URL: percent-encode")
    assert len(done.stderr.splitlines()) == 1
    for piece in pieces(password):
        assert piece not in done.output
    assert not (tmp_path / "backups").exists()


def test_a_percent_encoded_password_reaches_the_database(postgres_url: str) -> None:
    # The test server trusts every connection: this proves the URL still names the right
    # server and database once its password holds %2F %23 %3F.
    parts = urlsplit(postgres_url)
    login = f"{parts.username}:Kq7x%2FZw9y%23Mv2z%3FPt5w@{parts.hostname}:{parts.port or 5432}"
    url = urlunsplit(parts._replace(netloc=login))
    env = {"DATABASE_URL": url, "SOSEKNI_ENV_FILE": "/nonexistent/.env"}

    done = CliRunner().invoke(app, ["migrate"], env=env)

    assert done.exit_code == 0, done.output
    assert done.stdout.startswith("applied ")


def test_the_community_chat_is_optional_and_its_links_live_72_hours_by_default() -> None:
    plain = load_settings(valid_env())
    assert (plain.community_chat_id, plain.invite_ttl_hours) == (None, 72.0)
    set_up = load_settings(valid_env(COMMUNITY_CHAT_ID="-1001234567890", INVITE_TTL_HOURS="24"))
    assert (set_up.community_chat_id, set_up.invite_ttl_hours) == (-1001234567890, 24.0)


@pytest.mark.parametrize("value", ["123456789", "-12abc", "admins", "-"])
def test_admin_chat_id_must_be_a_group_id(value: str) -> None:
    with pytest.raises(ConfigError, match=r"^ADMIN_CHAT_ID must be the id of a group"):
        load_settings(full_env(ADMIN_CHAT_ID=value))


def test_admin_chat_id_is_optional_and_read_as_a_number() -> None:
    assert load_settings(full_env()).admin_chat_id is None
    assert load_settings(full_env(ADMIN_CHAT_ID=" -1001234567890 ")).admin_chat_id == (
        -1001234567890
    )


def test_serve_host_and_port_default_to_127_0_0_1_and_8080() -> None:
    plain = load_settings(valid_env())
    assert (plain.serve_host, plain.serve_port) == ("127.0.0.1", 8080)
    chosen = load_settings(valid_env(SERVE_HOST=" 0.0.0.0 ", SERVE_PORT="8443"))
    assert (chosen.serve_host, chosen.serve_port) == ("0.0.0.0", 8443)
    assert load_settings(valid_env(SERVE_HOST="[::1]")).serve_host == "::1"


def test_serve_takes_its_address_from_the_settings_and_the_options_win(tmp_path: Path) -> None:
    # Both ports are taken, so serve stops at its one-line check and the line names the port
    # it tried: SERVE_PORT without --port, the option's when given.
    with socket.socket() as first, socket.socket() as second:
        for taken in (first, second):
            taken.bind(("127.0.0.1", 0))
            taken.listen()
        setting, option = first.getsockname()[1], second.getsockname()[1]
        env = valid_env(DATABASE_URL=f"sqlite:///{tmp_path / 'serve.db'}", SERVE_PORT=str(setting))
        from_settings = invoke(("serve",), env)
        from_option = invoke(("serve", "--port", str(option)), env)
    assert from_settings.returncode == 1, from_settings.output
    assert f"error: cannot listen on 127.0.0.1:{setting}:" in from_settings.output
    assert from_option.returncode == 1, from_option.output
    assert f"error: cannot listen on 127.0.0.1:{option}:" in from_option.output
