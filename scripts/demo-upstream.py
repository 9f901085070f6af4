#!/usr/bin/env python3
"""A small local stand-in for httpbin, the upstream of Kong's tutorials, for scripts/demo.sh
(the demo must work without internet access). Python's standard library only.

    python3 scripts/demo-upstream.py [--host 127.0.0.1] [--port 8080]

Endpoints (any method unless noted), answers in httpbin's JSON shapes:
  /anything, /anything/<path>  echo: method, url, args, headers, origin, data, form, json
  /get (GET), /post (POST), /put (PUT), /patch (PATCH), /delete (DELETE)   the same echo
  /headers                     {"headers": {...}}
  /ip                          {"origin": "<client address>"}
  /uuid                        {"uuid": "<random uuid4>"}
  /status/<code>               an empty response with that status (100-599)
  /                            the list above
SIGTERM or SIGINT stop it.
"""
import argparse
import json
import signal
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

MAX_BODY = 10 * 1024 * 1024
ECHO_METHODS = {"/get": "GET", "/post": "POST", "/put": "PUT", "/patch": "PATCH",
                "/delete": "DELETE"}
INDEX = {
    "service": "tollgate demo upstream (httpbin-like)",
    "endpoints": ["/anything[/...]", "/get", "/post", "/put", "/patch", "/delete", "/headers",
                  "/ip", "/uuid", "/status/<code>"],
}


def flat(query):
    """httpbin's args/form: a single value as a string, repeated ones as a list."""
    return {k: v[0] if len(v) == 1 else v for k, v in parse_qs(query, keep_blank_values=True)
            .items()}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "demo-upstream/1.0"

    def log_message(self, fmt, *args):
        sys.stderr.write("demo-upstream: %s %s\n" % (self.address_string(), fmt % args))

    def _body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
                if len(data) > MAX_BODY:
                    raise ValueError("body too large")
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise ValueError("body too large")
        return self.rfile.read(length) if length else b""

    def _send(self, status, doc=None):
        data = b"" if doc is None else (json.dumps(doc, indent=2) + "\n").encode()
        self.send_response(status)
        if doc is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Access-Control-Allow-Origin", "*")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _echo(self, url, body):
        text = body.decode("utf-8", "replace")
        ctype = self.headers.get("Content-Type", "")
        doc = {
            "args": flat(url.query),
            "data": "" if ctype.startswith("application/x-www-form-urlencoded") else text,
            "files": {},
            "form": flat(text) if ctype.startswith("application/x-www-form-urlencoded") else {},
            "headers": dict(self.headers.items()),
            "json": None,
            "method": self.command,
            "origin": self.client_address[0],
            "url": f"http://{self.headers.get('Host', 'localhost')}{self.path}",
        }
        if ctype.startswith("application/json"):
            try:
                doc["json"] = json.loads(text)
            except ValueError:
                pass
        return doc

    def _handle(self):
        url = urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        try:
            body = self._body()
        except ValueError as e:
            return self._send(400, {"message": str(e)})
        if path == "/anything" or path.startswith("/anything/"):
            return self._send(200, self._echo(url, body))
        if path in ECHO_METHODS:
            if self.command not in (ECHO_METHODS[path], "HEAD", "OPTIONS"):
                return self._send(405, {"message": "Method not allowed"})
            return self._send(200, self._echo(url, body))
        if path == "/headers":
            return self._send(200, {"headers": dict(self.headers.items())})
        if path == "/ip":
            return self._send(200, {"origin": self.client_address[0]})
        if path == "/uuid":
            return self._send(200, {"uuid": str(uuid.uuid4())})
        if path.startswith("/status/"):
            code = path[len("/status/"):]
            if code.isdigit() and 100 <= int(code) <= 599:
                return self._send(int(code))
            return self._send(400, {"message": "status must be a number from 100 to 599"})
        if path == "/":
            return self._send(200, INDEX)
        return self._send(404, {"message": "Not found"})

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = _handle


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    args = ap.parse_args()
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True

    def stop(signum, frame):
        # shutdown() waits for serve_forever, which runs on this thread: do it from another
        threading.Thread(target=server.shutdown, daemon=True).start()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    sys.stderr.write(f"demo-upstream: listening on http://{args.host}:{args.port}\n")
    server.serve_forever()
    server.server_close()


if __name__ == "__main__":
    main()
