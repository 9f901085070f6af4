"""rate-limiting on the data plane, end to end (kong-compat.md §4): a DB-less `tollgate dp
start` proxying to a real echo upstream. What a client notices: the X-RateLimit-* and
RateLimit-* headers of every window, being blocked (429, Retry-After, custom code and
message) and let through again when the window rolls over, who is counted together (every
limit_by), counters that all worker threads share, and which plugin instance applies when
several could (global, service, route, consumer; disabled ones).

Windows are fixed and calendar-aligned, so each sequence that must fall inside one window is
run by in_one_window(), which retries a sequence that straddled a boundary; sequences
retried at once use fresh identifiers (limit_by header with a new value).
"""
import calendar
import json
import threading
import time
import uuid
from types import SimpleNamespace

import pytest
import requests

from dp_helpers import (assert_kong_error, dp_factory, echo, in_one_window,  # noqa: F401
                        raw_response, sleep_to_next_second, upstream, upstream_headers)

pytestmark = [pytest.mark.asan]

PERIODS = ["second", "minute", "hour", "day", "month", "year"]
LENGTH = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "month": 2592000,
          "year": 31536000}
RL_HEADER_PREFIXES = ("x-ratelimit-", "ratelimit-")

ALICE_ID = "a11ce000-0000-4000-8000-000000000011"
BOB_ID = "b0b00000-0000-4000-8000-000000000012"


def rl(conf):
    return {"name": "rate-limiting", "config": conf}


KA = {"name": "key-auth", "config": {}}


def by_header(conf, name="X-Client"):
    return {**conf, "limit_by": "header", "header_name": name}


# route name -> (plugins on the route, service name)
ROUTES = {
    **{f"rl-win-{p}": ([rl({p: 7, "limit_by": "ip"})], "echo") for p in PERIODS},
    "rl-win-all": ([rl({"second": 100, "minute": 200, "hour": 300, "day": 400, "month": 500,
                        "year": 600, "limit_by": "ip"})], "echo"),
    "rl-second": ([rl(by_header({"second": 3}))], "echo"),
    "rl-minute": ([rl(by_header({"minute": 3}))], "echo"),
    "rl-multi": ([rl(by_header({"second": 3, "minute": 4}))], "echo"),
    "rl-tie": ([rl(by_header({"second": 2, "minute": 2}))], "echo"),
    "rl-hide": ([rl(by_header({"second": 2, "hide_client_headers": True}))], "echo"),
    "rl-custom": ([rl(by_header({"second": 1, "error_code": 404,
                                 "error_message": "Fake Not Found"}))], "echo"),
    "rl-shared": ([rl(by_header({"minute": 50}))], "echo"),
    "rl-ip": ([rl({"second": 2, "limit_by": "ip"})], "echo"),
    "rl-header": ([rl(by_header({"second": 2}, "X-Tenant"))], "echo"),
    "rl-path": ([rl({"second": 4, "limit_by": "path", "path": "/rl-path/limited"})], "echo"),
    "rl-consumer": ([KA, rl({"second": 2, "limit_by": "consumer"})], "echo"),
    "rl-credential": ([KA, rl({"second": 2, "limit_by": "credential"})], "echo"),
    "rl-consumer-noauth": ([rl({"second": 2})], "echo"),
    "rl-svc-a": ([], "shared-svc"),
    "rl-svc-b": ([], "shared-svc"),
    "rl-svc-c": ([], "other-svc"),
}
SERVICE_PLUGINS = {"shared-svc": [rl({"second": 2, "limit_by": "service"})],
                   "other-svc": [rl({"second": 2, "limit_by": "service"})]}

CONSUMERS = f"""consumers:
- id: {ALICE_ID}
  username: alice
  keyauth_credentials:
  - key: alice-key-1
  - key: alice-key-2
- id: {BOB_ID}
  username: bob
  keyauth_credentials:
  - key: bob-key
"""


def main_config(port):
    out = ['_format_version: "3.0"', "services:"]
    for svc in ("echo", "shared-svc", "other-svc"):
        out += [f"- name: {svc}", f"  url: http://127.0.0.1:{port}/{svc}"]
        if SERVICE_PLUGINS.get(svc):
            out.append(f"  plugins: {json.dumps(SERVICE_PLUGINS[svc])}")
        out.append("  routes:")
        for name, (plugins, s) in ROUTES.items():
            if s != svc:
                continue
            out += [f"  - name: {name}", f"    paths: [/{name}]"]
            if plugins:
                out.append(f"    plugins: {json.dumps(plugins)}")
    return "\n".join(out) + "\n" + CONSUMERS


@pytest.fixture(scope="module")
def dp(dp_factory, upstream):
    # two worker threads: counters must be shared by both
    return dp_factory(main_config(upstream.port), name="dp-rate-limiting", workers=2)


def new_id():
    return uuid.uuid4().hex


def rl_headers(resp):
    return {k.lower(): v for k, v in resp.headers.items()
            if k.lower().startswith(RL_HEADER_PREFIXES) or k.lower() == "retry-after"}


def window_reset(period, t):
    """Seconds until the data plane's window of `period` ends, seen at time t (Kong's
    arithmetic: window length minus whole seconds elapsed since the calendar start)."""
    now = int(t)
    if period in ("month", "year"):
        tm = time.gmtime(now)
        start = calendar.timegm((tm.tm_year, tm.tm_mon if period == "month" else 1, 1, 0, 0, 0))
    else:
        start = now - now % LENGTH[period]
    return max(1, LENGTH[period] - (now - start))


def assert_blocked(resp, message="API rate limit exceeded", status=429):
    assert_kong_error(resp, status, message)


# ------------------------------------------------------------------------- headers of every window

@pytest.mark.parametrize("period", PERIODS)
def test_headers_of_each_window(dp, period):
    t0 = time.time()
    resp = dp.get(f"/rl-win-{period}/x")
    t1 = time.time()
    echo(resp)
    name = period.capitalize()
    assert resp.headers[f"X-RateLimit-Limit-{name}"] == "7"
    assert resp.headers[f"X-RateLimit-Remaining-{name}"] == "6"
    assert resp.headers["RateLimit-Limit"] == "7"
    assert resp.headers["RateLimit-Remaining"] == "6"
    reset = int(resp.headers["RateLimit-Reset"])
    assert window_reset(period, t1) <= reset <= window_reset(period, t0), (period, reset)
    assert "Retry-After" not in resp.headers
    # only the configured window has headers
    assert {h for h in rl_headers(resp) if h.startswith("x-ratelimit-")} == \
        {f"x-ratelimit-limit-{period}", f"x-ratelimit-remaining-{period}"}


def test_headers_of_all_windows_at_once(dp):
    resp = dp.get("/rl-win-all/x")
    echo(resp)
    for period, limit in zip(PERIODS, (100, 200, 300, 400, 500, 600)):
        name = period.capitalize()
        assert resp.headers[f"X-RateLimit-Limit-{name}"] == str(limit)
        assert resp.headers[f"X-RateLimit-Remaining-{name}"] == str(limit - 1)
    # the most restrictive window (lowest remaining) is the second
    assert (resp.headers["RateLimit-Limit"], resp.headers["RateLimit-Remaining"],
            resp.headers["RateLimit-Reset"]) == ("100", "99", "1")


# ---------------------------------------------------------------------------------------- blocking

def test_second_window_blocks_then_rolls_over(dp, upstream):
    client = new_id()

    def sequence(_):
        return [dp.get("/rl-second/x", headers={"X-Client": client}) for _ in range(4)]

    # a straddling attempt is retried a second later: its client has fresh counters then
    resps = in_one_window(sequence, period=1)
    for resp, left in zip(resps[:3], ("2", "1", "0")):
        echo(resp)
        assert resp.headers["X-RateLimit-Limit-Second"] == "3"
        assert resp.headers["X-RateLimit-Remaining-Second"] == left
        assert resp.headers["RateLimit-Remaining"] == left
        assert resp.headers["RateLimit-Reset"] == "1"
    blocked = resps[3]
    assert_blocked(blocked)
    assert blocked.headers["X-RateLimit-Limit-Second"] == "3"
    assert blocked.headers["X-RateLimit-Remaining-Second"] == "0"
    assert blocked.headers["RateLimit-Limit"] == "3"
    assert blocked.headers["RateLimit-Remaining"] == "0"
    assert blocked.headers["Retry-After"] == blocked.headers["RateLimit-Reset"] == "1"
    seen = [r for r in upstream.requests if any(v == client for _, v in r["headers"])]
    assert len(seen) == 3  # the blocked request never reached the upstream

    # the next second is a new window
    sleep_to_next_second()
    resp = dp.get("/rl-second/x", headers={"X-Client": client})
    echo(resp)
    assert resp.headers["X-RateLimit-Remaining-Second"] == "2"


def test_minute_window_blocks(dp):
    def sequence(_):
        client = new_id()  # a retried attempt starts with fresh counters
        t0 = time.time()
        resps = [dp.get("/rl-minute/x", headers={"X-Client": client}) for _ in range(5)]
        return resps, t0, time.time()

    resps, t0, t1 = in_one_window(sequence, period=60)
    for resp, left in zip(resps[:3], ("2", "1", "0")):
        echo(resp)
        assert resp.headers["X-RateLimit-Limit-Minute"] == "3"
        assert resp.headers["X-RateLimit-Remaining-Minute"] == left
    for blocked in resps[3:]:  # blocked requests are not counted: still blocked, still 0
        assert_blocked(blocked)
        assert blocked.headers["X-RateLimit-Remaining-Minute"] == "0"
        reset = int(blocked.headers["RateLimit-Reset"])
        assert window_reset("minute", t1) <= reset <= window_reset("minute", t0)
        assert blocked.headers["Retry-After"] == str(reset)


def test_multiple_windows_most_restrictive_headers(dp):
    """second 3 + minute 4: the second runs out first, then (next second) the minute."""
    def sequence(_):
        client = new_id()
        h = {"X-Client": client}
        sleep_to_next_second()
        t0 = time.time()
        first = [dp.get("/rl-multi/x", headers=h) for _ in range(4)]
        if int(time.time()) != int(t0):
            return None  # the burst straddled a second: try again with a new client
        sleep_to_next_second()
        t1 = time.time()
        second = [dp.get("/rl-multi/x", headers=h) for _ in range(2)]
        return first, second, t1, time.time()

    for _ in range(4):
        got = in_one_window(sequence, period=60)
        if got:
            break
    else:
        pytest.fail("no attempt kept a burst inside one second")
    first, second, t1, t2 = got

    def rl_state(resp):
        return tuple(resp.headers.get(k) for k in (
            "X-RateLimit-Remaining-Second", "X-RateLimit-Remaining-Minute",
            "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"))

    assert [r.status_code for r in first] == [200, 200, 200, 429]
    assert rl_state(first[0]) == ("2", "3", "3", "2", "1")
    assert rl_state(first[1]) == ("1", "2", "3", "1", "1")
    assert rl_state(first[2]) == ("0", "1", "3", "0", "1")
    # blocked by the second: that window is the one reported, Retry-After 1
    assert rl_state(first[3]) == ("0", "1", "3", "0", "1")
    assert first[3].headers["Retry-After"] == "1"
    # a new second: the minute (1 left before, 0 after this one) is now the most restrictive;
    # the blocked 4th request was not counted, or the minute would be spent already
    assert second[0].status_code == 200
    s, m, limit, left, reset = rl_state(second[0])
    assert (s, m, limit, left) == ("2", "0", "4", "0")
    assert window_reset("minute", t2) <= int(reset) <= window_reset("minute", t1)
    # and it blocks, with Retry-After until the minute ends
    assert_blocked(second[1])
    s, m, limit, left, reset = rl_state(second[1])
    assert (s, m, limit, left) == ("2", "0", "4", "0")
    assert second[1].headers["Retry-After"] == reset
    assert window_reset("minute", t2) <= int(reset) <= window_reset("minute", t1)


def test_tie_goes_to_the_longer_window(dp):
    def sequence(_):
        t0 = time.time()
        resp = dp.get("/rl-tie/x", headers={"X-Client": new_id()})
        return resp, t0, time.time()

    resp, t0, t1 = in_one_window(sequence, period=60)
    echo(resp)
    assert resp.headers["X-RateLimit-Remaining-Second"] == "1"
    assert resp.headers["X-RateLimit-Remaining-Minute"] == "1"
    assert (resp.headers["RateLimit-Limit"], resp.headers["RateLimit-Remaining"]) == ("2", "1")
    # the minute's reset, not the second's 1
    reset = int(resp.headers["RateLimit-Reset"])
    assert window_reset("minute", t1) <= reset <= window_reset("minute", t0)
    assert reset > 1


def test_hide_client_headers(dp):
    client = new_id()
    resps = in_one_window(lambda _: [dp.get("/rl-hide/x", headers={"X-Client": client})
                                     for _ in range(3)], period=1)
    assert [r.status_code for r in resps] == [200, 200, 429]
    for resp in resps:
        assert rl_headers(resp) == {}, resp.headers
    assert_blocked(resps[2])


def test_custom_error_code_and_message(dp):
    client = new_id()
    resps = in_one_window(lambda _: [dp.get("/rl-custom/x", headers={"X-Client": client})
                                     for _ in range(2)], period=1)
    echo(resps[0])
    assert_blocked(resps[1], "Fake Not Found", 404)
    assert resps[1].headers["Retry-After"] == "1"
    assert resps[1].headers["X-RateLimit-Remaining-Second"] == "0"


def test_429_body_follows_accept(dp):
    client = new_id()
    resps = in_one_window(lambda _: [dp.get("/rl-custom/x", headers={"X-Client": client,
                                                                     "Accept": "text/plain"})
                                     for _ in range(2)], period=1)
    resp = resps[1]
    assert resp.status_code == 404
    assert resp.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert resp.text == f"Fake Not Found\nrequest_id: {resp.headers['X-Tollgate-Request-Id']}\n"


# ---------------------------------------------------------------------------------------- limit_by

def statuses(resps):
    return [r.status_code for r in resps]


def test_limit_by_ip(dp):
    # X-Forwarded-For from an untrusted client does not change who is counted
    def sequence(_):
        return [dp.get("/rl-ip/x", headers={"X-Forwarded-For": f"10.0.0.{i}"}) for i in range(3)]

    assert statuses(in_one_window(sequence, period=1)) == [200, 200, 429]


def test_limit_by_header(dp):
    tenant_a, tenant_b = new_id(), new_id()

    def sequence(_):
        a = [dp.get("/rl-header/x", headers={"X-Tenant": tenant_a}) for _ in range(3)]
        b = [dp.get("/rl-header/x", headers={"x-tenant": tenant_b}) for _ in range(2)]
        nohdr = [dp.get("/rl-header/x") for _ in range(3)]  # falls back to the client address
        return a, b, nohdr

    a, b, nohdr = in_one_window(sequence, period=1)
    assert statuses(a) == [200, 200, 429]
    assert statuses(b) == [200, 200]
    assert statuses(nohdr) == [200, 200, 429]


def raw_get(dp, target):
    """GET sent byte for byte (requests would decode %6C and drop dot segments itself);
    returns a requests.Response-like object with status_code and headers."""
    data = dp.raw(b"GET %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n" % target)
    status, headers, _ = raw_response(data)
    return SimpleNamespace(status_code=status,
                           headers=requests.structures.CaseInsensitiveDict(headers))


def test_limit_by_path(dp):
    """limit_by path compares Kong's kong.request.get_path(): the normalised path (RFC 3986
    §6: unreserved escapes decoded, dot segments removed, duplicate slashes merged)."""
    def sequence(_):
        limited = [dp.get("/rl-path/limited"),
                   raw_get(dp, b"/rl-path/%6Cimited"),
                   raw_get(dp, b"/rl-path/x/../limited"),
                   raw_get(dp, b"/rl-path//limited"),
                   dp.get("/rl-path/limited")]
        other = [dp.get(f"/rl-path/other{i}") for i in range(5)]  # not the path: by address
        return limited, other

    limited, other = in_one_window(sequence, period=1)
    got = [(r.status_code, r.headers.get("X-RateLimit-Remaining-Second")) for r in limited]
    assert got == [(200, "3"), (200, "2"), (200, "1"), (200, "0"), (429, "0")]
    assert statuses(other) == [200, 200, 200, 200, 429]


def test_limit_by_consumer(dp):
    def sequence(_):
        return [dp.get("/rl-consumer/x", headers={"apikey": k}) for k in
                ("alice-key-1", "alice-key-2", "alice-key-1", "alice-key-2", "bob-key")]

    resps = in_one_window(sequence, period=1)
    # both of alice's keys count for alice; bob is counted apart
    assert statuses(resps) == [200, 200, 429, 429, 200]
    assert resps[4].headers["X-RateLimit-Remaining-Second"] == "1"


def test_limit_by_consumer_without_consumer_counts_the_address(dp):
    resps = in_one_window(lambda _: [dp.get("/rl-consumer-noauth/x") for _ in range(3)], period=1)
    assert statuses(resps) == [200, 200, 429]


def test_limit_by_credential(dp):
    def sequence(_):
        return [dp.get("/rl-credential/x", headers={"apikey": k}) for k in
                ("alice-key-1", "alice-key-1", "alice-key-1", "alice-key-2", "bob-key")]

    resps = in_one_window(sequence, period=1)
    # each key is counted apart, even two keys of one consumer
    assert statuses(resps) == [200, 200, 429, 200, 200]


def test_limit_by_service(dp):
    def sequence(_):
        return [dp.get(p) for p in ("/rl-svc-a/x", "/rl-svc-b/x", "/rl-svc-a/x", "/rl-svc-b/x",
                                    "/rl-svc-c/x")]

    resps = in_one_window(sequence, period=1)
    # two routes of one service share its counter; another service has its own
    assert statuses(resps) == [200, 200, 429, 429, 200]


# --------------------------------------------------------------------------------- shared counters

def test_counters_are_shared_by_all_workers(dp, upstream):
    """Two worker threads, 32 connections hammering one limit: the limit holds across workers.

    As in Kong, a request is counted after the decision, so a worker deciding
    at the same instant as another may let one extra through: at most one per
    worker beyond the limit (sequentially the count is exact; see the
    second-window tests)."""
    workers = 2
    limit, total, conns = 50, 200, 32
    assert dp.status("/status").json()["workers"] == 2

    def sequence(_):
        client = new_id()
        results = []
        lock = threading.Lock()
        start = threading.Barrier(conns)
        per_conn = [total // conns + (1 if i < total % conns else 0) for i in range(conns)]

        def run(n):
            s = requests.Session()
            s.trust_env = False
            try:
                start.wait(10)
                for _ in range(n):
                    r = s.get(dp.proxy_url + "/rl-shared/x", headers={"X-Client": client},
                              timeout=30)
                    with lock:
                        results.append(r.status_code)
            finally:
                s.close()

        threads = [threading.Thread(target=run, args=(n,)) for n in per_conn]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        return client, results

    client, results = in_one_window(sequence, period=60)
    assert len(results) == total
    allowed = results.count(200)
    assert limit <= allowed <= limit + workers, {s: results.count(s) for s in set(results)}
    assert results.count(429) == total - allowed
    reached = [r for r in upstream.requests if any(v == client for _, v in r["headers"])]
    assert len(reached) == allowed


# -------------------------------------------------------------------------------------- precedence

CAROL_ID = "ca201000-0000-4000-8000-000000000013"
DAVE_ID = "da7e0000-0000-4000-8000-000000000014"
ERIN_ID = "e2140000-0000-4000-8000-000000000015"
GINA_ID = "9140a000-0000-4000-8000-000000000016"


def precedence_config(port):
    return f"""_format_version: "3.0"
plugins:
- name: key-auth
- name: rate-limiting
  config: {{minute: 100}}
services:
- name: svc-a
  url: http://127.0.0.1:{port}/a
  routes:
  - name: p-route
    paths: [/p-route]
    plugins:
    - name: rate-limiting
      config: {{minute: 10}}
  - name: p-plain
    paths: [/p-plain]
  - name: p-disabled
    paths: [/p-disabled]
    plugins:
    - name: rate-limiting
      enabled: false
      config: {{minute: 11}}
- name: svc-b
  url: http://127.0.0.1:{port}/b
  plugins:
  - name: rate-limiting
    config: {{minute: 20}}
  routes:
  - name: p-svc
    paths: [/p-svc]
  - name: p-svc-route-disabled
    paths: [/p-svc-route-disabled]
    plugins:
    - name: rate-limiting
      enabled: false
      config: {{minute: 21}}
consumers:
- id: {ALICE_ID}
  username: alice
  keyauth_credentials:
  - key: alice-key
  plugins:
  - name: rate-limiting
    config: {{minute: 5}}
- id: {BOB_ID}
  username: bob
  keyauth_credentials:
  - key: bob-key
- id: {CAROL_ID}
  username: carol
  keyauth_credentials:
  - key: carol-key
  plugins:
  - name: rate-limiting
    config: {{minute: 6}}
  - name: rate-limiting
    route: p-route
    config: {{minute: 7}}
- id: {DAVE_ID}
  username: dave
  keyauth_credentials:
  - key: dave-key
  plugins:
  - name: rate-limiting
    enabled: false
    config: {{minute: 8}}
- id: {ERIN_ID}
  username: erin
  keyauth_credentials:
  - key: erin-key
  plugins:
  - name: rate-limiting
    service: svc-b
    config: {{minute: 9}}
- id: {GINA_ID}
  username: gina
  keyauth_credentials:
  - key: gina-key
"""


@pytest.fixture(scope="module")
def precedence_dp(dp_factory, upstream):
    return dp_factory(precedence_config(upstream.port), name="dp-rl-precedence")


PRECEDENCE_ROUTES = ["p-route", "p-plain", "p-disabled", "p-svc", "p-svc-route-disabled"]
PRECEDENCE = {
    # consumer: the minute limit applied on each of PRECEDENCE_ROUTES
    "bob": [10, 100, 100, 20, 20],   # route > global; disabled route instance -> global/service
    "alice": [5, 5, 5, 5, 5],        # consumer beats route, service and global
    "carol": [7, 6, 6, 6, 6],        # route+consumer beats consumer
    "dave": [10, 100, 100, 20, 20],  # disabled consumer instance -> the less specific one
    "erin": [10, 100, 100, 9, 9],    # service+consumer beats route and service
}


@pytest.mark.parametrize("consumer", list(PRECEDENCE))
def test_plugin_precedence(precedence_dp, consumer):
    for route, limit in zip(PRECEDENCE_ROUTES, PRECEDENCE[consumer]):
        resp = precedence_dp.get(f"/{route}/x", headers={"apikey": f"{consumer}-key"})
        assert resp.status_code == 200, (route, resp.status_code, resp.text)
        got = resp.headers.get("X-RateLimit-Limit-Minute")
        assert got == str(limit), f"{consumer} on {route}: limit {got}, expected {limit}"


def test_consumer_scoped_limit_blocks_only_that_consumer(precedence_dp):
    """alice's own limit (5/min) applies to her on a route limited to 10/min; bob keeps
    the route's limit."""
    def sequence(_):
        alice = [precedence_dp.get("/p-route/x", headers={"apikey": "alice-key"})
                 for _ in range(6)]
        bob = precedence_dp.get("/p-route/x", headers={"apikey": "bob-key"})
        return alice, bob

    # one attempt (her counter would carry over into a retry), started well inside a minute
    alice, bob = in_one_window(sequence, period=60, attempts=1)
    assert statuses(alice)[-1] == 429
    assert statuses(alice).count(200) <= 5
    assert alice[-1].headers["X-RateLimit-Limit-Minute"] == "5"
    assert bob.status_code == 200 and bob.headers["X-RateLimit-Limit-Minute"] == "10"


def test_global_instance_shares_counters_across_routes(precedence_dp):
    def sequence(_):
        h = {"apikey": "gina-key"}
        return [precedence_dp.get(p, headers=h) for p in ("/p-plain/x", "/p-disabled/x",
                                                          "/p-plain/y")]

    resps = in_one_window(sequence, period=60, attempts=1)
    left = [int(r.headers["X-RateLimit-Remaining-Minute"]) for r in resps]
    assert left[1] == left[0] - 1 and left[2] == left[0] - 2, left
    for r in resps:
        assert upstream_headers(echo(r))["x-consumer-username"] == ["gina"]


# ------------------------------------------------------------------- many consumers (issue 3)

MANY = 600  # distinct consumers, each limited on its own: several doublings of the table below


def many_consumers_config(port, n):
    out = ['_format_version: "3.0"', "services:", "- name: many",
           f"  url: http://127.0.0.1:{port}/many", "  routes:", "  - name: many",
           "    paths: [/many]",
           '    plugins: [{"name": "key-auth"}, '
           '{"name": "rate-limiting", "config": {"day": 2, "limit_by": "consumer"}}]',
           "consumers:"]
    for i in range(n):
        out += [f"- username: many-{i}", "  keyauth_credentials:", f"  - key: many-key-{i}"]
    return "\n".join(out) + "\n"


def metric(dp, name):
    for line in dp.status("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in /metrics")


def away_from_day_boundary():
    """The day windows below must not roll over mid-test: wait out the last minute of a day."""
    left = 86400 - time.time() % 86400
    if left < 60:
        time.sleep(left + 0.05)


def day_of(t):
    return int(t // 86400)


def test_many_consumers_each_limited(dp_factory, upstream):
    """More consumers live in one window than the counter table first holds: it grows
    (the slots gauge rises), and every consumer is limited on its own counter — none
    proxied unlimited, none blocked by another's requests."""
    # a maximum of 1024 makes the first table 128 slots per period: 600 consumers must grow it
    dp = dp_factory(many_consumers_config(upstream.port, MANY), name="dp-rl-many", workers=2,
                    env={"TOLLGATE_RATE_LIMITING_COUNTERS_MAX": "1024"})
    away_from_day_boundary()
    t0 = time.time()
    s = requests.Session()
    s.trust_env = False
    got = {}
    for i in range(MANY):
        got[i] = [s.get(dp.proxy_url + "/many/x", headers={"apikey": f"many-key-{i}"},
                        timeout=30) for _ in range(3)]
    s.close()
    assert day_of(t0) == day_of(time.time()), "the test ran across a day boundary"
    wrong = {i: [r.status_code for r in rs] for i, rs in got.items()
             if [r.status_code for r in rs] != [200, 200, 429]}
    assert not wrong, f"{len(wrong)} consumers not limited on their own, e.g. " \
                      f"{list(wrong.items())[:5]}"
    for i in (0, MANY // 2, MANY - 1):  # the headers, too, are each consumer's own
        assert got[i][0].headers["X-RateLimit-Remaining-Day"] == "1"
        assert got[i][1].headers["X-RateLimit-Remaining-Day"] == "0"
        assert got[i][2].headers["Retry-After"]
    assert metric(dp, "tollgate_rate_limiting_counter_slots") > 6 * 128
    assert metric(dp, 'tollgate_rate_limiting_errors_total{result="proxied"}') == 0
    assert "failed to get usage" not in dp.log_text()


def test_counter_table_at_its_maximum_warns_and_counts(dp_factory, upstream):
    """With the table capped below the number of live consumers, the ones without a counter
    are proxied (fault_tolerant) without rate-limit headers, never silently: a metric counts
    them and a warning is logged, once per interval rather than once per request."""
    n = 300
    dp = dp_factory(many_consumers_config(upstream.port, n), name="dp-rl-capped", workers=2,
                    env={"TOLLGATE_RATE_LIMITING_COUNTERS_MAX": "64"})
    away_from_day_boundary()
    s = requests.Session()
    s.trust_env = False
    unlimited = 0
    for i in range(n):
        r = s.get(dp.proxy_url + "/many/x", headers={"apikey": f"many-key-{i}"}, timeout=30)
        assert r.status_code == 200
        if "X-RateLimit-Remaining-Day" not in r.headers:
            unlimited += 1
    s.close()
    assert unlimited > n - 64 - 1  # at most 64 counters exist
    assert metric(dp, 'tollgate_rate_limiting_errors_total{result="proxied"}') == unlimited
    warnings = [line for line in dp.log_text().splitlines() if "failed to get usage" in line]
    assert 1 <= len(warnings) <= 3, warnings
