"""Helpers shared by the Admin API bad-input, fault and concurrency tests.

state_snapshot()   everything a write could change: the entity lists the Admin API returns,
                   /status configuration.config_version, and the change log and entity tables
                   in PostgreSQL. Two snapshots compare equal iff nothing was written.
list_all()         pages through a collection (size=1000) and returns every entity.
changelog()        config_versions / config_changes of the CP's control plane.
raw_request()      one HTTP exchange over a raw socket (for requests `requests` cannot send).
assert_kong_error  status + JSON body checks with Kong's error shapes.
"""
import contextlib
import json
import select
import socket
import time

from requests.structures import CaseInsensitiveDict

from harness.procs import LOOPBACK

COLLECTIONS = ("/consumers", "/services", "/routes", "/plugins", "/key-auths")
TABLES = ("consumers", "services", "routes", "plugins", "keyauth_credentials")


# ----------------------------------------------------------------------------- Admin API

def list_all(admin, path, size=1000, max_pages=1000):
    """Every entity of a collection, following `offset` until the last page."""
    out, offset = [], None
    for _ in range(max_pages):
        params = {"size": size}
        if offset:
            params["offset"] = offset
        r = admin.get(path, params=params, timeout=60)
        assert r.status_code == 200, f"GET {path} -> {r.status_code} {r.text[:300]}"
        body = r.json()
        out.extend(body["data"])
        offset = body.get("offset")
        if not offset:
            assert body.get("next") is None, f"last page of {path} has next={body.get('next')!r}"
            return out
    raise AssertionError(f"GET {path}: more than {max_pages} pages")


def status(admin, timeout=15):
    r = admin.get("/status", timeout=timeout)
    assert r.status_code == 200, f"GET /status -> {r.status_code} {r.text[:300]}"
    return r.json()


def config_version(admin):
    return status(admin)["configuration"]["config_version"]


def assert_cp_alive(cp, admin=None):
    """The CP process runs and GET /status answers 200 with a reachable database."""
    assert cp.running(), f"{cp.name} is not running (exit code {cp.process.returncode})"
    body = status(admin or cp.admin)
    assert body["database"]["reachable"] is True, body


# ----------------------------------------------------------------------------- PostgreSQL

def cp_id(pg_server, database):
    with contextlib.closing(pg_server.connect(database)) as conn, conn.cursor() as cur:
        cur.execute("SELECT id FROM control_planes WHERE name = 'default'")
        return str(cur.fetchone()[0])


def changelog(pg_server, database):
    """(versions, changes, control_planes.config_version) of the default control plane:
    versions = [(version, changes)], changes = [(version, seq, entity_type, entity_id, op)]."""
    with contextlib.closing(pg_server.connect(database)) as conn, conn.cursor() as cur:
        cur.execute("SELECT id, config_version FROM control_planes WHERE name = 'default'")
        cid, current = cur.fetchone()
        cur.execute("SELECT version, changes FROM config_versions WHERE cp_id = %s "
                    "ORDER BY version", (cid,))
        versions = cur.fetchall()
        cur.execute("SELECT version, seq, entity_type, entity_id::text, op FROM config_changes "
                    "WHERE cp_id = %s ORDER BY version, seq", (cid,))
        changes = cur.fetchall()
    return versions, changes, current


def table_counts(pg_server, database):
    with contextlib.closing(pg_server.connect(database)) as conn, conn.cursor() as cur:
        counts = {}
        for t in TABLES:
            cur.execute(f"SELECT count(*) FROM {t}")
            counts[t] = cur.fetchone()[0]
        return counts


def assert_changelog_contiguous(pg_server, database):
    """Versions are exactly 1..N, each with >= 1 change whose count matches; returns N."""
    versions, changes, current = changelog(pg_server, database)
    numbers = [v for v, _ in versions]
    assert numbers == list(range(1, len(numbers) + 1)), \
        f"config_versions has gaps or duplicates: {_gaps(numbers)}"
    per_version = {}
    for v, seq, *_ in changes:
        per_version.setdefault(v, []).append(seq)
    for v, n in versions:
        seqs = per_version.get(v, [])
        assert n >= 1 and seqs == list(range(1, n + 1)), \
            f"version {v}: changes={n} but config_changes seqs={seqs}"
    assert set(per_version) <= set(numbers), "config_changes rows without a version"
    assert current == len(numbers), \
        f"control_planes.config_version={current} but {len(numbers)} versions exist"
    return len(numbers)


def _gaps(numbers):
    if not numbers:
        return "none"
    missing = sorted(set(range(1, max(numbers) + 1)) - set(numbers))
    return f"count={len(numbers)} max={max(numbers)} missing={missing[:20]} first={numbers[:5]}"


# ----------------------------------------------------------------------------- snapshots

def state_snapshot(admin, pg_server, database):
    versions, changes, current = changelog(pg_server, database)
    return {
        "lists": {path: sorted(json.dumps(e, sort_keys=True) for e in list_all(admin, path))
                  for path in COLLECTIONS},
        "status_config_version": config_version(admin),
        "config_versions": versions,
        "config_changes": changes,
        "control_planes.config_version": current,
        "tables": table_counts(pg_server, database),
    }


def assert_nothing_written(before, after, what=""):
    for key in before:
        if before[key] != after[key]:
            if key == "lists":
                diff = {p: (len(before[key][p]), len(after[key][p]))
                        for p in before[key] if before[key][p] != after[key][p]}
                raise AssertionError(f"{what}: entity lists changed (before, after counts): {diff}")
            b, a = before[key], after[key]
            if isinstance(b, list):
                raise AssertionError(f"{what}: {key} changed: {len(b)} -> {len(a)} rows; "
                                     f"new: {a[len(b):][:5]}")
            raise AssertionError(f"{what}: {key} changed: {b!r} -> {a!r}")


# ----------------------------------------------------------------------------- responses

def json_body(resp):
    ctype = resp.headers.get("Content-Type", "")
    assert "application/json" in ctype, \
        f"{resp.status_code} response has Content-Type {ctype!r}, body {resp.text[:300]!r}"
    try:
        return resp.json()
    except ValueError:
        raise AssertionError(f"{resp.status_code} body is not JSON: {resp.text[:300]!r}") from None


def assert_kong_error(resp, status, message=None, code=None, name=None, fields=None,
                      message_contains=None):
    """A Kong error response: `status` and a JSON body with the given parts."""
    assert resp.status_code == status, \
        f"expected {status}, got {resp.status_code} {resp.text[:500]!r}"
    body = json_body(resp)
    assert isinstance(body, dict) and "message" in body, f"no message in {body!r}"
    if message is not None:
        assert body["message"] == message, f"message {body['message']!r} != {message!r}"
    if message_contains is not None:
        assert message_contains in body["message"], \
            f"{message_contains!r} not in message {body['message']!r}"
    if code is not None:
        assert body.get("code") == code, f"code {body.get('code')!r} != {code} in {body!r}"
    if name is not None:
        assert body.get("name") == name, f"name {body.get('name')!r} != {name!r} in {body!r}"
    if fields is not None:
        assert body.get("fields") == fields, f"fields {body.get('fields')!r} != {fields!r}"
    return body


# ----------------------------------------------------------------------------- raw HTTP

class RawResponse:
    def __init__(self, status, reason, headers, body, raw):
        self.status_code = status
        self.reason = reason
        self.headers = CaseInsensitiveDict(headers)  # name -> last value
        self.content = body
        self.raw = raw

    @property
    def text(self):
        return self.content.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.content)


def connect(port, timeout=30):
    s = socket.create_connection((LOOPBACK, port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def read_response(sock, timeout=30):
    """Reads one response (Content-Length or until close); None if closed before a byte."""
    deadline = time.monotonic() + timeout
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = _recv(sock, deadline)
        if not chunk:
            if not buf:
                return None
            raise AssertionError(f"connection closed inside a response head: {buf[:300]!r}")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    assert parts[0].startswith("HTTP/1."), f"not an HTTP response: {lines[0]!r}"
    status = int(parts[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        n = int(headers["content-length"])
        while len(rest) < n:
            chunk = _recv(sock, deadline)
            if not chunk:
                raise AssertionError(f"response body cut short: {len(rest)} of {n} bytes")
            rest += chunk
        body = rest[:n]
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        raise AssertionError("chunked responses are not expected from the Admin API here")
    else:
        while True:
            chunk = _recv(sock, deadline)
            if not chunk:
                break
            rest += chunk
        body = rest
    return RawResponse(status, parts[2] if len(parts) > 2 else "", headers, body, buf)


def _recv(sock, deadline):
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("no complete response in time")
    sock.settimeout(left)
    try:
        return sock.recv(65536)
    except ConnectionResetError:
        return b""


def raw_request(port, data, timeout=30):
    """Sends `data` (bytes) on a new connection, half-closes nothing, returns the first
    response (RawResponse) or None when the server closed without answering."""
    with contextlib.closing(connect(port, timeout)) as s:
        s.sendall(data)
        return read_response(s, timeout)


def send_until_answered(sock, data, piece=65536, timeout=60):
    """Sends `data` in pieces, stopping early once the server answers or resets; returns the
    number of bytes sent."""
    sent, deadline = 0, time.monotonic() + timeout
    while sent < len(data) and time.monotonic() < deadline:
        readable, writable, _ = select.select([sock], [sock], [], 1.0)
        if readable:
            break
        if writable:
            try:
                sock.settimeout(5)
                sent += sock.send(data[sent:sent + piece])
            except (BrokenPipeError, ConnectionResetError, socket.timeout):
                break
    return sent


def port_of(url):
    return int(url.rsplit(":", 1)[1].split("/")[0])
