"""An Airflow API server on loopback that answers only its health endpoint, as it is told: what a task asks before
it defers a refresh to the triggerer (``airflow_matview.triggerer_health``)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class HealthServer(ThreadingHTTPServer):
    """An API server on loopback whose health endpoint (under ``prefix``) answers ``triggerer``, or stays silent, or
    is missing.

    :param prefix: the path the API server is served under.
    """

    daemon_threads = True

    def __init__(self, prefix: str = "") -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.prefix = prefix
        self.triggerer: dict[str, Any] | None = {"status": "healthy", "latest_triggerer_heartbeat": None}
        self.silent = False
        self.asked: list[str] = []
        self.release = threading.Event()

    @property
    def execution_api(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{self.prefix}/execution/"

    def __enter__(self) -> HealthServer:
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release.set()
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: HealthServer

    def do_GET(self) -> None:
        self.server.asked.append(self.path)
        if self.server.silent:
            self.server.release.wait(30)
            return
        if self.path != f"{self.server.prefix}/api/v2/monitor/health" or self.server.triggerer is None:
            self.send_error(404)
            return
        body = json.dumps({"metadatabase": {"status": "healthy"}, "triggerer": self.server.triggerer}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass
