"""Every user-facing text, in English and Russian; `text(lang, key, **values)` picks one."""

from __future__ import annotations

from sosekni.texts import en, ru

CATALOGS: dict[str, dict[str, str]] = {"en": en.TEXTS, "ru": ru.TEXTS}


def pick_language(language_code: str | None, default: str) -> str:
    """The catalog for a Telegram `language_code` such as `ru`, `ru-RU` or `en-GB`."""
    if language_code:
        base = language_code.split("-", 1)[0].lower()
        if base in CATALOGS:
            return base
    return default if default in CATALOGS else "en"


def text(language: str, key: str, **values: object) -> str:
    """The text `key` in `language` (English when that catalog lacks it), filled in."""
    catalog = CATALOGS.get(language, en.TEXTS)
    template = catalog.get(key) or en.TEXTS[key]
    return template.format(**values) if values else template
