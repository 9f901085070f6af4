"""The compose cluster's demo upstream: answers every request with a JSON echo of what it
received (method, path, query, headers, body size), which is what a tutorial needs to see the
gateway's headers (X-Consumer-Username, X-Tollgate-Request-Id, ...). GET /health answers 200.

Listens on 0.0.0.0:${PORT:-8080}; one thread per connection; never writes to disk (it runs on a
read-only root filesystem)."""
import json
import os
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY = 1 << 20  # bodies are read (and counted) up to 1 MiB, then the connection closes


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "tollgate-demo-echo"

    def log_message(self, fmt, *args):
        pass  # the gateway's access log is the one that matters here

    def _answer(self):
        length = self.headers.get("Content-Length")
        size = 0
        if self.headers.get("Transfer-Encoding"):
            # Not decoded here: answer, then close so the unread body cannot be taken for
            # the next request on this connection.
            self.close_connection = True
        if length is not None:
            try:
                size = int(length)
            except ValueError:
                self._send(400, {"message": "bad Content-Length"}, close=True)
                return
            if size > MAX_BODY or size < 0:
                self._send(413, {"message": "body too large"}, close=True)
                return
            self.rfile.read(size)
        path, _, query = self.path.partition("?")
        if path == "/health":
            self._send(200, {"status": "ok"})
            return
        self._send(200, {
            "host": socket.gethostname(),
            "method": self.command,
            "path": path,
            "query": query,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body_bytes": size,
        })

    def _send(self, status, doc, close=False):
        body = json.dumps(doc, indent=1).encode() + b"\n"
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _answer


if __name__ == "__main__":
    server = ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PORT", "8080"))), Echo)
    server.daemon_threads = True
    server.serve_forever()
