"""Stop on the first SIGINT, SIGTERM or SIGHUP, and let no later signal cut the clean-up short.

A long-running dev tool (``make airflow``) gets its signals in bursts: Ctrl-C twice, or SIGTERM to make's process
group and then to the tool itself. Only the first one may interrupt the program; the ones that follow are queued
while a process is being started (so none is started without being recorded) and ignored while stopping.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator
    from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class ShutdownRequested(KeyboardInterrupt):
    """The first stop signal arrived."""


class ShutdownGuard:
    """Installs the handlers; raises :class:`ShutdownRequested` once, at a point where that is safe."""

    def __init__(self) -> None:
        self.received: signal.Signals | None = None
        self.stopping = False
        self._deferred = 0
        self._previous = {signum: signal.signal(signum, self._handle) for signum in SIGNALS}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None:
            with contextlib.suppress(OSError):  # stderr may be gone with the terminal
                print(f"{signal.Signals(signum).name}: already stopping, please wait.", file=sys.stderr, flush=True)
            return
        self.received = signal.Signals(signum)
        if not self._deferred and not self.stopping:
            raise ShutdownRequested(self.received.name)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Hold a stop signal back until the block ends (e.g. starting a process and recording its pid)."""
        self._deferred += 1
        try:
            yield
        finally:
            self._deferred -= 1
        if not self._deferred and self.received is not None and not self.stopping:
            raise ShutdownRequested(self.received.name)

    def stop(self) -> None:
        """From now on every signal is ignored (after a note), whatever arrives: the clean-up runs to its end."""
        self.stopping = True
        if self.received is None:
            self.received = signal.SIGTERM  # only to mark "stopping" for the handler

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
