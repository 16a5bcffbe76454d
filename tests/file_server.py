"""A local HTTP server for download tests (127.0.0.1 only: tests never reach the internet).

Imported by name (``tests/`` has no packages): ``from file_server import FileServer``.
"""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FileServer:
    """Serves ``files`` over HTTP/1.0 with Range support; can cut responses short on request."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[dict] = []
        self.cut_next = 0  # how many of the next responses end halfway through the body
        self.drop_next = 0  # how many of the next requests get no answer at all
        self.support_range = True
        server = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 5  # a stuck client cannot hold the server thread

            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_GET(self):
                server.requests.append({"path": self.path, "range": self.headers.get("Range")})
                if server.drop_next > 0:
                    server.drop_next -= 1
                    self.close_connection = True
                    return  # the client sees the connection closed before any status line
                name = self.path.rsplit("/", 1)[-1]
                if name not in server.files:
                    self.send_error(404, "Not Found")
                    return
                body = server.files[name]
                start = 0
                requested = self.headers.get("Range")
                if requested and server.support_range:
                    start = int(requested.removeprefix("bytes=").split("-")[0])
                    if start >= len(body):
                        self.send_error(416, "Range Not Satisfiable")
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                payload = body[start:]
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if server.cut_next > 0:
                    server.cut_next -= 1
                    self.wfile.write(payload[: len(payload) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                try:
                    self.wfile.write(payload)
                except ConnectionError:  # the client stopped reading (a refused download)
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def url(self, name: str) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/files/{name}"

    def __enter__(self) -> FileServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)
