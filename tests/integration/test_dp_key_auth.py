"""key-auth on the data plane, end to end (kong-compat.md §2): a DB-less `tollgate dp start`
proxying to a real echo upstream. What a client notices: where the key is looked for and in
which order, Kong's 401/500 bodies and WWW-Authenticate, what the upstream receives (the
X-Consumer-* headers, hidden credentials, re-serialised bodies), anonymous consumers,
preflight requests, and that declarative credentials cannot carry a ttl."""
import json
import re
import uuid
from urllib.parse import parse_qsl

import pytest

from dp_helpers import (assert_kong_error, dp_factory, echo, raw_response,  # noqa: F401
                        upstream, upstream_headers, write_yaml)
from harness.procs import wait_for

pytestmark = [pytest.mark.asan]

ALICE_ID = "a11ce000-0000-4000-8000-000000000001"
ALICE_CRED = "a11ce000-0000-4000-8000-0000000000c1"
BOB_ID = "b0b00000-0000-4000-8000-000000000002"
BOB_CRED = "b0b00000-0000-4000-8000-0000000000c2"
ANON_ID = "a0000000-0000-4000-8000-0000000000a0"

# route name -> key-auth config (every route proxies to the echo service, path stripped)
ROUTES = {
    "ka-default": {},
    "ka-multi": {"key_names": ["first_key", "second-key"], "key_in_body": True},
    "ka-underscore": {"key_names": ["api_key"]},
    "ka-noheader": {"key_in_header": False},
    "ka-noquery": {"key_in_query": False},
    "ka-body": {"key_in_body": True},
    "ka-body-hide": {"key_in_body": True, "hide_credentials": True},
    "ka-hide": {"hide_credentials": True},
    "ka-realm": {"realm": "x"},
    "ka-anon-id": {"anonymous": ANON_ID},
    "ka-anon-name": {"anonymous": "anon"},
    "ka-anon-missing": {"anonymous": "ghost"},
    "ka-preflight": {"run_on_preflight": False},
}

CONSUMERS = f"""consumers:
- id: {ALICE_ID}
  username: alice
  custom_id: alice-cid
  keyauth_credentials:
  - id: {ALICE_CRED}
    key: alice-key
- id: {BOB_ID}
  username: bob
  keyauth_credentials:
  - id: {BOB_CRED}
    key: bob-key
- id: {ANON_ID}
  username: anon
"""


def config(port, consumers=CONSUMERS):
    routes = []
    for name, conf in ROUTES.items():
        routes.append(f"""  - name: {name}
    paths: [/{name}]
    plugins:
    - name: key-auth
      config: {json.dumps(conf)}""")
    return (f"""_format_version: "3.0"
services:
- name: echo
  url: http://127.0.0.1:{port}
  routes:
""" + "\n".join(routes) + "\n" + consumers)


@pytest.fixture(scope="module")
def dp(dp_factory, upstream):
    return dp_factory(config(upstream.port), name="dp-key-auth")


def assert_401(resp, message, www="Key"):
    assert_kong_error(resp, 401, message)
    assert resp.headers["WWW-Authenticate"] == www


def assert_alice(doc):
    h = upstream_headers(doc)
    assert h["x-consumer-id"] == [ALICE_ID]
    assert h["x-consumer-custom-id"] == ["alice-cid"]
    assert h["x-consumer-username"] == ["alice"]
    assert h["x-credential-identifier"] == [ALICE_CRED]
    assert "x-anonymous-consumer" not in h
    return h


def assert_bob(doc):
    h = upstream_headers(doc)
    assert h["x-consumer-id"] == [BOB_ID]
    assert h["x-consumer-username"] == ["bob"]
    assert h["x-credential-identifier"] == [BOB_CRED]
    assert "x-consumer-custom-id" not in h
    assert "x-anonymous-consumer" not in h
    return h


def assert_anon(doc):
    h = upstream_headers(doc)
    assert h["x-consumer-id"] == [ANON_ID]
    assert h["x-consumer-username"] == ["anon"]
    assert h["x-anonymous-consumer"] == ["true"]
    assert "x-credential-identifier" not in h
    assert "x-consumer-custom-id" not in h
    return h


def multipart(fields, boundary="tgB0undary42"):
    body = "".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{n}"\r\n\r\n{v}\r\n'
                   for n, v in fields) + f"--{boundary}--\r\n"
    return body.encode(), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def multipart_fields(body, content_type):
    """[(name, value)] of a multipart/form-data body (what a server would see)."""
    boundary = re.search(r"boundary=\"?([^\";]+)", content_type).group(1)
    out = []
    for part in body.split(f"--{boundary}")[1:]:
        if part.startswith("--"):
            break
        head, _, value = part.lstrip("\r\n").partition("\r\n\r\n")
        name = re.search(r'name="([^"]*)"', head).group(1)
        out.append((name, value[:-2] if value.endswith("\r\n") else value))
    return out


# -------------------------------------------------------------------------------------------- 401s

def test_no_key_is_401_no_api_key_found(dp, upstream):
    before = len(upstream.requests)
    resp = dp.get("/ka-default/x")
    assert_401(resp, "No API key found in request")
    assert resp.headers["Content-Length"] == str(len(resp.content))
    assert len(upstream.requests) == before  # never reached the upstream


def test_invalid_key_is_401_unauthorized(dp):
    assert_401(dp.get("/ka-default/x", headers={"apikey": "nope"}), "Unauthorized")
    assert_401(dp.get("/ka-default/x?apikey=nope"), "Unauthorized")
    # keys are case-sensitive
    assert_401(dp.get("/ka-default/x", headers={"apikey": "ALICE-KEY"}), "Unauthorized")


@pytest.mark.parametrize("how", ["empty header", "empty query value", "query flag"])
def test_empty_key_is_no_api_key_found(dp, how):
    if how == "empty header":
        resp = dp.get("/ka-default/x", headers={"apikey": ""})
    elif how == "empty query value":
        resp = dp.get("/ka-default/x?apikey=")
    else:
        resp = dp.get("/ka-default/x?apikey")
    assert_401(resp, "No API key found in request")


@pytest.mark.parametrize("accept,ctype,template", [
    ("text/plain", "text/plain; charset=utf-8", "{m}\nrequest_id: {rid}\n"),
    ("application/xml", "application/xml; charset=utf-8",
     '<?xml version="1.0" encoding="UTF-8"?>\n<error>\n  <message>{m}</message>\n'
     "  <requestid>{rid}</requestid>\n</error>\n"),
])
def test_401_body_follows_accept(dp, accept, ctype, template):
    resp = dp.get("/ka-default/x", headers={"Accept": accept})
    assert resp.status_code == 401 and resp.headers["WWW-Authenticate"] == "Key"
    assert resp.headers["Content-Type"] == ctype
    rid = resp.headers["X-Tollgate-Request-Id"]
    assert resp.text == template.format(m="No API key found in request", rid=rid)


def test_realm_in_www_authenticate_on_every_401(dp):
    www = 'Key realm="x"'
    assert_401(dp.get("/ka-realm/x"), "No API key found in request", www)
    assert_401(dp.get("/ka-realm/x", headers={"apikey": "nope"}), "Unauthorized", www)
    assert_401(dp.get("/ka-realm/x?apikey=a&apikey=b"), "Duplicate API key found", www)
    echo(dp.get("/ka-realm/x", headers={"apikey": "alice-key"}))


# ----------------------------------------------------------------------------------------- success

def test_key_in_header_sets_consumer_headers_upstream(dp):
    resp = dp.get("/ka-default/x", headers={"apikey": "alice-key"})
    doc = echo(resp)
    assert doc["path"] == "/x"
    h = assert_alice(doc)
    # without hide_credentials the key travels on
    assert h["apikey"] == ["alice-key"]
    assert "WWW-Authenticate" not in resp.headers
    # header names are case-insensitive
    assert_alice(echo(dp.get("/ka-default/x", headers={"APIKEY": "alice-key"})))
    # a consumer without custom_id gets no X-Consumer-Custom-ID
    assert_bob(echo(dp.get("/ka-default/x", headers={"apikey": "bob-key"})))


def test_key_in_query_is_kept_without_hide_credentials(dp):
    doc = echo(dp.get("/ka-default/x?a=1&apikey=bob-key&b=2"))
    assert_bob(doc)
    assert doc["query"] == "a=1&apikey=bob-key&b=2"


def test_query_key_names_are_case_sensitive(dp):
    assert_401(dp.get("/ka-default/x?APIKEY=alice-key"), "No API key found in request")


def test_bracketed_names_are_not_the_key(dp):
    assert_401(dp.get("/ka-default/x?apikey[]=alice-key"), "No API key found in request")
    assert_401(dp.get("/ka-default/x?apikey[1]=alice-key"), "No API key found in request")


# ------------------------------------------------------------------------ where and in which order

def test_first_key_name_wins_wherever_it_is(dp):
    # first_key in the query beats second-key in a header: names are tried in order, each in
    # header -> query -> body
    doc = echo(dp.get("/ka-multi/x?first_key=alice-key", headers={"second-key": "bob-key"}))
    assert_alice(doc)
    # first_key in the body beats second-key in a header
    doc = echo(dp.request("POST", "/ka-multi/x", data={"first_key": "alice-key"},
                          headers={"second-key": "bob-key"}))
    assert_alice(doc)
    # the second name is used when the first is nowhere
    assert_bob(echo(dp.get("/ka-multi/x", headers={"second-key": "bob-key"})))
    assert_bob(echo(dp.get("/ka-multi/x?second-key=bob-key")))


def test_header_then_query_then_body(dp):
    # header beats query and body
    doc = echo(dp.request("POST", "/ka-multi/x?first_key=bob-key", data={"first_key": "bob-key"},
                          headers={"first_key": "alice-key"}))
    assert_alice(doc)
    # query beats body
    doc = echo(dp.request("POST", "/ka-multi/x?first_key=alice-key",
                          data={"first_key": "bob-key"}))
    assert_alice(doc)
    # body when alone
    assert_bob(echo(dp.request("POST", "/ka-multi/x", data={"first_key": "bob-key"})))


def test_no_fallback_when_the_found_key_is_invalid(dp):
    # invalid in the header: the valid query key is not tried
    assert_401(dp.get("/ka-multi/x?first_key=alice-key", headers={"first_key": "wrong"}),
               "Unauthorized")
    # invalid first name: the valid second name is not tried
    assert_401(dp.get("/ka-multi/x", headers={"first_key": "wrong", "second-key": "bob-key"}),
               "Unauthorized")
    # invalid in the query: the valid body key is not tried
    assert_401(dp.request("POST", "/ka-multi/x?first_key=wrong", data={"first_key": "alice-key"}),
               "Unauthorized")


def test_underscore_and_dash_in_header_names_are_equivalent(dp):
    # key_names [api_key]: both spellings of the header authenticate
    assert_alice(echo(dp.get("/ka-underscore/x", headers={"api_key": "alice-key"})))
    assert_alice(echo(dp.get("/ka-underscore/x", headers={"api-key": "alice-key"})))
    assert_alice(echo(dp.get("/ka-underscore/x", headers={"API-Key": "alice-key"})))
    # key_names [second-key]: a second_key header is the same header
    assert_bob(echo(dp.get("/ka-multi/x", headers={"second_key": "bob-key"})))
    # query arguments are not headers: names must match exactly there
    assert_401(dp.get("/ka-underscore/x?api-key=alice-key"), "No API key found in request")


def test_key_in_header_false(dp):
    assert_401(dp.get("/ka-noheader/x", headers={"apikey": "alice-key"}),
               "No API key found in request")
    doc = echo(dp.get("/ka-noheader/x?apikey=alice-key"))
    assert_alice(doc)


def test_key_in_query_false(dp):
    assert_401(dp.get("/ka-noquery/x?apikey=alice-key"), "No API key found in request")
    # with the query off, an invalid query key does not shadow a valid header one
    assert_alice(echo(dp.get("/ka-noquery/x?apikey=wrong", headers={"apikey": "alice-key"})))


def test_key_in_body_false_by_default(dp):
    assert_401(dp.request("POST", "/ka-default/x", data={"apikey": "alice-key"}),
               "No API key found in request")
    assert_401(dp.request("POST", "/ka-default/x", json={"apikey": "alice-key"}),
               "No API key found in request")


# ------------------------------------------------------------------------------------------ bodies

def test_key_in_form_body(dp):
    doc = echo(dp.request("POST", "/ka-body/x", data=b"a=1&apikey=alice-key&b=2",
                          headers={"Content-Type": "application/x-www-form-urlencoded"}))
    assert_alice(doc)
    assert doc["body"] == "a=1&apikey=alice-key&b=2"  # not hidden: untouched


def test_key_in_json_body(dp):
    body = b'{"a": 1, "apikey": "alice-key", "b": "two"}'
    doc = echo(dp.request("POST", "/ka-body/x", data=body,
                          headers={"Content-Type": "application/json"}))
    assert_alice(doc)
    assert doc["body"] == body.decode()
    # the content type may carry parameters
    doc = echo(dp.request("POST", "/ka-body/x", data=b'{"apikey": "bob-key"}',
                          headers={"Content-Type": "application/json; charset=utf-8"}))
    assert_bob(doc)


def test_key_in_multipart_body(dp):
    body, headers = multipart([("a", "1"), ("apikey", "bob-key"), ("b", "2")])
    doc = echo(dp.request("POST", "/ka-body/x", data=body, headers=headers))
    assert_bob(doc)
    assert doc["body"] == body.decode()


@pytest.mark.parametrize("content_type,body", [
    ("text/plain", b"apikey=alice-key"),
    ("application/json", b'{"apikey": "alice-key"'),
    ("application/json", b'["alice-key"]'),
    ("multipart/form-data; boundary=zz", b"apikey=alice-key"),
])
def test_unreadable_body_is_no_key(dp, content_type, body):
    resp = dp.request("POST", "/ka-body/x", data=body, headers={"Content-Type": content_type})
    assert_401(resp, "No API key found in request")


def test_non_string_json_key_is_not_a_key(dp):
    assert_401(dp.request("POST", "/ka-body/x", json={"apikey": 12345}),
               "No API key found in request")


@pytest.mark.parametrize("how", ["header", "query", "form", "json", "multipart"])
def test_duplicate_keys_are_refused(dp, how):
    route = "/ka-body/x"
    if how == "header":
        data = dp.raw(b"GET /ka-body/x HTTP/1.1\r\nHost: t\r\napikey: alice-key\r\n"
                      b"apikey: bob-key\r\nConnection: close\r\n\r\n")
        status, headers, body = raw_response(data)
        assert status == 401 and headers["www-authenticate"] == "Key"
        assert json.loads(body)["message"] == "Duplicate API key found"
        return
    if how == "query":
        resp = dp.get(route + "?apikey=alice-key&apikey=alice-key")
    elif how == "form":
        resp = dp.request("POST", route, data=b"apikey=alice-key&apikey=bob-key",
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
    elif how == "json":
        resp = dp.request("POST", route, json={"apikey": ["alice-key", "bob-key"]})
    else:
        body, headers = multipart([("apikey", "alice-key"), ("apikey", "alice-key")])
        resp = dp.request("POST", route, data=body, headers=headers)
    assert_401(resp, "Duplicate API key found")


# -------------------------------------------------------------------------------- hide_credentials

def test_hide_credentials_in_header(dp):
    doc = echo(dp.get("/ka-hide/x", headers={"apikey": "alice-key", "X-Other": "kept"}))
    h = assert_alice(doc)
    assert "apikey" not in h
    assert h["x-other"] == ["kept"]


def test_hide_credentials_in_query_keeps_other_args_in_order(dp):
    doc = echo(dp.get("/ka-hide/x?z=1&apikey=alice-key&a=2&m=3"))
    assert_alice(doc)
    assert doc["path"] == "/x?z=1&a=2&m=3"
    # a percent-encoded name is the same argument
    doc = echo(dp.get("/ka-hide/x?z=1&api%6B%65%79=alice-key&a=2"))
    assert_alice(doc)
    assert doc["query"] == "z=1&a=2"
    # the key was the only argument
    doc = echo(dp.get("/ka-hide/x?apikey=bob-key"))
    assert_bob(doc)
    assert "apikey" not in doc["path"]


def test_hide_credentials_in_form_body(dp):
    doc = echo(dp.request("POST", "/ka-body-hide/x", data=b"a=1&apikey=alice-key&b=2",
                          headers={"Content-Type": "application/x-www-form-urlencoded"}))
    assert_alice(doc)
    assert parse_qsl(doc["body"]) == [("a", "1"), ("b", "2")]
    assert doc["body_len"] == len(doc["body"].encode())
    assert upstream_headers(doc)["content-type"] == ["application/x-www-form-urlencoded"]


def test_hide_credentials_in_json_body(dp):
    doc = echo(dp.request("POST", "/ka-body-hide/x",
                          json={"a": 1, "apikey": "alice-key", "nested": {"b": [1, 2]}}))
    assert_alice(doc)
    assert json.loads(doc["body"]) == {"a": 1, "nested": {"b": [1, 2]}}
    assert doc["body_len"] == len(doc["body"].encode())
    assert upstream_headers(doc)["content-type"][0].startswith("application/json")


def test_hide_credentials_in_multipart_body(dp):
    body, headers = multipart([("a", "1"), ("apikey", "alice-key"), ("b", "two")])
    doc = echo(dp.request("POST", "/ka-body-hide/x", data=body, headers=headers))
    assert_alice(doc)
    ctype = upstream_headers(doc)["content-type"][0]
    assert ctype.startswith("multipart/form-data")
    assert multipart_fields(doc["body"], ctype) == [("a", "1"), ("b", "two")]
    assert doc["body_len"] == len(doc["body"].encode())


def test_hide_credentials_with_key_in_body_also_hides_header_and_query(dp):
    doc = echo(dp.request("POST", "/ka-body-hide/x?q=1&apikey=alice-key", data=b"n=1",
                          headers={"Content-Type": "application/x-www-form-urlencoded"}))
    assert_alice(doc)
    assert doc["query"] == "q=1" and doc["body"] == "n=1"
    doc = echo(dp.request("POST", "/ka-body-hide/x", data=b"n=2",
                          headers={"apikey": "bob-key",
                                   "Content-Type": "application/x-www-form-urlencoded"}))
    assert_bob(doc)
    assert "apikey" not in upstream_headers(doc) and doc["body"] == "n=2"


# -------------------------------------------------------------------------------- consumer headers

def test_spoofed_consumer_headers_are_replaced(dp):
    spoofed = {"X-Consumer-ID": "evil", "X-Consumer-Custom-ID": "evil",
               "X-Consumer-Username": "evil", "X-Credential-Identifier": "evil",
               "X-Anonymous-Consumer": "true"}
    doc = echo(dp.get("/ka-default/x", headers={"apikey": "bob-key", **spoofed}))
    assert_bob(doc)  # one value each, bob's; no custom id, no anonymous flag
    doc = echo(dp.get("/ka-default/x", headers={"apikey": "alice-key", **spoofed}))
    assert_alice(doc)


# --------------------------------------------------------------------------------------- anonymous

@pytest.mark.parametrize("route", ["/ka-anon-id", "/ka-anon-name"])
def test_anonymous_consumer(dp, route):
    assert_anon(echo(dp.get(route + "/x")))  # no key
    assert_anon(echo(dp.get(route + "/x", headers={"apikey": "wrong"})))  # invalid key
    assert_anon(echo(dp.get(route + "/x?apikey=a&apikey=b")))  # duplicate key
    # spoofed identity headers do not survive the anonymous fallback
    doc = echo(dp.get(route + "/x", headers={"X-Credential-Identifier": "evil",
                                              "X-Consumer-Custom-ID": "evil",
                                              "X-Consumer-ID": "evil"}))
    assert_anon(doc)
    # a valid key is still the key's consumer, without the anonymous flag
    doc = echo(dp.get(route + "/x", headers={"apikey": "alice-key",
                                              "X-Anonymous-Consumer": "true"}))
    assert_alice(doc)


def test_missing_anonymous_consumer_is_500(dp):
    resp = dp.get("/ka-anon-missing/x")
    assert_kong_error(resp, 500, "anonymous consumer ghost is configured but doesn't exist")
    assert "WWW-Authenticate" not in resp.headers
    assert_kong_error(dp.get("/ka-anon-missing/x", headers={"apikey": "wrong"}), 500,
                      "anonymous consumer ghost is configured but doesn't exist")
    # a valid key never needs the anonymous consumer
    assert_alice(echo(dp.get("/ka-anon-missing/x", headers={"apikey": "alice-key"})))


# --------------------------------------------------------------------------------------- preflight

def test_run_on_preflight_false_lets_options_through(dp):
    doc = echo(dp.request("OPTIONS", "/ka-preflight/x",
                          headers={"Origin": "http://a.example",
                                   "Access-Control-Request-Method": "GET"}))
    assert doc["method"] == "OPTIONS"
    h = upstream_headers(doc)
    assert "x-consumer-id" not in h and "x-anonymous-consumer" not in h
    # other methods still need a key
    assert_401(dp.get("/ka-preflight/x"), "No API key found in request")
    assert_alice(echo(dp.get("/ka-preflight/x", headers={"apikey": "alice-key"})))


def test_options_is_authenticated_by_default(dp):
    assert_401(dp.request("OPTIONS", "/ka-default/x"), "No API key found in request")


# ------------------------------------------------------------------------------------ ttl, reloads

TTL_CONSUMER = """consumers:
- username: temp
  keyauth_credentials:
  - key: temp-key
    ttl: 5
"""


def test_credential_ttl_is_refused_in_declarative_config(dp_factory, upstream):
    """Tollgate refuses `ttl` on a declarative credential rather than dropping it (a key
    meant to expire would live forever): at start the DP exits, on reload the old config
    stays."""
    bad = dp_factory(config(upstream.port, TTL_CONSUMER), name="dp-ka-ttl", start=False)
    bad.process.start()
    wait_for(lambda: not bad.process.running(), 15, what="the DP to exit")
    assert bad.process.stop() != 0
    log = bad.log_text()
    assert "keyauth_credentials" in log and "ttl" in log, log[-2000:]
    assert "not supported in a declarative configuration" in log

    good = dp_factory(config(upstream.port), name="dp-ka-ttl-reload")
    v = good.config_version()
    mark = good.process.log_size()
    with_ttl = CONSUMERS + TTL_CONSUMER[len("consumers:\n"):]
    write_yaml(good.config_path, config(upstream.port, with_ttl))
    good.reload()
    wait_for(lambda: "reload refused" in good.log_text()[mark:], 10, what="the refusal")
    assert "not supported in a declarative configuration" in good.log_text()[mark:]
    assert good.config_version() == v
    assert_401(good.get("/ka-default/x", headers={"apikey": "temp-key"}), "Unauthorized")
    assert_alice(echo(good.get("/ka-default/x", headers={"apikey": "alice-key"})))


def test_reload_revokes_removed_key_and_adds_new_one(dp_factory, upstream):
    """DB-less: a key removed from the file stops working at the next reload (Kong issue
    #5705), a new key starts working."""
    d = dp_factory(config(upstream.port), name="dp-ka-reload")
    v = d.config_version()
    assert_bob(echo(d.get("/ka-default/x", headers={"apikey": "bob-key"})))
    new_key = uuid.uuid4().hex
    changed = CONSUMERS.replace("key: bob-key", f"key: {new_key}")
    write_yaml(d.config_path, config(upstream.port, changed))
    d.reload(expect_version=v + 1)
    assert_401(d.get("/ka-default/x", headers={"apikey": "bob-key"}), "Unauthorized")
    assert_bob(echo(d.get("/ka-default/x", headers={"apikey": new_key})))
