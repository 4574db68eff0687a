"""A stand-in's HTTP side: a WSGI app on an ephemeral 127.0.0.1 port, served by a daemon thread."""

from __future__ import annotations

import threading
from typing import Any, Self

from werkzeug import Request, Response
from werkzeug.serving import make_server


class LoopbackServer:
    """Subclasses answer in ``_handle``; ``start()`` / ``stop()``, or use it as a context manager.
    Call ``super().__init__()`` once the state ``_handle`` reads is set."""

    def __init__(self) -> None:
        self._server = make_server("127.0.0.1", 0, self._app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._serving = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _app(self, environ: dict[str, Any], start_response: Any) -> Any:
        return self._handle(Request(environ))(environ, start_response)

    def _handle(self, request: Request) -> Response:
        raise NotImplementedError

    def start(self) -> Self:
        self._serving.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._serving.join(timeout=5)
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
