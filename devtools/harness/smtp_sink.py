"""A real SMTP server on loopback (aiosmtpd) that keeps every message it receives, for notifier tests."""

from __future__ import annotations

import email
import email.policy
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiosmtpd.controller import Controller

from devtools.harness.pgcluster import free_port

if TYPE_CHECKING:
    from collections.abc import Callable


@dataclass
class Mail:
    """One received message: envelope recipients, subject and plain text of its body."""

    received_at: float
    to: list[str]
    subject: str
    body: str


class _Handler:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        parts = [part for part in message.walk() if part.get_content_maintype() == "text"]
        body = "\n".join(str(part.get_content()) for part in parts)
        with self.sink.lock:
            self.sink.mails.append(Mail(time.time(), list(envelope.rcpt_tos), str(message["Subject"]), body))
        return "250 Message accepted for delivery"


class SmtpSink:
    """An SMTP server on ``127.0.0.1`` and a free port; :attr:`uri` is an Airflow ``smtp`` connection to it."""

    def __init__(self) -> None:
        self.port = free_port()
        self.mails: list[Mail] = []
        self.lock = threading.Lock()
        self.controller = Controller(_Handler(self), hostname="127.0.0.1", port=self.port)
        self.uri = (
            f"smtp://127.0.0.1:{self.port}/?disable_ssl=true&disable_tls=true&from_email=airflow%40example.com"
            "&timeout=10&retry_limit=1"
        )

    def __enter__(self) -> SmtpSink:
        self.controller.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.controller.stop()

    def matching(self, predicate: Callable[[Mail], bool]) -> list[Mail]:
        with self.lock:
            return [mail for mail in self.mails if predicate(mail)]

    def wait_for(self, predicate: Callable[[Mail], bool], count: int = 1, timeout: float = 120) -> list[Mail]:
        """The mails matching ``predicate`` once there are ``count`` of them.

        :raises TimeoutError: listing the subjects received so far.
        """
        deadline = time.monotonic() + timeout
        while len(found := self.matching(predicate)) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{len(found)} of {count} mails after {timeout:.0f}s; got {[m.subject for m in self.mails]}"
                )
            time.sleep(0.5)
        return found
