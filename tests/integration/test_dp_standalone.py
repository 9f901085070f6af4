"""The data plane in standalone (DB-less) mode: `tollgate dp start` with declarative_config,
proxying to a real upstream (harness/upstream.py) on loopback. What a client or an operator
would notice: routing and path handling, the headers both ways, Kong's error bodies, bodies
streamed in both directions, keep-alive, upstream failures, SIGHUP reloads that keep the old
config when the new file is bad, readiness, status/metrics, graceful stop, and the seed 004
tutorial (key-auth + rate-limiting) once those plugins exist."""
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time

import pytest

from harness import procs
from harness.dp import DpProcess, raw_exchange, read_response
from harness.procs import LOOPBACK, wait_for
from harness.upstream import EchoUpstream, closed_port, pattern_bytes

# The proxy is the security boundary: also run against the ASan/UBSan build.
pytestmark = [pytest.mark.asan,
              pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REQUEST_ID_RE = re.compile(r"^[0-9a-f]{32}$")
VERSION_RE = re.compile(r"^tollgate/\d+\.\d+\.\d+$")


def kong_error(message, request_id):
    """Kong's kong.response.error JSON body, byte for byte."""
    return f'{{\n  "message":"{message}",\n  "request_id":"{request_id}"\n}}'


def echo(resp):
    assert resp.status_code == 200, resp.text
    return resp.json()


def upstream_headers(doc):
    """The echo's headers as {lower-case name: [values]}."""
    out = {}
    for k, v in doc["headers"]:
        out.setdefault(k.lower(), []).append(v)
    return out


def write_yaml(path, text):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def upstream():
    up = EchoUpstream().start()
    yield up
    up.stop()


@pytest.fixture(scope="module")
def dp_factory(tollgate_bin, workdir):
    created = []

    def make(config_text=None, name=None, prefix=None, start=True, **kw):
        name = name or f"dp{len(created) + 1}"
        prefix = prefix or tempfile.mkdtemp(prefix=f"{name}-", dir=workdir)
        path = None
        if config_text is not None:
            path = os.path.join(prefix, "kong.yaml")
            write_yaml(path, config_text)
        dp = DpProcess(tollgate_bin, prefix, os.path.join(workdir, "logs"), name=name,
                       declarative=path, **kw)
        dp.config_path = path
        created.append(dp)
        if start:
            dp.start()
        return dp

    yield make
    for dp in reversed(created):
        dp.cleanup()
    findings = [procs.sanitizer_report(dp.log_text()) for dp in created]
    findings = [f for f in findings if f]
    if findings:
        pytest.fail("sanitizer findings:\n" + "\n".join(findings), pytrace=False)


def main_config(up_port):
    down = closed_port()
    return f"""_format_version: "3.0"
services:
- name: echo
  url: http://127.0.0.1:{up_port}/base
  routes:
  - name: r-strip
    paths: [/strip]
  - name: r-nostrip
    paths: [/nostrip]
    strip_path: false
  - name: r-preserve
    paths: [/preserve]
    preserve_host: true
  - name: r-secure
    paths: [/secure]
    protocols: [https]
  - name: r-redirect
    paths: [/redirect]
    protocols: [https]
    https_redirect_status_code: 301
- name: plain
  url: http://127.0.0.1:{up_port}
  routes:
  - name: r-plain
    paths: [/plain]
- name: byname
  host: localhost
  port: {up_port}
  routes:
  - name: r-byname
    paths: [/byname]
- name: down
  url: http://127.0.0.1:{down}/
  routes:
  - name: r-down
    paths: [/down]
- name: slow
  url: http://127.0.0.1:{up_port}
  read_timeout: 500
  routes:
  - name: r-slow
    paths: [/slow]
- name: disabled
  url: http://127.0.0.1:{up_port}
  enabled: false
  routes:
  - name: r-disabled
    paths: [/disabled]
routes:
- name: r-orphan
  paths: [/orphan]
"""


@pytest.fixture(scope="module")
def dp(dp_factory, upstream):
    return dp_factory(main_config(upstream.port), name="dp-main")


# ---------------------------------------------------------------------------------- routing

def test_no_route_is_kongs_404(dp):
    resp = dp.get("/nowhere/at/all")
    assert resp.status_code == 404
    rid = resp.headers["X-Tollgate-Request-Id"]
    assert REQUEST_ID_RE.match(rid)
    assert resp.text == kong_error("no Route matched with those values", rid)
    assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
    assert VERSION_RE.match(resp.headers["Server"])
    assert int(resp.headers["X-Tollgate-Response-Latency"]) >= 0
    assert "Via" not in resp.headers


def test_route_without_service_is_503(dp):
    resp = dp.get("/orphan")
    assert resp.status_code == 503
    assert resp.json()["message"] == "no Service found with those values"


def test_routes_of_a_disabled_service_do_not_match(dp):
    assert dp.get("/disabled/x").status_code == 404


def test_path_stripping_and_service_path(dp):
    assert echo(dp.get("/strip/foo/bar?x=1&y=2"))["path"] == "/base/foo/bar?x=1&y=2"
    assert echo(dp.get("/strip"))["path"] == "/base"
    assert echo(dp.get("/nostrip/foo"))["path"] == "/base/nostrip/foo"
    assert echo(dp.get("/plain/a%20b"))["path"] == "/a%20b"
    # a bare "?" is kept, as Kong keeps it (requests would drop it: send it raw)
    data = dp.raw(b"GET /strip/q? HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert json.loads(data.split(b"\r\n\r\n", 1)[1])["path"] == "/base/q?"


def test_https_only_route_over_http(dp):
    resp = dp.get("/secure/x")
    assert resp.status_code == 426
    assert resp.json() == {"message": "Please use HTTPS protocol"}
    resp = dp.get("/redirect/x?a=1", headers={"Host": "example.com:8000"})
    assert resp.status_code == 301
    assert resp.headers["Location"] == "https://example.com/redirect/x?a=1"


def test_https_listener(dp):
    doc = echo(dp.get("/secure/over/tls", https=True))
    assert doc["path"] == "/base/over/tls"
    assert upstream_headers(doc)["x-forwarded-proto"] == ["https"]
    assert upstream_headers(doc)["x-forwarded-port"] == [str(dp.proxy_ssl_port)]


def test_upstream_by_name_resolves_off_the_loop(dp):
    doc = echo(dp.get("/byname/x"))
    assert doc["path"] == "/x"


# ---------------------------------------------------------------------------------- headers

def test_headers_sent_upstream(dp, upstream):
    resp = dp.get("/strip/h", headers={
        "X-Custom": "kept", "X-Forwarded-For": "10.1.2.3", "Via": "1.0 corp-proxy",
        "Connection": "keep-alive, X-Hop", "X-Hop": "dropped", "Keep-Alive": "timeout=5",
        "TE": "trailers", "Proxy-Authorization": "secret", "X-Tollgate-Request-Id": "spoofed"})
    doc = echo(resp)
    h = upstream_headers(doc)
    assert h["host"] == [f"127.0.0.1:{upstream.port}"]
    assert h["x-custom"] == ["kept"]
    assert h["x-forwarded-for"] == ["10.1.2.3, 127.0.0.1"]
    assert h["x-forwarded-proto"] == ["http"]
    assert h["x-forwarded-host"] == ["127.0.0.1"]
    assert h["x-forwarded-port"] == [str(dp.proxy_port)]
    assert h["x-forwarded-path"] == ["/strip/h"]
    assert h["x-forwarded-prefix"] == ["/strip"]
    assert h["x-real-ip"] == ["127.0.0.1"]
    assert re.match(r"^1\.0 corp-proxy, 1\.1 tollgate/\d+\.\d+\.\d+$", h["via"][0])
    for gone in ("x-hop", "keep-alive", "te", "proxy-authorization", "connection"):
        assert gone not in h, gone
    rid = resp.headers["X-Tollgate-Request-Id"]
    assert REQUEST_ID_RE.match(rid) and h["x-tollgate-request-id"] == [rid]


def test_preserve_host(dp):
    doc = echo(dp.get("/preserve/x", headers={"Host": "api.example.com"}))
    assert upstream_headers(doc)["host"] == ["api.example.com"]


def test_response_headers(dp):
    resp = dp.get("/strip/headers?h=X-Up:1&h=Connection:X-Up-Hop&h=X-Up-Hop:no&h=Via:1.1 inner")
    assert resp.status_code == 200
    assert resp.headers["Server"] == "echo-upstream"  # the upstream's Server is kept
    assert resp.headers["X-Up"] == "1"
    assert "X-Up-Hop" not in resp.headers
    assert re.match(r"^1\.1 inner, 1\.1 tollgate/\d+\.\d+\.\d+$", resp.headers["Via"])
    assert int(resp.headers["X-Tollgate-Upstream-Latency"]) >= 0
    assert int(resp.headers["X-Tollgate-Proxy-Latency"]) >= 0
    assert REQUEST_ID_RE.match(resp.headers["X-Tollgate-Request-Id"])
    assert resp.headers["Connection"] == "keep-alive"
    assert "Date" in resp.headers


def test_upstream_status_and_head_requests(dp):
    assert dp.get("/strip/status/201").status_code == 201
    resp = dp.request("HEAD", "/strip/anything")
    assert resp.status_code == 200 and resp.content == b""
    assert int(resp.headers["Content-Length"]) > 0


# ---------------------------------------------------------------------------------- bodies

def test_large_bodies_stream_both_ways(dp):
    body = os.urandom(10 * 1024 * 1024)
    doc = echo(dp.request("POST", "/strip/upload", data=body))
    assert doc["body_len"] == len(body)
    assert doc["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert not doc["chunked"]
    resp = dp.get("/strip/bytes/10485760")
    assert resp.status_code == 200 and resp.headers["Content-Length"] == "10485760"
    assert resp.content == pattern_bytes(10485760)


def test_chunked_response_is_rechunked(dp):
    resp = dp.get("/strip/bytes/3000000?chunked=1")
    assert resp.status_code == 200
    assert resp.headers.get("Transfer-Encoding") == "chunked"
    assert resp.content == pattern_bytes(3000000)


def test_chunked_request_body(dp):
    pieces = [b"a" * 1000, b"b" * 70000, b"c" * 5]
    doc = echo(dp.request("POST", "/strip/chunked", data=iter(pieces)))
    assert doc["chunked"] is True
    assert doc["body_sha256"] == hashlib.sha256(b"".join(pieces)).hexdigest()


def test_slow_reader_gets_every_byte(dp):
    """Backpressure: a client reading slowly still gets the whole response, in order."""
    n = 20 * 1024 * 1024
    sock = socket.create_connection((LOOPBACK, dp.proxy_port), timeout=30)
    try:
        sock.sendall(b"GET /strip/bytes/%d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % n)
        time.sleep(1.0)  # let the proxy fill the socket and stop reading the upstream
        data = b""
        while True:
            got = sock.recv(1 << 20)
            if not got:
                break
            data += got
    finally:
        sock.close()
    head, body = data.split(b"\r\n\r\n", 1)
    assert b" 200 " in head.split(b"\r\n")[0]
    assert body == pattern_bytes(n)


def test_expect_100_continue(dp):
    sock = socket.create_connection((LOOPBACK, dp.proxy_port), timeout=10)
    try:
        sock.sendall(b"POST /strip/cont HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        interim = sock.recv(100)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(b"hello")
        status, _, body, _ = read_response(sock, interim[len(b"HTTP/1.1 100 Continue\r\n\r\n"):])
        assert status == 200 and json.loads(body)["body"] == "hello"
    finally:
        sock.close()


# ---------------------------------------------------------------------------------- connections

def test_keep_alive_client_and_upstream(dp, upstream):
    sock = socket.create_connection((LOOPBACK, dp.proxy_port), timeout=10)
    ports = []
    try:
        rest = b""
        for i in range(4):
            sock.sendall(b"GET /strip/ka/%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
            status, headers, body, rest = read_response(sock, rest)
            assert status == 200 and headers["connection"] == "keep-alive"
            ports.append(json.loads(body)["peer_port"])
    finally:
        sock.close()
    # one client connection stays on one worker, which reuses its upstream connection
    assert len(set(ports[1:])) == 1, ports


def test_pipelined_requests(dp):
    sock = socket.create_connection((LOOPBACK, dp.proxy_port), timeout=10)
    try:
        sock.sendall(b"GET /strip/p1 HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"POST /strip/p2 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
                     b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n")
        s1, _, b1, rest = read_response(sock)
        s2, _, b2, rest = read_response(sock, rest)
        s3, _, _, _ = read_response(sock, rest)
        assert (s1, s2, s3) == (200, 200, 404)
        assert json.loads(b1)["path"] == "/base/p1"
        assert json.loads(b2)["body"] == "abc"
    finally:
        sock.close()


def test_connection_close_is_honoured(dp):
    data = dp.raw(b"GET /strip/c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 200 ")
    assert b"\r\nConnection: close\r\n" in data


# ---------------------------------------------------------------------------------- upstream faults

def test_upstream_refusing_connections_is_502(dp):
    resp = dp.get("/down/x")
    assert resp.status_code == 502
    rid = resp.headers["X-Tollgate-Request-Id"]
    assert resp.text == kong_error("An invalid response was received from the upstream server",
                                   rid)


def test_upstream_timeout_is_504(dp):
    started = time.monotonic()
    resp = dp.get("/slow/delay/3000")
    assert resp.status_code == 504
    assert resp.json()["message"] == "The upstream server is timing out"
    assert time.monotonic() - started < 2.5
    assert dp.get("/slow/delay/10").status_code == 200  # still fine within the timeout


def test_invalid_upstream_response_is_502(dp):
    resp = dp.get("/strip/invalid")
    assert resp.status_code == 502
    assert resp.json()["message"] == "An invalid response was received from the upstream server"


def test_upstream_error_format_follows_accept(dp):
    resp = dp.get("/down/x", headers={"Accept": "text/plain"})
    rid = resp.headers["X-Tollgate-Request-Id"]
    assert resp.status_code == 502
    assert resp.text == f"An invalid response was received from the upstream server\nrequest_id: {rid}\n"
    assert resp.headers["Content-Type"] == "text/plain; charset=utf-8"


def test_upstream_closing_after_each_response(dp):
    for _ in range(3):
        assert dp.get("/strip/close").status_code == 200


def test_upstream_closing_idle_pooled_connections(dp):
    """An upstream that closes keep-alive connections while they sit in the pool."""
    for _ in range(3):
        assert dp.get("/strip/drop").status_code == 200
        time.sleep(0.3)


# ---------------------------------------------------------------------------------- bad requests

@pytest.mark.parametrize("raw,status,message", [
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "Bad request"),
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414, "URI too long"),
    (b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X-Big: " + b"b" * 70000 + b"\r\n\r\n", 431,
     "Request header or cookie too large"),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 400, "Bad request"),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501,
     "Not implemented"),
    (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505, "HTTP version not supported"),
    (b"POST /strip HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
     400, "Bad request"),
    (b"POST /strip HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400,
     "Bad request"),
], ids=["two-hosts", "long-uri", "big-head", "te-not-chunked", "te-unknown", "http2", "te-and-cl",
        "bad-chunk"])
def test_bad_requests_get_kong_errors_and_close(dp, raw, status, message):
    data = dp.raw(raw)
    head, body = data.split(b"\r\n\r\n", 1)
    assert head.split(b"\r\n")[0].startswith(b"HTTP/1.1 %d " % status), head
    assert b"\r\nConnection: close\r\n" in head
    doc = json.loads(body)
    assert doc["message"] == message and REQUEST_ID_RE.match(doc["request_id"])


def test_slow_header_is_cut_off(dp):
    """Slowloris: a head that does not complete within the header timeout gets 408 and a close."""
    started = time.monotonic()
    data = raw_exchange(LOOPBACK, dp.proxy_port, b"GET /strip HTTP/1.1\r\nHost: a\r\n", timeout=20)
    assert data.startswith(b"HTTP/1.1 408 "), data[:100]
    assert time.monotonic() - started < 15


# ---------------------------------------------------------------------------------- observability

def test_access_log_line(dp):
    resp = dp.get("/strip/logged?q=1")
    rid = resp.headers["X-Tollgate-Request-Id"]

    def line():
        for text in dp.log_text().splitlines():
            if rid in text and text.startswith("{"):
                return json.loads(text)
        return None
    entry = wait_for(line, 5, what="the access log line")
    assert entry["method"] == "GET" and entry["uri"] == "/strip/logged?q=1"
    assert entry["status"] == 200 and entry["request_id"] == rid
    assert entry["route_id"] and entry["service_id"] and entry["consumer_id"] is None
    assert set(entry["latencies"]) == {"request", "proxy", "upstream"}


def test_status_and_metrics(dp):
    before = dp.status("/status").json()["server"]["total_requests"]
    for _ in range(3):
        dp.get("/strip/m")
    dp.get("/nowhere")
    st = dp.status("/status").json()
    assert st["server"]["total_requests"] >= before + 4
    assert re.match(r"^[0-9a-f]{64}$", st["configuration_hash"])
    assert st["config_version"] >= 1 and st["mode"] == "standalone"
    assert dp.status("/status/ready").status_code == 200
    text = dp.status("/metrics").text
    assert re.search(r'tollgate_http_requests_total\{code="200",route="r-strip",service="echo",'
                     r'consumer=""\} [1-9]', text)
    assert re.search(r'tollgate_http_requests_total\{code="404",route="",service="",'
                     r'consumer=""\} [1-9]', text)
    assert 'tollgate_request_latency_ms_bucket{le="+Inf"}' in text
    assert "tollgate_config_version " in text and "tollgate_connections_total" in text


# ---------------------------------------------------------------------------------- reloads

def reload_config(up_port, paths):
    routes = "\n".join(f"  - name: r{i}\n    paths: [{p}]" for i, p in enumerate(paths))
    return f"""_format_version: "3.0"
services:
- name: svc
  url: http://127.0.0.1:{up_port}
  routes:
{routes}
"""


def test_sighup_reload_and_invalid_file_keeps_config(dp_factory, upstream):
    dp = dp_factory(reload_config(upstream.port, ["/one"]), name="dp-reload")
    v1 = dp.config_version()
    assert dp.get("/one/x").status_code == 200 and dp.get("/two/x").status_code == 404

    write_yaml(dp.config_path, reload_config(upstream.port, ["/one", "/two"]))
    dp.reload(expect_version=v1 + 1)
    wait_for(lambda: dp.get("/two/x").status_code == 200, 5, what="the new route")

    # An invalid file is refused with the entity and field at fault; the config stays.
    mark = dp.process.log_size()
    write_yaml(dp.config_path, reload_config(upstream.port, ["/one", "no-slash"]))
    dp.reload()
    wait_for(lambda: "reload refused" in dp.log_text()[mark:], 5, what="the refusal")
    log = dp.log_text()[mark:]
    assert re.search(r"routes\[1\].*paths\[0\]", log) or "paths[0]" in log, log
    assert dp.config_version() == v1 + 1
    assert dp.get("/two/x").status_code == 200

    # Unchanged content is not a new version.
    write_yaml(dp.config_path, reload_config(upstream.port, ["/one", "/two"]))
    dp.reload()
    wait_for(lambda: "unchanged" in dp.log_text()[mark:], 5, what="the unchanged notice")
    assert dp.config_version() == v1 + 1


def test_reload_does_not_drop_requests_in_flight(dp_factory, upstream):
    dp = dp_factory(reload_config(upstream.port, ["/keep"]), name="dp-inflight")
    v = dp.config_version()
    result = {}
    t = threading.Thread(target=lambda: result.update(r=dp.get("/keep/delay/1500")))
    t.start()
    time.sleep(0.4)
    write_yaml(dp.config_path, reload_config(upstream.port, ["/other"]))
    dp.reload(expect_version=v + 1)
    wait_for(lambda: dp.get("/keep/x").status_code == 404, 5, what="the route to go")
    t.join(10)
    assert result["r"].status_code == 200  # it kept the generation it started with


def test_invalid_file_at_start_fails(dp_factory, upstream):
    dp = dp_factory("_format_version: \"3.0\"\nservices:\n- name: x\n  port: 99999999\n",
                    name="dp-badstart", start=False)
    dp.process.start()
    wait_for(lambda: not dp.process.running(), 15, what="the DP to exit")
    assert dp.process.stop() != 0
    assert "services[0]" in dp.log_text() and "port" in dp.log_text()


def test_dp_reload_command(dp_factory, upstream, tollgate_bin):
    dp = dp_factory(reload_config(upstream.port, ["/cli"]), name="dp-cli-reload")
    v = dp.config_version()
    write_yaml(dp.config_path, reload_config(upstream.port, ["/cli", "/cli2"]))
    out = subprocess.run([tollgate_bin, "dp", "reload"], env=dp.env, cwd=dp.prefix,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    wait_for(lambda: dp.config_version() == v + 1, 10, what="the reload")
    assert dp.get("/cli2/x").status_code == 200


def test_access_log_to_a_file(dp_factory, upstream):
    dp = dp_factory(reload_config(upstream.port, ["/f"]), name="dp-logfile",
                    env={"TOLLGATE_PROXY_ACCESS_LOG": "access.log"})
    rid = dp.get("/f/x").headers["X-Tollgate-Request-Id"]
    path = os.path.join(dp.prefix, "access.log")

    def logged():
        try:
            with open(path) as f:
                return [json.loads(line) for line in f if rid in line]
        except OSError:
            return None
    assert wait_for(logged, 5, what="the access log file")[0]["status"] == 200
    assert rid not in dp.log_text()


# ---------------------------------------------------------------------------------- readiness, restart, stop

def test_readiness_and_restart_from_the_store(dp_factory, upstream):
    # No declarative_config and an empty store: alive, not ready, nothing routed.
    empty = dp_factory(None, name="dp-empty")
    assert empty.status("/status/ready").status_code == 503
    assert empty.get("/one").status_code == 404
    assert "not enrolled" in empty.log_text()  # no CP to sync from: says so

    # A standalone DP fills its store; restarted without the file it serves the same config.
    first = dp_factory(reload_config(upstream.port, ["/persisted"]), name="dp-persist")
    version, digest = first.config_version(), first.status("/status").json()["configuration_hash"]
    assert first.stop() == 0
    again = dp_factory(None, name="dp-persist-cp", prefix=first.prefix)
    assert again.status("/status/ready").status_code == 200
    st = again.status("/status").json()
    assert (st["config_version"], st["configuration_hash"]) == (version, digest)
    assert echo(again.get("/persisted/x"))["path"] == "/x"


def test_graceful_stop_finishes_requests_in_flight(dp_factory, upstream):
    dp = dp_factory(reload_config(upstream.port, ["/g"]), name="dp-stop")
    result = {}
    t = threading.Thread(target=lambda: result.update(r=dp.get("/g/delay/1500")))
    t.start()
    time.sleep(0.4)
    assert dp.stop(signal.SIGTERM) == 0
    t.join(10)
    assert result["r"].status_code == 200
    with pytest.raises(OSError):
        socket.create_connection((LOOPBACK, dp.proxy_port), timeout=2).close()


def test_https_upstream(dp_factory, workdir, tmp_path):
    cert, key = str(tmp_path / "up.crt"), str(tmp_path / "up.key")
    gen = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                          "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj",
                          "/CN=localhost", "-keyout", key, "-out", cert], capture_output=True)
    if gen.returncode != 0:
        pytest.skip("openssl cannot create a test certificate")
    up = EchoUpstream(tls_cert=cert, tls_key=key).start()
    try:
        dp = dp_factory(f"""_format_version: "3.0"
services:
- name: tls
  url: https://localhost:{up.port}/t
  routes:
  - name: r-tls
    paths: [/tls]
""", name="dp-tls-upstream")
        for _ in range(2):
            doc = echo(dp.get("/tls/x"))
            assert doc["path"] == "/t/x"
            assert upstream_headers(doc)["host"] == [f"localhost:{up.port}"]
    finally:
        up.stop()


# ---------------------------------------------------------------------------------- seed 004

HAS_KEY_AUTH = os.path.exists(os.path.join(REPO, "data-plane", "plugins", "key-auth", "handler.c"))
HAS_RATE_LIMITING = os.path.exists(os.path.join(REPO, "data-plane", "plugins", "rate-limiting",
                                                "handler.c"))

SEED_004_HEAD = """_format_version: "3.0"
_konnect:
  control_plane_name: kong-workshop
_info:
  select_tags:
  - httpbin-service-route
services:
- name: httpbin-service
  host: 127.0.0.1
  port: {port}
  routes:
  - name: httpbin-route
    paths:
    - /key-auth-route
  plugins:
  - name: key-auth
    instance_name: key-auth1
"""
SEED_004_CONSUMER1 = """consumers:
- keyauth_credentials:
  - key: "123456"
  username: consumer1
"""
SEED_004_CONSUMER2 = """- keyauth_credentials:
  - key: "987654"
  username: consumer2
"""
SEED_004_LIMITED = """consumers:
- keyauth_credentials:
  - key: "123456"
  username: consumer1
  plugins:
  - name: rate-limiting
    instance_name: rate-limiting1
    config:
      minute: 5
- keyauth_credentials:
  - key: "987654"
  username: consumer2
  plugins:
  - name: rate-limiting
    instance_name: rate-limiting2
    config:
      minute: 8
"""


@pytest.mark.skipif(not HAS_KEY_AUTH, reason="needs the key-auth handler "
                    "(tg_plugin_handler(\"key-auth\") not built yet)")
def test_plugin_reading_the_body(dp_factory, upstream):
    """key_in_body: the proxy buffers the body for the plugin (bounded), then sends what the
    plugin left of it."""
    dp = dp_factory(f"""_format_version: "3.0"
services:
- name: s
  url: http://127.0.0.1:{upstream.port}
  routes:
  - name: r-body
    paths: [/body-auth]
  plugins:
  - name: key-auth
    config:
      key_in_body: true
      hide_credentials: true
consumers:
- username: body-user
  keyauth_credentials:
  - key: secret-in-body
""", name="dp-body-auth")
    doc = echo(dp.request("POST", "/body-auth/x", data={"apikey": "secret-in-body", "n": "1"}))
    assert doc["body"] == "n=1" and doc["body_len"] == 3
    assert upstream_headers(doc)["x-consumer-username"] == ["body-user"]
    chunked = dp.request("POST", "/body-auth/x", data=iter([b"apikey=secret-in-body", b"&n=2"]),
                         headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert echo(chunked)["body"] == "n=2"
    assert dp.request("POST", "/body-auth/x", data={"apikey": "wrong"}).status_code == 401
    resp = dp.request("POST", "/body-auth/x", data=b"apikey=x&pad=" + b"p" * (11 << 20),
                      headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status_code == 413
    assert resp.json()["message"] == "Payload too large"


def assert_401(resp, message, length):
    assert resp.status_code == 401
    rid = resp.headers["X-Tollgate-Request-Id"]
    assert resp.headers["WWW-Authenticate"] == "Key"
    assert resp.headers["Content-Type"] == "application/json; charset=utf-8"
    assert resp.headers["Content-Length"] == str(length)
    assert resp.text == kong_error(message, rid)
    assert int(resp.headers["X-Tollgate-Response-Latency"]) >= 0


def wait_for_fresh_minute():
    """Rate-limit windows are calendar minutes: do not start a count just before one ends."""
    if time.gmtime().tm_sec > 45:
        time.sleep(61 - time.gmtime().tm_sec)


@pytest.mark.skipif(not (HAS_KEY_AUTH and HAS_RATE_LIMITING),
                    reason="needs the key-auth and rate-limiting handlers "
                           "(tg_plugin_handler(\"key-auth\") not built yet)")
def test_seed_004_key_auth_and_consumer_rate_limits(dp_factory, upstream):
    head = SEED_004_HEAD.format(port=upstream.port)
    dp = dp_factory(head, name="dp-seed-004")
    v = dp.config_version()

    # Enable the Key Authentication plugin on the route: no key → 401.
    assert_401(dp.get("/key-auth-route/get"), "No API key found in request", 96)

    # Create a consumer with key 123456: the key is accepted, a wrong one is not.
    write_yaml(dp.config_path, head + SEED_004_CONSUMER1)
    dp.reload(expect_version=v + 1)
    resp = dp.request("HEAD", "/key-auth-route/get", headers={"apikey": "123456"})
    assert resp.status_code == 200
    assert resp.headers["X-Tollgate-Upstream-Latency"] and resp.headers["Via"]
    assert_401(dp.get("/key-auth-route/get", headers={"apikey": "12"}), "Unauthorized", 81)
    doc = echo(dp.get("/key-auth-route/get", headers={"apikey": "123456"}))
    h = upstream_headers(doc)
    assert h["x-consumer-username"] == ["consumer1"] and "x-credential-identifier" in h

    # A second consumer: both keys work.
    write_yaml(dp.config_path, head + SEED_004_CONSUMER1 + SEED_004_CONSUMER2)
    dp.reload(expect_version=v + 2)
    for key in ("123456", "987654"):
        assert dp.request("HEAD", "/key-auth-route/get", headers={"apikey": key}).status_code == 200

    # Per-consumer rate limits: 5/min for consumer1, 8/min for consumer2.
    wait_for_fresh_minute()
    write_yaml(dp.config_path, head + SEED_004_LIMITED)
    dp.reload(expect_version=v + 3)
    resp = dp.request("HEAD", "/key-auth-route/get", headers={"apikey": "123456"})
    assert resp.status_code == 200
    assert resp.headers["X-RateLimit-Limit-Minute"] == "5"
    assert resp.headers["X-RateLimit-Remaining-Minute"] == "4"
    assert (resp.headers["RateLimit-Limit"], resp.headers["RateLimit-Remaining"]) == ("5", "4")
    assert 1 <= int(resp.headers["RateLimit-Reset"]) <= 60
    resp = dp.request("HEAD", "/key-auth-route/get", headers={"apikey": "987654"})
    assert resp.status_code == 200
    assert resp.headers["X-RateLimit-Limit-Minute"] == "8"
    assert resp.headers["X-RateLimit-Remaining-Minute"] == "7"
    for _ in range(4):
        assert dp.request("HEAD", "/key-auth-route/get",
                          headers={"apikey": "123456"}).status_code == 200
    resp = dp.get("/key-auth-route/get", headers={"apikey": "123456"})
    assert resp.status_code == 429
    rid = resp.headers["X-Tollgate-Request-Id"]
    assert resp.text == kong_error("API rate limit exceeded", rid)
    assert resp.headers["Content-Length"] == "92"
    assert resp.headers["X-RateLimit-Limit-Minute"] == "5"
    assert resp.headers["X-RateLimit-Remaining-Minute"] == "0"
    assert resp.headers["RateLimit-Remaining"] == "0"
    assert resp.headers["Retry-After"] == resp.headers["RateLimit-Reset"]
    # consumer2 is counted separately and still allowed
    resp = dp.request("HEAD", "/key-auth-route/get", headers={"apikey": "987654"})
    assert resp.status_code == 200 and resp.headers["X-RateLimit-Remaining-Minute"] == "6"
