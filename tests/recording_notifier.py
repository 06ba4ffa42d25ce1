"""A plain callable notifier for tests (the config may name a callable instead of a BaseNotifier subclass)."""

from __future__ import annotations

from typing import Any


def record(context: dict[str, Any], label: str) -> None:
    """Note ``label`` in the context it is called with."""
    context.setdefault("recorded", []).append(label)
