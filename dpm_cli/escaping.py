"""User values inside one-line messages: control characters escaped, long values cut.

A recipe key, an override or a file name can hold a newline or an ANSI escape sequence; echoed raw,
it would split the error line or recolour (or hide) what the terminal shows. Every message that
echoes user text goes through `printable`, and `dpm_cli.cli.app.main` passes the final line
through it once more, so no error line can carry a raw control character.
"""
from __future__ import annotations

from typing import Any


def printable(value: Any, limit: int = 200) -> str:
    """`value` as text with every non-printable character escaped as repr() would, cut to `limit`."""
    text = value if isinstance(value, str) else str(value)
    if not text.isprintable():
        text = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)
    return text if len(text) <= limit else text[: max(0, limit - 3)] + "..."


def quoted(value: Any, limit: int = 60) -> str:
    """'value' in quotes, escaped and cut like `printable`: for names and strings inside a sentence."""
    return "'" + printable(value, limit - 2) + "'"
