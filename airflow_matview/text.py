"""Small pieces of wording shared by messages, listings and notifications: one line, a value shown short, a duration
in words."""

from __future__ import annotations


def one_line(text: object) -> str:
    """``text`` (or an error's message) on one line, its runs of white space folded to one space."""
    return " ".join(str(text).split())


def error_line(error: BaseException) -> str:
    """An error as ``Kind: the last line of its message``, for a log line about a peer that failed."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[-1] if lines else ''}"


def shown(value: object, width: int = 40) -> str:
    """``value`` as written (its ``repr``), cut short when it is long text: a message stays one readable line."""
    if isinstance(value, str) and len(value) > width:
        return f"{value[: width // 2]!r}... ({len(value)} characters)"
    return repr(value)


def cell(text: str, width: int) -> str:
    """``text`` on one line, cut to ``width`` characters with an ellipsis."""
    line = one_line(text)
    return line if len(line) <= width else line[: width - 1].rstrip() + "\u2026"


def yaml_single_quoted(text: str) -> str:
    """``text`` as a single-quoted YAML scalar (double quotes inside stay as they are)."""
    return "'" + text.replace("'", "''") + "'"


def format_seconds(seconds: float) -> str:
    """``75`` -> ``1m15s``; ``3725`` -> ``1h2m5s``; under a minute with one decimal below 10 s."""
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")]
    return "".join(f"{value}{unit}" for value, unit in parts if value) or "0s"
