"""A tiny upstream for proxy tests: a threaded HTTP/1.1 server on 127.0.0.1:<free port>, in this
process, that echoes what it received as JSON.

Echo body: {"method", "path" (with query), "query", "headers" [[name, value], ...] in order,
"body" (text, when it decodes as UTF-8 and is under 64 KiB), "body_len", "body_sha256",
"chunked" (the request came chunked), "peer_port" (to tell connections apart)}.

Special paths (anything else echoes with 200):
  /status/<code>            answer <code> with the echo body
  /delay/<ms>               wait, then echo
  /bytes/<n>[?chunked=1]    n bytes of pattern_bytes(n) (Content-Length, or chunked in pieces)
  /invalid                  a response head the proxy must refuse (two Content-Lengths)
  /close                    echo, then close the connection (no keep-alive)
  /drop                     echo as keep-alive, then close the idle connection 100 ms later
  /headers?h=Name:Value...  echo with those extra response headers
Every response goes out in one sendall so no Nagle/delayed-ACK pause skews latencies.
"""
import hashlib
import http.server
import json
import socket
import ssl
import threading
import time
from urllib.parse import parse_qsl, urlsplit

from .procs import LOOPBACK, free_port

_PATTERN = bytes(range(256)) * 256  # 64 KiB


def pattern_bytes(n):
    """The deterministic body /bytes/<n> answers with."""
    reps, rest = divmod(n, len(_PATTERN))
    return _PATTERN * reps + _PATTERN[:rest]


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "echo-upstream"
    sys_version = ""

    def log_message(self, *args):
        pass

    def _read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(data), True
                data += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return (self.rfile.read(n) if n else b""), False

    def _echo(self, body, chunked):
        url = urlsplit(self.path)
        text = None
        if len(body) < 65536:
            try:
                text = body.decode()
            except UnicodeDecodeError:
                pass
        doc = {"method": self.command, "path": self.path, "query": url.query,
               "headers": [[k, v] for k, v in self.headers.items()], "body": text,
               "body_len": len(body), "body_sha256": hashlib.sha256(body).hexdigest(),
               "chunked": chunked, "peer_port": self.client_address[1]}
        self.server.requests.append(doc)
        return json.dumps(doc).encode()

    def _send(self, status, body, headers=(), close=False):
        head = [f"HTTP/1.1 {status} {self.responses.get(status, ('X',))[0]}",
                f"Date: {self.date_time_string()}", "Server: echo-upstream",
                "Content-Type: application/json", f"Content-Length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in headers]
        if close:
            head.append("Connection: close")
            self.close_connection = True
        payload = ("\r\n".join(head) + "\r\n\r\n").encode()
        if self.command != "HEAD":
            payload += body
        self.wfile.write(payload)

    def _bytes(self, n, chunked):
        data = pattern_bytes(n)
        if not chunked:
            self.wfile.write((f"HTTP/1.1 200 OK\r\nServer: echo-upstream\r\nContent-Length: {n}\r\n"
                              "Content-Type: application/octet-stream\r\n\r\n").encode())
            self.wfile.write(data)
            return
        self.wfile.write(b"HTTP/1.1 200 OK\r\nServer: echo-upstream\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n")
        for i in range(0, n, 100000):
            piece = data[i:i + 100000]
            self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        self.wfile.write(b"0\r\n\r\n")

    def _handle(self):
        body, chunked = self._read_body()
        url = urlsplit(self.path)
        parts = url.path.strip("/").split("/")
        query = dict(parse_qsl(url.query))
        if parts[-2:-1] == ["status"] and parts[-1].isdigit():
            return self._send(int(parts[-1]), self._echo(body, chunked))
        if parts[-2:-1] == ["delay"] and parts[-1].isdigit():
            time.sleep(int(parts[-1]) / 1000)
            return self._send(200, self._echo(body, chunked))
        if parts[-2:-1] == ["bytes"] and parts[-1].isdigit():
            self._echo(body, chunked)
            return self._bytes(int(parts[-1]), query.get("chunked") == "1")
        if parts[-1:] == ["invalid"]:
            self.close_connection = True
            return self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"
                                    b"Content-Length: 6\r\n\r\nhello")
        if parts[-1:] == ["close"]:
            return self._send(200, self._echo(body, chunked), close=True)
        if parts[-1:] == ["drop"]:
            self._send(200, self._echo(body, chunked))
            self.wfile.flush()
            time.sleep(0.1)
            self.close_connection = True  # like an upstream's keep-alive timeout
            return None
        extra = [tuple(v.split(":", 1)) for k, v in parse_qsl(url.query) if k == "h"]
        return self._send(200, self._echo(body, chunked), extra)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = _handle


class EchoUpstream:
    """start() / stop(); .port, .url, .requests (every echo document, in order)."""

    def __init__(self, tls_cert=None, tls_key=None):
        self.port = free_port()
        self.tls = (tls_cert, tls_key) if tls_cert else None
        self.url = f"{'https' if self.tls else 'http'}://{LOOPBACK}:{self.port}"
        self.server = None
        self.thread = None

    @property
    def requests(self):
        return self.server.requests

    def start(self):
        server = http.server.ThreadingHTTPServer((LOOPBACK, self.port), _Handler)
        server.daemon_threads = True
        server.requests = []
        if self.tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*self.tls)
            server.socket = ctx.wrap_socket(server.socket, server_side=True)
        self.server = server
        self.thread = threading.Thread(target=server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self):
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


def closed_port():
    """A loopback port with nothing listening (connections are refused)."""
    port = free_port()
    with socket.socket() as s:  # make sure: bind and close without listening
        s.bind((LOOPBACK, port))
    return port
