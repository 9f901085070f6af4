"""Shared pieces of the data-plane plugin and routing tests (test_dp_key_auth.py,
test_dp_rate_limiting.py, test_dp_routing.py): fixtures for an echo upstream and DB-less data
planes, Kong's error body, the echo's view of a request, and helpers that keep rate-limit
sequences inside one calendar window.

The fixtures are imported by name into each test module (`from dp_helpers import dp_factory,
upstream`), so every module gets its own processes.
"""
import json
import os
import re
import tempfile
import time

import pytest

from harness import procs
from harness.dp import DpProcess
from harness.upstream import EchoUpstream

REQUEST_ID_RE = re.compile(r"^[0-9a-f]{32}$")
JSON_CT = "application/json; charset=utf-8"


def kong_error(message, request_id):
    """Kong's kong.response.error JSON body, byte for byte."""
    return f'{{\n  "message":"{message}",\n  "request_id":"{request_id}"\n}}'


def assert_kong_error(resp, status, message):
    """A Tollgate-generated error: status, Kong's JSON body with the request id of the
    X-Tollgate-Request-Id header, and the JSON content type."""
    req = resp.request
    assert resp.status_code == status, \
        f"{req.method} {req.path_url}: expected {status}, got {resp.status_code}: {resp.text}"
    rid = resp.headers.get("X-Tollgate-Request-Id", "")
    assert REQUEST_ID_RE.match(rid), resp.headers
    assert resp.text == kong_error(message, rid), resp.text
    assert resp.headers["Content-Type"] == JSON_CT


def echo(resp):
    """The echo document of a proxied 200."""
    req = resp.request
    assert resp.status_code == 200, f"{req.method} {req.path_url}: {resp.status_code} {resp.text}"
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


def raw_response(data):
    """(status, {lower-case name: value}, body bytes) of one raw HTTP/1.1 response."""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        k, v = line.split(":", 1)
        headers[k.strip().lower()] = v.strip()
    return int(lines[0].split()[1]), headers, body


# ---------------------------------------------------------------------------------- windows

def sleep_to_next_second(offset=0.02):
    """Sleeps until `offset` seconds into the next wall-clock second."""
    now = time.time()
    time.sleep(max(0.0, (int(now) + 1 + offset) - now))


def in_one_window(sequence, period=1, attempts=6, fresh=None):
    """Runs sequence() so that all of it falls in one calendar window of `period` seconds
    (the data plane's windows are fixed and UTC-aligned, its clock is this machine's).

    period 1: every attempt starts just after a second begins; an attempt that ran into the
    next second is thrown away and the next one starts a second later, so it meets fresh
    counters. Longer periods: an attempt too close to the end of the window waits for the
    next one; a straddling attempt is retried at once, so the sequence must then use fresh
    identifiers itself (it is called with the attempt number).
    Returns what the successful attempt returned."""
    for attempt in range(attempts):
        if period == 1:
            sleep_to_next_second()
        else:
            left = period - time.time() % period
            if left < 5:
                time.sleep(left + 0.02)
        t0 = time.time()
        result = sequence(attempt)
        t1 = time.time()
        if int(t0 // period) == int(t1 // period):
            return result
    pytest.fail(f"could not run the sequence within one {period}-second window in {attempts} "
                "attempts (machine too slow?)")


# ---------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def upstream():
    up = EchoUpstream().start()
    yield up
    up.stop()


@pytest.fixture(scope="module")
def dp_factory(tollgate_bin, workdir, request):
    """dp_factory(config_text, name=None, start=True, **DpProcess kwargs) -> DpProcess with
    .config_path (the declarative file it reads)."""
    module = request.module.__name__.split(".")[-1].replace("test_", "")
    created = []

    def make(config_text=None, name=None, prefix=None, start=True, **kw):
        name = name or f"{module}-dp{len(created) + 1}"
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


def json_body(doc):
    """The echo's body parsed as JSON."""
    return json.loads(doc["body"])
