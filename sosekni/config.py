"""Settings from the environment or a `.env` file, validated once at start."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from urllib.parse import ParseResult, unquote, urlparse

_SECRET_RE = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
_TOKEN_RE = re.compile(r"^\d{1,20}:[A-Za-z0-9_-]{1,100}$")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LANGUAGES = ("en", "ru")
DEFAULT_DATABASE_URL = "sqlite:///sosekni.db"


class ConfigError(Exception):
    """A missing or malformed setting; the message names the variable and never its value."""


class Secret(str):
    """A string whose repr never shows the value (tokens, secrets, passwords)."""

    def __repr__(self) -> str:
        return "Secret('***')"


def read_dotenv(path: Path) -> dict[str, str]:
    """Parse a `.env` file with python-dotenv's parser (KEY=VALUE lines, optional `export`,
    quotes, # comments; no `${VAR}` expansion). A line it cannot read is refused by number,
    never echoed: it may hold a secret."""
    from dotenv.parser import parse_stream

    values: dict[str, str] = {}
    if not path.is_file():
        return values
    with path.open(encoding="utf-8") as stream:
        for binding in parse_stream(stream):
            if binding.error or (binding.key is not None and binding.value is None):
                text = binding.original.string  # may begin with the blank lines before it
                line = binding.original.line + text[: len(text) - len(text.lstrip())].count("\n")
                raise ConfigError(f"{path}: line {line} is not KEY=VALUE")
            if binding.key is not None:
                values[binding.key] = binding.value or ""
    return values


def environment(dotenv: Path | None = None) -> dict[str, str]:
    """The process environment over the `.env` file (real variables win)."""
    path = dotenv if dotenv is not None else Path(os.environ.get("SOSEKNI_ENV_FILE", ".env"))
    merged = read_dotenv(path)
    merged.update(os.environ)
    return merged


def _admin_ids(raw: str) -> tuple[int, ...]:
    ids = []
    for part in raw.split(","):
        part = part.strip()
        if not part:
            continue
        if not re.fullmatch(r"-?\d{1,20}", part):
            raise ConfigError(
                "ADMIN_TELEGRAM_ID must be Telegram user ids separated by commas, "
                f"e.g. 123456789,987654321 (got {part[:20]!r})"
            )
        ids.append(int(part))
    if not ids:
        raise ConfigError("ADMIN_TELEGRAM_ID is empty: give at least one administrator id")
    return tuple(dict.fromkeys(ids))


# The floors: Telegram redelivers an update for up to 24 hours and the stored inbox row is
# what recognises it as seen, so inbox rows stay at least two days; a finished outbox row
# is only bookkeeping.
INBOX_RETENTION_MIN_DAYS = 2.0
OUTBOX_RETENTION_MIN_DAYS = 1.0
_WHY = {
    "INBOX_RETENTION_DAYS": " (Telegram redelivers updates for up to 24 hours)",
    "OUTBOX_RETENTION_DAYS": "",
}


def _days(env_get: Callable[[str], str | None], name: str, default: float, least: float) -> float:
    """A retention period in days: a number, at least `least`, at most ten years."""
    raw = env_get(name)
    if raw is None:
        return default
    try:
        days = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of days, e.g. {default:g}") from None
    if not least <= days <= 3650:
        raise ConfigError(f"{name} must be at least {least:g} and at most 3650 days{_WHY[name]}")
    return days


def _group_id(name: str, raw: str | None) -> int | None:
    """ADMIN_CHAT_ID, COMMUNITY_CHAT_ID: a group's negative Telegram chat id (`-123…`, a
    supergroup's `-100…`); a user id here would send what belongs to a group to one person."""
    if raw is None:
        return None
    if not re.fullmatch(r"-\d{1,20}", raw):
        raise ConfigError(
            f"{name} must be the id of a group or supergroup (negative), e.g. -1001234567890"
        )
    return int(raw)


def _serve_host(raw: str | None) -> str:
    """SERVE_HOST: an address or host name to listen on (`[::1]` is read as `::1`)."""
    if raw is None:
        return "127.0.0.1"
    host = raw[1:-1] if raw.startswith("[") and raw.endswith("]") else raw
    if not host or re.search(r"[\s/?#@\[\]]", host):
        raise ConfigError("SERVE_HOST must be an address or host name, e.g. 127.0.0.1 or ::1")
    return host


def _serve_port(raw: str | None) -> int:
    if raw is None:
        return 8080
    if not re.fullmatch(r"\d{1,5}", raw) or not 1 <= int(raw) <= 65535:
        raise ConfigError("SERVE_PORT must be a port number 1-65535, e.g. 8080")
    return int(raw)


def _database_url(raw: str) -> str:
    parsed = urlparse(raw)
    if parsed.scheme in ("postgres", "postgresql"):
        _check_postgres_authority(raw, parsed)
    if parsed.scheme in ("postgres", "postgresql") and parsed.hostname is not None:
        return raw
    if parsed.scheme in ("postgres", "postgresql") and parsed.path not in ("", "/"):
        return raw  # unix-socket form: postgresql:///dbname
    if parsed.scheme == "sqlite" and raw.startswith("sqlite:///") and len(raw) > len("sqlite:///"):
        return raw
    raise ConfigError(
        "DATABASE_URL must be postgresql://user:password@host:port/dbname "
        "or sqlite:///path/to/file.db"
    )


def _check_postgres_authority(raw: str, parsed: ParseResult) -> None:
    """Refuse a URL whose user or password holds an unescaped `/`, `#` or `?`.

    Such a character ends the host part early: the rest of the password and the real host
    are then read as the path, the query or the fragment, the server named is the user's
    name, and error lines print pieces of the password. The `@` that should close the
    credentials then turns up after the host part. The message shows no part of the URL.
    """
    after_authority = raw.split("//", 1)[1][len(parsed.netloc) :] if "//" in raw else ""
    if "@" not in parsed.netloc and "@" in after_authority:
        raise ConfigError(
            "DATABASE_URL: percent-encode the user and password (/ as %2F, # as %23, ? as %3F, "
            "@ as %40): as written, part of the password is read as the host or database"
        )
    try:
        parsed.port  # noqa: B018 - raises ValueError when the port is not a number
    except ValueError:
        raise ConfigError(
            "DATABASE_URL has a port that is not a number 1-65535; if the password holds "
            "/ # ? or @, percent-encode it (%2F %23 %3F %40)"
        ) from None


@dataclass(frozen=True)
class Settings:
    """Every setting of SPEC's configuration table."""

    telegram_bot_token: Secret | None = field(default=None, repr=False)
    admin_telegram_ids: tuple[int, ...] = ()
    database_url: str = field(default=DEFAULT_DATABASE_URL, repr=False)  # shown masked
    webhook_url: str | None = None
    webhook_secret: Secret | None = field(default=None, repr=False)
    telegram_api_base_url: str = "https://api.telegram.org"
    log_level: str = "INFO"
    default_language: str = "en"
    pending_reminder_hours: float = 24.0
    pending_expiry_days: float = 0.0  # 0: pending requests never expire
    log_format: str = "text"
    backup_dir: Path = Path("./backups")
    deploy_root: Path = Path("/opt/sosekni")
    repo_url: str | None = None
    restart_command: str = "systemctl restart sosekni"
    inbox_retention_days: float = 7.0
    outbox_retention_days: float = 30.0
    community_chat_id: int | None = None
    invite_ttl_hours: float = 72.0
    admin_chat_id: int | None = None
    serve_host: str = "127.0.0.1"
    serve_port: int = 8080

    def __repr__(self) -> str:
        shown = [f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if f.repr]
        password = urlparse(self.database_url).password
        url = self.database_url.replace(f":{password}@", ":***@") if password else self.database_url
        return f"Settings(database_url={url!r}, {', '.join(shown)})"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite:")

    @property
    def secrets(self) -> tuple[str, ...]:
        """Values that must never reach a log line or an error message."""
        found = [self.telegram_bot_token, self.webhook_secret]
        password = urlparse(self.database_url).password
        if password:
            found += [password, unquote(password)]  # as written and as the server gets it
        return tuple(s for s in found if s)

    def require_token(self) -> Secret:
        if not self.telegram_bot_token:
            raise ConfigError("TELEGRAM_BOT_TOKEN is not set: get one from @BotFather")
        return self.telegram_bot_token

    def require_webhook_secret(self) -> Secret:
        if not self.webhook_secret:
            raise ConfigError(
                "WEBHOOK_SECRET is not set: choose 1-256 characters of A-Z a-z 0-9 _ -"
            )
        return self.webhook_secret


def load_settings(
    env: dict[str, str] | None = None,
    *,
    need_token: bool = False,
    need_admins: bool = True,
    need_webhook_secret: bool = False,
) -> Settings:
    """Read and validate the settings; raise ConfigError naming the first bad variable."""
    env = environment() if env is None else env

    def get(name: str) -> str | None:
        value = env.get(name)
        return value.strip() if value is not None and value.strip() != "" else None

    token = get("TELEGRAM_BOT_TOKEN")
    if token is not None and not _TOKEN_RE.fullmatch(token):
        raise ConfigError(
            "TELEGRAM_BOT_TOKEN is malformed: expected <digits>:<letters> from @BotFather"
        )

    admins_raw = get("ADMIN_TELEGRAM_ID")
    if admins_raw is None:
        if need_admins:
            raise ConfigError("ADMIN_TELEGRAM_ID is not set: give the administrators' Telegram ids")
        admins: tuple[int, ...] = ()
    else:
        admins = _admin_ids(admins_raw)

    secret = get("WEBHOOK_SECRET")
    if secret is not None and not _SECRET_RE.fullmatch(secret):
        raise ConfigError("WEBHOOK_SECRET must be 1-256 characters of A-Z a-z 0-9 _ -")

    webhook_url = get("WEBHOOK_URL")
    if webhook_url is not None:
        parsed = urlparse(webhook_url)
        if parsed.scheme not in ("https", "http") or not parsed.hostname:
            raise ConfigError(
                "WEBHOOK_URL must be a full URL like https://bot.example.org/webhook/telegram"
            )

    api_base = get("TELEGRAM_API_BASE_URL") or "https://api.telegram.org"
    parsed_api = urlparse(api_base)
    if parsed_api.scheme not in ("http", "https") or not parsed_api.hostname:
        raise ConfigError(
            "TELEGRAM_API_BASE_URL must be an http(s) URL like https://api.telegram.org"
        )

    log_level = (get("LOG_LEVEL") or "INFO").upper()
    if log_level not in LOG_LEVELS:
        raise ConfigError(f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}")

    language = (get("DEFAULT_LANGUAGE") or "en").lower()
    if language not in LANGUAGES:
        raise ConfigError(f"DEFAULT_LANGUAGE must be one of {', '.join(LANGUAGES)}")

    reminder_raw = get("PENDING_REMINDER_HOURS") or "24"
    try:
        reminder = float(reminder_raw)
    except ValueError:
        raise ConfigError("PENDING_REMINDER_HOURS must be a number of hours, e.g. 24") from None
    if not 0 < reminder <= 24 * 365:
        raise ConfigError("PENDING_REMINDER_HOURS must be greater than 0 and at most 8760")

    expiry_raw = get("PENDING_EXPIRY_DAYS") or "0"
    try:
        expiry = float(expiry_raw)
    except ValueError:
        raise ConfigError("PENDING_EXPIRY_DAYS must be a number of days, e.g. 14") from None
    if not 0 <= expiry <= 3650:
        raise ConfigError("PENDING_EXPIRY_DAYS must be 0 (never) or at most 3650 days")

    log_format = (get("LOG_FORMAT") or "text").lower()
    if log_format not in ("text", "json"):
        raise ConfigError("LOG_FORMAT must be text or json")

    inbox_days = _days(get, "INBOX_RETENTION_DAYS", 7.0, INBOX_RETENTION_MIN_DAYS)
    outbox_days = _days(get, "OUTBOX_RETENTION_DAYS", 30.0, OUTBOX_RETENTION_MIN_DAYS)

    community = _group_id("COMMUNITY_CHAT_ID", get("COMMUNITY_CHAT_ID"))
    ttl_raw = get("INVITE_TTL_HOURS") or "72"
    try:
        ttl = float(ttl_raw)
    except ValueError:
        raise ConfigError("INVITE_TTL_HOURS must be a number of hours, e.g. 72") from None
    if not 0 < ttl <= 24 * 366:
        raise ConfigError("INVITE_TTL_HOURS must be greater than 0 and at most 8784")

    settings = Settings(
        admin_chat_id=_group_id("ADMIN_CHAT_ID", get("ADMIN_CHAT_ID")),
        telegram_bot_token=Secret(token) if token else None,
        admin_telegram_ids=admins,
        database_url=_database_url(get("DATABASE_URL") or DEFAULT_DATABASE_URL),
        webhook_url=webhook_url,
        webhook_secret=Secret(secret) if secret else None,
        telegram_api_base_url=api_base.rstrip("/"),
        log_level=log_level,
        default_language=language,
        pending_reminder_hours=reminder,
        pending_expiry_days=expiry,
        log_format=log_format,
        backup_dir=Path(get("BACKUP_DIR") or "./backups"),
        deploy_root=Path(get("DEPLOY_ROOT") or "/opt/sosekni"),
        repo_url=get("REPO_URL"),
        restart_command=get("RESTART_COMMAND") or "systemctl restart sosekni",
        inbox_retention_days=inbox_days,
        outbox_retention_days=outbox_days,
        community_chat_id=community,
        invite_ttl_hours=ttl,
        serve_host=_serve_host(get("SERVE_HOST")),
        serve_port=_serve_port(get("SERVE_PORT")),
    )
    if need_token:
        settings.require_token()
    if need_webhook_secret:
        settings.require_webhook_secret()
    return settings
