"""Object storage on loopback for the tests: moto's S3 server, and an HTTP server of ranges."""

from __future__ import annotations

import http.server
import logging
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Credentials the server is given; the tests look for them in every file and message.
KEY_ID = "AKIATILEWISETEST0001"
SECRET = "tilewise-test-secret-4f9c2a"


@dataclass
class S3Server:
    """moto's S3 server on 127.0.0.1; its data stays in this process across a restart."""

    port: int = 0
    _server: Any = None

    def start(self) -> S3Server:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # a line per request otherwise
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        self.port = self._server.get_host_and_port()[1]
        return self

    def stop(self) -> None:
        self._server.stop()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def storage_options(self, **more: Any) -> dict[str, Any]:
        """What s3fs needs to reach this server, credentials included."""
        return {"key": KEY_ID, "secret": SECRET, "endpoint_url": self.endpoint, **more}

    def new_bucket(self) -> str:
        import s3fs

        name = f"tw-{uuid.uuid4().hex[:12]}"
        s3fs.S3FileSystem(**self.storage_options()).call_s3("create_bucket", Bucket=name)
        return name


@contextmanager
def s3_server(port: int = 0) -> Iterator[S3Server]:
    server = S3Server(port).start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class RangeServer:
    """Serves the files of a folder over HTTP with ``Range`` requests, counting bytes sent."""

    root: Path
    sent: int = 0
    ranges: int = 0  # GETs of a range
    whole: int = 0  # GETs of a whole file
    throttle: int = 0  # range GETs still to answer "503 Slow Down", as a throttling store does
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def __enter__(self) -> RangeServer:
        served = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                self._answer(body=False)

            def do_GET(self) -> None:
                self._answer(body=True)

            def _answer(self, body: bool) -> None:
                file = served.root / self.path.lstrip("/")
                if not file.is_file():
                    self.send_error(404)
                    return
                data = file.read_bytes()
                start, stop = 0, len(data)
                asked = self.headers.get("Range")
                with served._lock:
                    throttled = body and bool(asked) and served.throttle > 0
                    served.throttle -= throttled
                if throttled:
                    self.send_error(503, "Slow Down")
                    return
                if asked:
                    first, _, last = asked.removeprefix("bytes=").partition("-")
                    start, stop = int(first), min(int(last) + 1 if last else len(data), len(data))
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{stop - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(stop - start))
                self.end_headers()
                if body:
                    self.wfile.write(data[start:stop])
                    with served._lock:
                        served.sent += stop - start
                        served.ranges += bool(asked)
                        served.whole += not asked

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()
