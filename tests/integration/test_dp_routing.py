"""The data plane's router, end to end (kong-compat.md §5.2): a DB-less `tollgate dp start`
proxying to a real echo upstream. Every route has its own service whose path is the route's
name, so the upstream path tells which route matched. What a client notices: hosts (exact,
wildcard, port ignored), prefix paths (longest wins), regex paths and regex_priority,
methods, headers, strip_path and the service path (Kong's path_handling examples),
preserve_host, Kong's 404 and 503 — and that reloading the file under load never fails a
request, while a bad file is refused and the old config kept."""
import json
import threading
import time

import pytest
import requests

from dp_helpers import (REQUEST_ID_RE, assert_kong_error, dp_factory, echo,  # noqa: F401
                        raw_response, upstream, upstream_headers, write_yaml)
from harness.procs import wait_for
from harness.upstream import EchoUpstream

pytestmark = [pytest.mark.asan]

# name -> route attributes (besides name and service); the service path is "/<name>"
ROUTES = {
    # hosts
    "host-exact": {"hosts": ["exact.test"]},
    "host-suffix": {"hosts": ["*.wild.test"]},
    "host-plain-beats-wild": {"hosts": ["api.wild.test"]},
    "host-prefix": {"hosts": ["prefix.*"]},
    "host-multi": {"hosts": ["one.test", "two.test"], "paths": ["/multi"]},
    # prefix paths
    "lp-short": {"paths": ["/lp"]},
    "lp-long": {"paths": ["/lp/longer"]},
    # regex paths
    "rx-num": {"paths": [r"~/rx/\d+$"], "regex_priority": 5},
    "rx-any": {"paths": [r"~/rx/[a-z0-9]+$"], "regex_priority": 1},
    "rx2-num": {"paths": [r"~/rx2/\d+$"], "regex_priority": 1},
    "rx2-any": {"paths": [r"~/rx2/[a-z0-9]+$"], "regex_priority": 5},
    "mixed-plain": {"paths": ["/mixed/account"]},
    "mixed-regex": {"paths": ["~/mixed/.*"]},
    # methods
    "m-get": {"paths": ["/meth"], "methods": ["GET", "HEAD"]},
    "m-post": {"paths": ["/meth"], "methods": ["POST"]},
    "m-only": {"paths": ["/monly"], "methods": ["DELETE"]},
    # headers
    "h-v1": {"paths": ["/h"], "headers": {"x-version": ["v1"]}},
    "h-v2": {"paths": ["/h"], "headers": {"x-version": ["v2", "v2b"]}},
    "h-two": {"paths": ["/h"], "headers": {"x-version": ["v1"], "x-tier": ["gold"]}},
    "h-none": {"paths": ["/h"]},
    # all attributes must match
    "combo": {"hosts": ["combo.test"], "paths": ["/c"], "methods": ["POST"]},
    "c-plain": {"paths": ["/c"]},
    # preserve_host
    "keep-host": {"paths": ["/keephost"], "preserve_host": True},
    "swap-host": {"paths": ["/swaphost"]},
}

# Kong's path_handling examples: service path /s (or /s/), route path, strip_path
PATH_ROUTES = {
    "tv0": ("/s", {"paths": ["/tv0"]}),
    "fv0": ("/s", {"paths": ["/fv0"], "strip_path": False}),
    "tv0s": ("/s", {"paths": ["/tv0s/"]}),
    "fv0s": ("/s", {"paths": ["/fv0s/"], "strip_path": False}),
    "tv0b": ("/s/", {"paths": ["/tv0b"]}),
    "fv0b": ("/s/", {"paths": ["/fv0b"], "strip_path": False}),
    "tv1": ("/s", {"paths": ["/tv1"], "path_handling": "v1"}),
    "nopath": (None, {"paths": ["/nopath"]}),
    "rxstrip": (None, {"paths": [r"~/version/\d+/service"]}),
}


def routing_config(port):
    out = ['_format_version: "3.0"', "services:"]
    for name, attrs in ROUTES.items():
        out += [f"- name: svc-{name}", f"  url: http://127.0.0.1:{port}/{name}", "  routes:",
                f"  - {json.dumps({'name': name, **attrs})}"]
    for name, (path, attrs) in PATH_ROUTES.items():
        url = f"http://127.0.0.1:{port}{path or ''}"
        out += [f"- name: svc-{name}", f"  url: {url}", "  routes:",
                f"  - {json.dumps({'name': name, **attrs})}"]
    out += ["routes:", "- name: orphan", "  paths: [/orphan]"]
    return "\n".join(out) + "\n"


@pytest.fixture(scope="module")
def dp(dp_factory, upstream):
    return dp_factory(routing_config(upstream.port), name="dp-routing")


def matched(dp, path, method="GET", host=None, headers=None):
    """The route that served the request (the first segment of the upstream path)."""
    h = dict(headers or {})
    if host:
        h["Host"] = host
    resp = dp.request(method, path, headers=h)
    if resp.status_code == 404:
        return None
    doc = echo(resp)
    return doc["path"].split("?")[0].split("/")[1]


def assert_no_route(resp):
    assert_kong_error(resp, 404, "no Route matched with those values")


# ------------------------------------------------------------------------------------------- hosts

def test_exact_host(dp):
    assert matched(dp, "/any/thing", host="exact.test") == "host-exact"
    assert matched(dp, "/any/thing", host="EXACT.Test") == "host-exact"  # case-insensitive
    assert matched(dp, "/any/thing", host="exact.test:8123") == "host-exact"  # port ignored
    # another host: no route
    assert matched(dp, "/any/thing", host="other.test") is None
    assert matched(dp, "/any/thing", host="sub.exact.test") is None


def test_wildcard_hosts(dp):
    assert matched(dp, "/x", host="a.wild.test") == "host-suffix"
    assert matched(dp, "/x", host="a.b.wild.test:9000") == "host-suffix"
    assert matched(dp, "/x", host="wild.test") is None
    assert matched(dp, "/x", host="prefix.anything") == "host-prefix"
    assert matched(dp, "/x", host="prefix.example.org:81") == "host-prefix"
    assert matched(dp, "/x", host="notprefix.example.org") is None


def test_plain_host_beats_wildcard(dp):
    assert matched(dp, "/x", host="api.wild.test") == "host-plain-beats-wild"
    assert matched(dp, "/x", host="apx.wild.test") == "host-suffix"


def test_any_of_several_hosts(dp):
    assert matched(dp, "/multi/x", host="one.test") == "host-multi"
    assert matched(dp, "/multi/x", host="two.test") == "host-multi"
    assert matched(dp, "/multi/x", host="three.test") is None


# ------------------------------------------------------------------------------------------- paths

def test_longest_prefix_wins(dp):
    assert matched(dp, "/lp/longer/x") == "lp-long"
    assert matched(dp, "/lp/longer") == "lp-long"
    assert matched(dp, "/lp/x") == "lp-short"
    assert matched(dp, "/lp") == "lp-short"
    assert matched(dp, "/lpx") == "lp-short"  # a prefix is a string prefix, not a segment
    assert matched(dp, "/nothing/else") is None
    assert_no_route(dp.get("/nothing/else"))


def test_paths_are_case_sensitive(dp):
    assert matched(dp, "/LP/longer/x") is None


@pytest.mark.parametrize("target,route_path", [
    (b"/lp/../rx/123", "/rx-num"),          # dot segments removed before matching
    (b"/%6Cp/x", "/lp-short/x"),           # unreserved escapes decoded
    (b"/lp//longer/x", "/lp-long/x"),      # duplicate slashes merged
    (b"/tv0/a/./b/../c", "/s/a/c"),        # ... and the upstream gets the normalised rest
])
def test_paths_are_normalised_before_matching(dp, target, route_path):
    data = dp.raw(b"GET %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n" % target)
    status, _, body = raw_response(data)
    assert status == 200, data[:300]
    assert json.loads(body)["path"] == route_path


def test_regex_priority(dp):
    # both regexes match /rx/123: the higher regex_priority wins, whichever it is
    assert matched(dp, "/rx/123") == "rx-num"
    assert matched(dp, "/rx/abc") == "rx-any"
    assert matched(dp, "/rx2/123") == "rx2-any"
    assert matched(dp, "/rx2/abc") == "rx2-any"
    # regexes are anchored at the start of the path
    assert matched(dp, "/pre/rx/123") is None
    # "$" applies: a longer path is not matched by rx-num / rx-any
    assert matched(dp, "/rx/123/more") is None


def test_regex_paths_are_tried_before_prefixes(dp):
    assert matched(dp, "/mixed/account/x") == "mixed-regex"
    assert matched(dp, "/mixed/account") == "mixed-regex"


# -------------------------------------------------------------------------------- methods, headers

def test_methods(dp):
    assert matched(dp, "/meth/x") == "m-get"
    assert matched(dp, "/meth/x", method="POST") == "m-post"
    assert matched(dp, "/meth/x", method="PUT") is None
    resp = dp.request("HEAD", "/meth/x")
    assert resp.status_code == 200
    # a wrong method: no route
    assert matched(dp, "/monly/x", method="DELETE") == "m-only"
    assert matched(dp, "/monly/x") is None


def test_headers(dp):
    assert matched(dp, "/h/x", headers={"X-Version": "v1"}) == "h-v1"
    assert matched(dp, "/h/x", headers={"x-version": "V1"}) == "h-v1"  # values: any case
    assert matched(dp, "/h/x", headers={"X-Version": "v2"}) == "h-v2"
    assert matched(dp, "/h/x", headers={"X-Version": "v2b"}) == "h-v2"
    assert matched(dp, "/h/x", headers={"X-Version": "v3"}) == "h-none"
    assert matched(dp, "/h/x", headers={"X_Version": "v2"}) == "h-v2"  # "_" reads as "-"
    assert matched(dp, "/h/x") == "h-none"
    # more matching headers win
    assert matched(dp, "/h/x", headers={"X-Version": "v1", "X-Tier": "gold"}) == "h-two"
    assert matched(dp, "/h/x", headers={"X-Version": "v2", "X-Tier": "gold"}) == "h-v2"


def test_every_attribute_must_match(dp):
    assert matched(dp, "/c/x", method="POST", host="combo.test") == "combo"
    assert matched(dp, "/c/x", method="GET", host="combo.test") == "c-plain"
    assert matched(dp, "/c/x", method="POST", host="other.test") == "c-plain"


# ---------------------------------------------------------------------------------------- 404, 503

def test_no_route_is_kongs_404(dp_factory, upstream):
    d = dp_factory(f"""_format_version: "3.0"
services:
- name: only
  url: http://127.0.0.1:{upstream.port}
  routes:
  - name: only
    paths: [/only]
    hosts: [only.test]
    methods: [GET]
""", name="dp-routing-404")
    for resp in (d.get("/elsewhere"), d.get("/only/x"),  # no host
                 d.request("POST", "/only/x", headers={"Host": "only.test"}),  # method
                 d.get("/x/only", headers={"Host": "only.test"})):  # path
        assert_no_route(resp)
        assert "Via" not in resp.headers
    assert echo(d.get("/only/x", headers={"Host": "only.test"}))["path"] == "/x"
    # two 404s carry two request ids
    a, b = d.get("/nope"), d.get("/nope")
    assert a.json()["request_id"] != b.json()["request_id"]
    assert REQUEST_ID_RE.match(a.json()["request_id"])


def test_route_without_service_is_503(dp):
    resp = dp.get("/orphan/x")
    assert_kong_error(resp, 503, "no Service found with those values")


# ----------------------------------------------------------------------------------- upstream path

@pytest.mark.parametrize("request_path,upstream_path", [
    # service /s, route /tv0 (strip_path true, v0)
    ("/tv0/req", "/s/req"),
    ("/tv0", "/s"),
    ("/tv0req", "/s/req"),
    ("/tv0/", "/s/"),
    # service /s, route /fv0, strip_path false
    ("/fv0/req", "/s/fv0/req"),
    ("/fv0", "/s/fv0"),
    ("/fv0req", "/s/fv0req"),
    # route paths ending in "/"
    ("/tv0s/req", "/s/req"),
    ("/fv0s/req", "/s/fv0s/req"),
    # service /s/
    ("/tv0b/req", "/s/req"),
    ("/tv0b", "/s"),
    ("/tv0b/", "/s/"),
    ("/fv0b/req", "/s/fv0b/req"),
    # Kong 3.10's default router (traditional_compatible) joins as v0 whatever path_handling
    ("/tv1req", "/s/req"),
    # no service path
    ("/nopath/a/b", "/a/b"),
    ("/nopath", "/"),
    # strip_path removes what the regex matched
    ("/version/1/service/path/to/resource", "/path/to/resource"),
    # the query string travels as sent
    ("/tv0/req?b=2&a=1&a=%20", "/s/req?b=2&a=1&a=%20"),
])
def test_strip_path_and_service_path(dp, request_path, upstream_path):
    assert echo(dp.get(request_path))["path"] == upstream_path


def test_preserve_host(dp, upstream):
    doc = echo(dp.get("/keephost/x", headers={"Host": "client.example:8443"}))
    assert upstream_headers(doc)["host"] == ["client.example:8443"]
    doc = echo(dp.get("/swaphost/x", headers={"Host": "client.example"}))
    assert upstream_headers(doc)["host"] == [f"127.0.0.1:{upstream.port}"]
    assert upstream_headers(doc)["x-forwarded-host"] == ["client.example"]


# ------------------------------------------------------------------------------- reload under load

def hot_config(label, port):
    return f"""_format_version: "3.0"
services:
- name: hot-{label}
  url: http://127.0.0.1:{port}/gen-{label}
  routes:
  - name: hot
    paths: [/hot]
  - name: only-{label}
    paths: [/only-{label}]
"""


def test_reload_under_load_fails_no_request(dp_factory):
    """At least 2000 requests (4 connections x 500+, keep-alive) while the file is reloaded
    10 times (alternating two configs that send /hot to two different upstreams), then an invalid
    file: every response is a 200 from the upstream of a config that was live."""
    ups = {"a": EchoUpstream().start(), "b": EchoUpstream().start()}
    try:
        _reload_under_load(dp_factory, ups)
    finally:
        for up in ups.values():
            up.stop()


def _reload_under_load(dp_factory, ups):
    configs = {k: hot_config(k, up.port) for k, up in ups.items()}
    d = dp_factory(configs["a"], name="dp-hot-reload")
    v0 = d.config_version()
    stop = threading.Event()
    failures, served = [], {"a": 0, "b": 0}
    lock = threading.Lock()

    def client(n):
        s = requests.Session()
        s.trust_env = False
        try:
            i = 0
            while not stop.is_set() or i < 500:
                i += 1
                try:
                    r = s.get(f"{d.proxy_url}/hot/{n}/{i}", timeout=15)
                except requests.RequestException as e:
                    with lock:
                        failures.append(f"conn {n} request {i}: {e!r}")
                    continue
                problem = None
                if r.status_code != 200:
                    problem = f"{r.status_code} {r.text[:200]}"
                else:
                    doc = r.json()
                    label = doc["path"].split("/")[1].replace("gen-", "")
                    host = dict((k.lower(), v) for k, v in doc["headers"]).get("host")
                    if label not in ups or host != f"127.0.0.1:{ups[label].port}" or \
                            doc["path"] != f"/gen-{label}/{n}/{i}":
                        problem = f"wrong upstream: path {doc['path']} host {host}"
                with lock:
                    if problem:
                        failures.append(f"conn {n} request {i}: {problem}")
                    else:
                        served[label] += 1
        finally:
            s.close()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    try:
        version = v0
        for k in range(10):
            time.sleep(0.15)
            write_yaml(d.config_path, configs["b" if k % 2 == 0 else "a"])
            version += 1
            d.reload(expect_version=version, timeout=15)
        # an invalid file while under load: refused, the last config stays
        mark = d.process.log_size()
        write_yaml(d.config_path, configs["a"].replace("paths: [/hot]", "paths: [hot]"))
        d.reload()
        wait_for(lambda: "reload refused" in d.log_text()[mark:], 10, what="the refusal")
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert not failures, f"{len(failures)} failed requests, first: {failures[:5]}"
    total = served["a"] + served["b"]
    assert total >= 2000, served
    assert served["a"] > 0 and served["b"] > 0, served
    assert d.config_version() == version  # the refused file did not count
    # the last valid config (10 reloads from "a": back on "a") still serves
    assert echo(d.get("/hot/x"))["path"] == "/gen-a/x"
    assert echo(d.get("/only-a/x"))["path"] == "/gen-a/x"
    assert_no_route(d.get("/only-b/x"))
