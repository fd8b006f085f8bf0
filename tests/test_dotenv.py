"""`.env` files are read with python-dotenv's parser; a line it cannot read is refused by its
number, without its content (a `.env` holds the bot token and the webhook secret)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sosekni.config import ConfigError, read_dotenv

SECRETISH = "5550001234:" + "HIDDEN" * 5


@pytest.mark.parametrize(
    ("body", "line"),
    [
        (f"ADMIN_TELEGRAM_ID=12\n\n{SECRETISH}\n", 3),
        (f"A=1\n{SECRETISH.replace(':', '')}\n", 2),
        (f"\n\n   \nnot a setting {SECRETISH}\n", 4),
        (f'A=1\nB="{SECRETISH}\nC=2\n', 2),
    ],
    ids=["after-a-blank-line", "a-key-without-value", "after-blank-lines", "unterminated-quote"],
)
def test_an_unreadable_line_is_named_by_its_number_and_never_echoed(
    tmp_path: Path, body: str, line: int
) -> None:
    path = tmp_path / ".env"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(ConfigError) as refused:
        read_dotenv(path)
    assert str(refused.value) == f"{path}: line {line} is not KEY=VALUE"
    assert "HIDDEN" not in str(refused.value)


def test_values_are_taken_literally_without_expansion(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text('HOME_COPY=${HOME}\nWITH_EQUALS=a=b\nQUOTED="x \\"y\\""\n')
    assert read_dotenv(path) == {"HOME_COPY": "${HOME}", "WITH_EQUALS": "a=b", "QUOTED": 'x "y"'}
