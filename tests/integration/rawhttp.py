"""Raw-socket HTTP/1.1 helpers for the proxy's bad-input tests (test_dp_bad_input.py).

Client side: send exact bytes, read until the peer closes (bounded), reset a connection
(SO_LINGER 0), and parse whatever responses came back, truncated ones included.

Upstream side: RecordingUpstream, a threaded raw-socket HTTP/1.1 server on 127.0.0.1 that
keeps every byte each connection sent it and parses requests STRICTLY (RFC 9112). Whatever a
proxy forwards that two implementations could frame differently (bare CR/LF, obs-fold, CL+TE,
duplicate or non-numeric Content-Length, a coding other than "chunked", malformed chunks,
control bytes) lands in `.violations` instead of being guessed at, and the connection is
dropped. Complete requests land in `.requests` and get a JSON echo; a request cut short by the
proxy closing the connection lands in `.partials`. Paths containing these words misbehave on
purpose, as a dying upstream would:

  upstream-nothing        read the request, close without answering
  upstream-partial-head   send half a status line's head, close
  upstream-partial-body   send a head with Content-Length: 100 and 10 bytes, close
  upstream-partial-chunk  send a chunked head, one whole chunk and half of the next, close
  upstream-rst-body       send a head with Content-Length: 100 and 10 bytes, then reset (RST)
  upstream-big            answer 4 MiB (Content-Length), for clients that vanish mid-response
"""
import json
import re
import socket
import struct
import threading
import time

LOOPBACK = "127.0.0.1"

# ------------------------------------------------------------------------------ client side


def connect(port, timeout=5.0):
    sock = socket.create_connection((LOOPBACK, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def reset(sock):
    """Closes with an RST instead of a FIN (SO_LINGER on, timeout 0)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _has_complete_response(data):
    try:
        return any(r.complete and r.status >= 200 for r in parse_responses(data))
    except ValueError:
        return False


def read_until_close(sock, timeout=5.0, buf=b"", grace=None):
    """Reads until EOF or `timeout` seconds in total: (bytes, closed). A reset counts as closed.
    With `grace`, waits at most that long for EOF once a complete final response is in (so a
    proxy that wrongly keeps the connection open does not cost the whole timeout)."""
    deadline = time.monotonic() + timeout
    chunks = [buf]
    graced = False
    while True:
        if grace is not None and not graced and _has_complete_response(b"".join(chunks)):
            graced = True
            deadline = min(deadline, time.monotonic() + grace)
        left = deadline - time.monotonic()
        if left <= 0:
            return b"".join(chunks), False
        sock.settimeout(left)
        try:
            got = sock.recv(65536)
        except socket.timeout:
            return b"".join(chunks), False
        except (ConnectionResetError, BrokenPipeError):
            return b"".join(chunks), True
        if not got:
            return b"".join(chunks), True
        chunks.append(got)


def exchange(port, data, timeout=5.0, shut_wr=False, grace=1.0):
    """One connection: send `data` (bytes, or a list of pieces sent 50 ms apart), optionally
    half-close, read until the proxy closes. Returns (received, closed)."""
    sock = connect(port, timeout)
    try:
        pieces = data if isinstance(data, list) else [data]
        for i, piece in enumerate(pieces):
            if i:
                time.sleep(0.05)
            try:
                sock.sendall(piece)
            except (BrokenPipeError, ConnectionResetError):
                break  # the proxy gave up on us; what it answered is still readable
        if shut_wr:
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        return read_until_close(sock, timeout, grace=grace)
    finally:
        sock.close()


class Response:
    def __init__(self, status, reason, headers, body, complete, raw):
        self.status, self.reason, self.headers = status, reason, headers
        self.body, self.complete, self.raw = body, complete, raw

    def header(self, name, default=None):
        values = self.all(name)
        return values[0] if values else default

    def all(self, name):
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return (f"Response({self.status} {self.reason!r}, complete={self.complete}, "
                f"headers={self.headers!r}, body={self.body[:300]!r})")


_STATUS_RE = re.compile(rb"^HTTP/1\.[01] (\d{3}) ?([^\r\n]*)$")


def parse_responses(data, head_request=False):
    """Every response in `data`, in order; the last one may be incomplete (complete=False).
    Interim 1xx responses are included. Raises ValueError on bytes that are not a response."""
    out = []
    pos = 0
    while pos < len(data):
        end = data.find(b"\r\n\r\n", pos)
        if end < 0:
            out.append(Response(None, None, [], b"", False, data[pos:]))
            return out
        lines = data[pos:end].split(b"\r\n")
        m = _STATUS_RE.match(lines[0])
        if not m:
            raise ValueError(f"not a status line at offset {pos}: {data[pos:pos + 200]!r}")
        status, reason = int(m.group(1)), m.group(2).decode("latin-1")
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not name or name != name.strip():
                raise ValueError(f"bad response header line {line!r}")
            headers.append((name.decode("latin-1"), value.strip(b" \t").decode("latin-1")))
        body_start = end + 4
        lower = {k.lower(): v for k, v in headers}
        if status < 200 or status in (204, 304) or head_request:
            out.append(Response(status, reason, headers, b"", True, data[pos:body_start]))
            pos = body_start
            continue
        if lower.get("transfer-encoding", "").lower() == "chunked":
            body, p, complete = bytearray(), body_start, False
            while True:
                eol = data.find(b"\r\n", p)
                if eol < 0:
                    break
                try:
                    size = int(data[p:eol].split(b";")[0], 16)
                except ValueError:
                    raise ValueError(f"bad chunk size line {data[p:eol][:100]!r}") from None
                p = eol + 2
                if size == 0:
                    tend = data.find(b"\r\n\r\n", p - 2)
                    if tend >= 0:
                        p, complete = tend + 4, True
                    break
                if len(data) < p + size + 2:
                    body += data[p:p + size]
                    p = len(data)
                    break
                if data[p + size:p + size + 2] != b"\r\n":
                    raise ValueError("chunk data not followed by CRLF")
                body += data[p:p + size]
                p += size + 2
            out.append(Response(status, reason, headers, bytes(body), complete, data[pos:p]))
            pos = p
            if not complete:
                return out
            continue
        if "content-length" in lower:
            n = int(lower["content-length"])
            body = data[body_start:body_start + n]
            complete = len(body) == n
            out.append(Response(status, reason, headers, body, complete,
                                data[pos:body_start + n]))
            pos = body_start + n
            continue
        # delimited by close
        out.append(Response(status, reason, headers, data[body_start:], True, data[pos:]))
        return out
    return out


# ------------------------------------------------------------------------------ upstream side

_TCHAR = set(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_REQUEST_LINE_RE = re.compile(rb"^([!#$%&'*+\-.^_`|~0-9A-Za-z]+) ([\x21-\x7e]+) HTTP/1\.([01])$")
_MAX_HEAD = 1 << 20


def _field_value_ok(value):
    return all(b in (9, 32) or 0x21 <= b <= 0x7e or b >= 0x80 for b in value)


class _Violation(Exception):
    pass


class _Eof(Exception):
    pass


class _Conn:
    """One upstream connection: a buffered, byte-recording reader."""

    def __init__(self, server, sock, cid):
        self.server, self.sock, self.id = server, sock, cid
        self.raw = bytearray()
        self.buf = bytearray()
        self.closed = False
        self.request_start = 0  # offset in raw where the current request began

    def _fill(self):
        try:
            got = self.sock.recv(65536)
        except OSError:
            got = b""
        if not got:
            raise _Eof()
        with self.server.lock:
            self.raw += got
            self.server.last_activity = time.monotonic()
        self.buf += got

    def read_head(self):
        while True:
            i = self.buf.find(b"\r\n\r\n")
            if i >= 0:
                head = bytes(self.buf[:i])
                del self.buf[:i + 4]
                return head
            if len(self.buf) > _MAX_HEAD:
                raise _Violation("request head over 1 MiB without CRLFCRLF")
            self._fill()

    def read_line(self, limit=8192):
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line = bytes(self.buf[:i + 1])
                del self.buf[:i + 1]
                if not line.endswith(b"\r\n") or b"\r" in line[:-2]:
                    raise _Violation(f"bare CR or LF in a body line: {line[:100]!r}")
                return line[:-2]
            if len(self.buf) > limit:
                raise _Violation("body line too long")
            self._fill()

    def read_exact(self, n):
        while len(self.buf) < n:
            self._fill()
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data


class RecordingUpstream:
    """start() / stop(); .port; .requests and .partials (since reset()), touched() (the
    connections, pooled ones included, that received bytes since reset()), received_bytes(),
    .history (every complete request ever), .violations (every violation ever, never reset)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.sock = None
        self.port = None
        self.stopping = False
        self.thread = None
        self.history = []
        self.violations = []
        self.next_id = 0
        self.last_activity = time.monotonic()
        self.requests, self.partials, self.all_conns, self.marks = [], [], [], {}

    def start(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((LOOPBACK, 0))
        self.sock.listen(256)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.thread.start()
        return self

    def stop(self):
        self.stopping = True
        if self.thread:
            self.thread.join(5)
        if self.sock:
            self.sock.close()

    def reset(self):
        with self.lock:
            self.requests, self.partials = [], []
            self.marks = {c.id: len(c.raw) for c in self.all_conns}

    def wait_quiet(self, idle=0.1, timeout=3.0):
        """Waits until no byte has arrived for `idle` seconds (bounded by `timeout`)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                quiet = time.monotonic() - self.last_activity
            if quiet >= idle:
                return True
            time.sleep(min(idle - quiet, 0.05) + 0.001)
        return False

    def wait_for_requests(self, n, timeout=5.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.requests) >= n:
                    return True
            time.sleep(0.01)
        return False

    def touched(self):
        """Connections (new or pooled) that received bytes since reset()."""
        with self.lock:
            return [c for c in self.all_conns if len(c.raw) > self.marks.get(c.id, 0)]

    def received_bytes(self):
        """Every byte received since reset(), on any connection, new or pooled."""
        with self.lock:
            return b"".join(bytes(c.raw[self.marks.get(c.id, 0):]) for c in self.all_conns)

    # ---------------------------------------------------------------- internals

    def _accept_loop(self):
        while not self.stopping:
            try:
                sock, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                self.next_id += 1
                conn = _Conn(self, sock, self.next_id)
                self.all_conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _violation(self, conn, what):
        with self.lock:
            self.violations.append({"conn": conn.id, "what": what,
                                    "raw": bytes(conn.raw[conn.request_start:][:2000])})

    def _serve(self, conn):
        sock = conn.sock
        sock.settimeout(30)
        try:
            while True:
                conn.request_start = len(conn.raw) - len(conn.buf)
                try:
                    req = self._read_request(conn)
                except _Eof:
                    leftover = bytes(conn.raw[conn.request_start:])
                    if leftover:
                        with self.lock:
                            self.partials.append({"conn": conn.id, "raw": leftover})
                    return
                except _Violation as e:
                    self._violation(conn, str(e))
                    return
                with self.lock:
                    self.requests.append(req)
                    self.history.append(req)
                if not self._answer(conn, req):
                    return
        finally:
            conn.closed = True
            try:
                sock.close()
            except OSError:
                pass

    def _read_request(self, conn):
        head = conn.read_head()
        if b"\n" in head.replace(b"\r\n", b"") or b"\r" in head.replace(b"\r\n", b""):
            raise _Violation(f"bare CR or LF in the head: {head[:300]!r}")
        lines = head.split(b"\r\n")
        m = _REQUEST_LINE_RE.match(lines[0])
        if not m:
            raise _Violation(f"bad request line {lines[0][:300]!r}")
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not name or any(b not in _TCHAR for b in name):
                raise _Violation(f"bad header line {line[:300]!r} (obs-fold, no colon, "
                                 "whitespace before the colon or a bad name)")
            value = value.strip(b" \t")
            if not _field_value_ok(value):
                raise _Violation(f"control byte in header value {line[:300]!r}")
            headers.append((name.decode("latin-1"), value.decode("latin-1")))
        lower = [(k.lower(), v) for k, v in headers]
        cls = [v for k, v in lower if k == "content-length"]
        tes = [v for k, v in lower if k == "transfer-encoding"]
        hosts = [v for k, v in lower if k == "host"]
        if len(hosts) != 1:
            raise _Violation(f"{len(hosts)} Host headers")
        if tes and cls:
            raise _Violation("both Transfer-Encoding and Content-Length")
        if len(cls) > 1:
            raise _Violation(f"{len(cls)} Content-Length headers")
        if len(tes) > 1 or (tes and tes[0].lower() != "chunked"):
            raise _Violation(f"Transfer-Encoding {tes!r} is not exactly 'chunked'")
        if cls and not (re.fullmatch(r"[0-9]{1,19}", cls[0]) and int(cls[0]) < 1 << 63):
            raise _Violation(f"Content-Length {cls[0]!r}")
        body, framing = b"", "none"
        if tes:
            framing, body = "chunked", self._read_chunked(conn)
        elif cls:
            framing, body = "length", conn.read_exact(int(cls[0]))
        return {"conn": conn.id, "method": m.group(1).decode(), "target": m.group(2).decode(),
                "version": "1." + m.group(3).decode(), "headers": headers, "body": body,
                "framing": framing}

    @staticmethod
    def _read_chunked(conn):
        body = bytearray()
        while True:
            line = conn.read_line()
            size_part = line.split(b";", 1)[0]
            if not re.fullmatch(rb"[0-9A-Fa-f]{1,16}", size_part):
                raise _Violation(f"bad chunk-size line {line[:100]!r}")
            size = int(size_part, 16)
            if size == 0:
                while True:  # trailer section
                    trailer = conn.read_line()
                    if trailer == b"":
                        return bytes(body)
                    name, sep, value = trailer.partition(b":")
                    if not sep or not name or any(b not in _TCHAR for b in name):
                        raise _Violation(f"bad trailer line {trailer[:100]!r}")
            body += conn.read_exact(size)
            if conn.read_exact(2) != b"\r\n":
                raise _Violation("chunk data not followed by CRLF")

    def _answer(self, conn, req):
        """Sends the response; False when the connection is to be dropped."""
        target, sock = req["target"], conn.sock
        try:
            if "upstream-nothing" in target:
                return False
            if "upstream-partial-head" in target:
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Le")
                return False
            if "upstream-partial-body" in target or "upstream-rst-body" in target:
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                             b"Content-Length: 100\r\n\r\n0123456789")
                if "upstream-rst-body" in target:
                    time.sleep(0.05)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return False
            if "upstream-partial-chunk" in target:
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n10\r\nabc")
                return False
            if "upstream-big" in target:
                n = 4 << 20
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                             b"Content-Length: %d\r\n\r\n" % n)
                piece = b"x" * 65536
                for _ in range(n // len(piece)):
                    sock.sendall(piece)
                return True
            doc = {"conn": conn.id, "method": req["method"], "target": target,
                   "headers": req["headers"], "body": req["body"].decode("latin-1"),
                   "framing": req["framing"]}
            body = json.dumps(doc).encode()
            head = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n" % len(body))
            sock.sendall(head if req["method"] == "HEAD" else head + body)
            return True
        except OSError:
            return False
