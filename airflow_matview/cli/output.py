"""What the command prints: tables on stdout, one-line failures on stderr with every secret masked."""

from __future__ import annotations

import contextlib
import sys

from airflow_matview.text import cell

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE, EXIT_CONNECT = 0, 1, 2, 3
EXIT_INTERRUPTED, EXIT_BROKEN_PIPE, EXIT_INTERNAL = 130, 141, 70


def fail(message: str, secrets: list[str]) -> None:
    """Print ``message`` on stderr, with each of ``secrets`` masked."""
    for secret in secrets:
        message = message.replace(secret, "***")
    with contextlib.suppress(BrokenPipeError):
        print(message, file=sys.stderr)


def print_table(header: list[str], rows: list[list[str]]) -> None:
    """Columns padded to their widest cell."""
    widths = [max(len(str(item)) for item in column) for column in zip(header, *rows, strict=False)]
    for row in [header, *rows]:
        print("  ".join(str(item).ljust(width) for width, item in zip(widths, row, strict=False)).rstrip())


__all__ = ["cell", "fail", "print_table"]
