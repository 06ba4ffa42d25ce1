"""A plain callable notifier for tests (the config may name a callable instead of a BaseNotifier subclass)."""

from __future__ import annotations

from typing import Any


def record(context: dict[str, Any], label: str) -> None:
    """Note ``label`` in the context it is called with."""
    context.setdefault("recorded", []).append(label)


async def record_async(context: dict[str, Any], label: str) -> None:
    """The same, as a coroutine function."""
    context.setdefault("recorded", []).append(label)


def no_context() -> None:
    """A callable that cannot take the context it would be called with."""


def keyword_context(*, context: dict[str, Any]) -> None:
    """One that takes the context only by keyword, while notifiers are called with it positionally."""


def record_any(context: dict[str, Any], **kwargs: Any) -> None:
    """Note every keyword argument it is called with (any name is accepted)."""
    context.setdefault("recorded", []).append(kwargs)


def append_to_file(context: dict[str, Any], path: str) -> None:
    """Append the notification's facts (``context["matview"]``) to ``path`` as one JSON line: a sink the test reads
    from another process (the triggerer's)."""
    import json

    with open(path, "a", encoding="utf-8") as sink:
        sink.write(json.dumps(context.get("matview"), default=str) + "\n")
