"""Bad input to the Admin API (kong-compat.md §1.1-§1.4): every bad request gets Kong's error
body and a 4xx, nothing is written (entity lists, /status config_version, the change log and
the entity tables in PostgreSQL are unchanged), and the CP keeps serving."""
import contextlib
import json
import socket
import time
import uuid

import pytest

from admin_state import (assert_cp_alive, assert_kong_error, assert_nothing_written, connect,
                         json_body, port_of, raw_request, read_response, send_until_answered,
                         state_snapshot)

# Bad input is where memory errors hide: also run against the ASan/UBSan build.
pytestmark = pytest.mark.asan

JSON = {"Content-Type": "application/json"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
CANNOT_PARSE = "Cannot parse JSON body"
AT_LEAST_ONE = "at least one of these fields must be non-empty: 'custom_id', 'username'"


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def seed(cp, admin):
    """Entities the cases collide with: consumers bob and carol (custom_id c-1), bob's key,
    service svc, route r1 on it, key-auth on r1."""
    def create(path, body):
        r = admin.post(path, json=body)
        assert r.status_code == 201, f"seed POST {path} {body}: {r.status_code} {r.text}"
        return r.json()

    bob = create("/consumers", {"username": "bob"})
    carol = create("/consumers", {"username": "carol", "custom_id": "c-1"})
    key = create("/consumers/bob/key-auth", {"key": "bob-key"})
    svc = create("/services", {"name": "svc", "host": "example.com"})
    route = create("/services/svc/routes", {"name": "r1", "paths": ["/r1"]})
    plugin = create("/plugins", {"name": "key-auth", "route": {"id": route["id"]}})
    return {"bob": bob, "carol": carol, "key": key, "svc": svc, "route": route,
            "plugin": plugin}


@pytest.fixture
def unchanged(cp, admin, pg_server, seed):
    """Context manager: asserts that nothing was written inside it and the CP is fine after."""
    @contextlib.contextmanager
    def guard(what=""):
        before = state_snapshot(admin, pg_server, cp.database)
        yield
        assert_cp_alive(cp, admin)
        after = state_snapshot(admin, pg_server, cp.database)
        assert_nothing_written(before, after, what)
    return guard


def http_head(method, path, headers=(), body=b"", content_length=None):
    """Raw request bytes: start line, Host, given header lines, Content-Length unless None."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"] + list(headers)
    if content_length is not None:
        lines.append(f"Content-Length: {content_length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


# ----------------------------------------------------------------------------- malformed JSON

MALFORMED_JSON = {
    "truncated": b'{"username": "trunc',
    "truncated-object": b'{"username": "trunc1"',
    "trailing-garbage": b'{"username": "trail"} garbage',
    "two-objects": b'{"username": "two1"}{"username": "two2"}',
    "array": b"[]",
    "array-of-object": b'[{"username": "arr"}]',
    "string": b'"x"',
    "number": b"123",
    "null": b"null",
    "true": b"true",
    "empty": b"",
    "whitespace": b"   \n",
    "invalid-utf8": b'{"username": "\xff\xfe"}',
    "invalid-utf8-key": b'{"user\xc3name": "utf"}',
    "overlong-utf8": b'{"username": "\xc0\xaf"}',
    "single-quotes": b"{'username': 'single'}",
    "unquoted-key": b'{username: "unq"}',
    "trailing-comma": b'{"username": "comma",}',
    "nan": b'{"username": "nan", "tags": NaN}',
    "deep-nesting": b'{"username": "deep", "tags": ' + b"[" * 100000 + b"]" * 100000 + b"}",
    "unterminated-deep": b'{"a":' * 50000,
    "bare-control-char": b'{"username": "a\x01b"}',
    "raw-nul": b'{"username": "a\x00b"}',
    "nul-after-object": b'{"username": "nulafter"}\x00',
}


@pytest.mark.parametrize("body", MALFORMED_JSON.values(), ids=MALFORMED_JSON.keys())
@pytest.mark.parametrize("method,path", [("POST", "/consumers"), ("PUT", "/consumers/newbie"),
                                         ("PATCH", "/consumers/bob")])
def test_malformed_json_is_400_cannot_parse(admin, unchanged, method, path, body):
    with unchanged(f"{method} {path}"):
        r = admin.request(method, path, data=body, headers=JSON)
        assert_kong_error(r, 400, message=CANNOT_PARSE)
        assert set(r.json()) == {"message"}, r.json()


def test_json_content_type_with_charset_and_bad_body(admin, unchanged):
    with unchanged():
        r = admin.post("/services", data=b'{"host": ', headers={
            "Content-Type": "application/json; charset=utf-8"})
        assert_kong_error(r, 400, message=CANNOT_PARSE)


def test_nested_malformed_json_on_child_endpoints(admin, unchanged):
    with unchanged():
        for method, path in [("POST", "/consumers/bob/key-auth"), ("POST", "/key-auths"),
                             ("POST", "/services/svc/routes"), ("POST", "/routes/r1/plugins"),
                             ("PATCH", "/routes/r1"), ("PUT", "/services/svc"),
                             ("PATCH", "/routes/r1/service")]:
            r = admin.request(method, path, data=b"[1, 2", headers=JSON)
            assert_kong_error(r, 400, message=CANNOT_PARSE)


# ----------------------------------------------------------------------------- schema violations

def schema_violation(field_path, err):
    """Kong's body for one field error at a dotted path."""
    fields = err
    for part in reversed(field_path.split(".")):
        fields = {part: fields}
    return {"code": 2, "name": "schema violation",
            "message": f"schema violation ({field_path}: {err})", "fields": fields}


SCHEMA_CASES = {
    "username-number": ("POST", "/consumers", {"username": 123},
                        schema_violation("username", "expected a string")),
    "username-object": ("POST", "/consumers", {"username": {"a": 1}},
                        schema_violation("username", "expected a string")),
    "custom_id-bool": ("POST", "/consumers", {"username": "t1", "custom_id": True},
                       schema_violation("custom_id", "expected a string")),
    "retries-string": ("POST", "/services", {"host": "example.com", "retries": "x"},
                       schema_violation("retries", "expected an integer")),
    "retries-float": ("POST", "/services", {"host": "example.com", "retries": 1.5},
                      schema_violation("retries", "expected an integer")),
    "port-too-big": ("POST", "/services", {"host": "example.com", "port": 70000},
                     schema_violation("port", "value should be between 0 and 65535")),
    "port-negative": ("POST", "/services", {"host": "example.com", "port": -1},
                      schema_violation("port", "value should be between 0 and 65535")),
    "tags-string": ("POST", "/consumers", {"username": "t2", "tags": "x"},
                    schema_violation("tags", "expected a set")),
    "tags-object": ("POST", "/consumers", {"username": "t3", "tags": {"a": "b"}},
                    schema_violation("tags", "expected a set")),
    "unknown-field": ("POST", "/consumers", {"username": "t4", "bogus": 1},
                      schema_violation("bogus", "unknown field")),
    "unknown-field-service": ("POST", "/services", {"host": "example.com", "nope": "x"},
                              schema_violation("nope", "unknown field")),
    "key-auth-without-consumer": ("POST", "/key-auths", {"key": "orphan"},
                                  schema_violation("consumer", "required field missing")),
    "service-without-host": ("POST", "/services", {"name": "nohost"},
                             schema_violation("host", "required field missing")),
    "fk-invalid-uuid-route": ("POST", "/routes", {"paths": ["/x"],
                                                  "service": {"id": "not-a-uuid"}},
                              schema_violation("service.id", "expected a valid UUID")),
    "fk-invalid-uuid-key": ("POST", "/key-auths", {"consumer": {"id": "not-a-uuid"}},
                            schema_violation("consumer.id", "expected a valid UUID")),
    "fk-invalid-uuid-plugin": ("POST", "/plugins", {"name": "key-auth",
                                                    "service": {"id": "not-a-uuid"}},
                               schema_violation("service.id", "expected a valid UUID")),
    "patch-username-number": ("PATCH", "/consumers/bob", {"username": 123},
                              schema_violation("username", "expected a string")),
    "patch-port-too-big": ("PATCH", "/services/svc", {"port": 70000},
                           schema_violation("port", "value should be between 0 and 65535")),
    "put-retries-string": ("PUT", "/services/svc", {"host": "example.com", "retries": "x"},
                           schema_violation("retries", "expected an integer")),
    "put-unknown-field": ("PUT", "/consumers/bob", {"bogus": True},
                          schema_violation("bogus", "unknown field")),
}


@pytest.mark.parametrize("method,path,body,expected", SCHEMA_CASES.values(),
                         ids=SCHEMA_CASES.keys())
def test_schema_violation(admin, unchanged, method, path, body, expected):
    with unchanged(f"{method} {path} {body}"):
        r = admin.request(method, path, json=body)
        got = assert_kong_error(r, 400, code=2, name="schema violation",
                                fields=expected["fields"])
        assert got["message"] == expected["message"], got


def test_consumer_without_username_or_custom_id(admin, unchanged):
    with unchanged():
        for body in ({}, {"tags": ["a"]}, {"username": None, "custom_id": None}):
            r = admin.post("/consumers", json=body)
            got = assert_kong_error(r, 400, code=2, name="schema violation",
                                    fields={"@entity": [AT_LEAST_ONE]})
            assert got["message"] == f"schema violation ({AT_LEAST_ONE})", got


def test_consumer_form_with_empty_username(admin, unchanged):
    """Form values: empty string -> null, so the entity check fires."""
    with unchanged():
        r = admin.post("/consumers", data="username=", headers=FORM)
        assert_kong_error(r, 400, code=2, fields={"@entity": [AT_LEAST_ONE]})


def test_form_wrong_type(admin, unchanged):
    with unchanged():
        r = admin.post("/services", data="host=example.com&port=abc", headers=FORM)
        assert_kong_error(r, 400, code=2, fields={"port": "expected an integer"})


def test_one_megabyte_username(admin, unchanged):
    with unchanged():
        r = admin.post("/consumers", json={"username": "u" * (1024 * 1024)})
        got = assert_kong_error(r, 400, code=2, name="schema violation",
                                fields={"username": "length must be at most 65536"})
        assert got["message"] == "schema violation (username: length must be at most 65536)"


def test_ten_thousand_tags(admin, unchanged):
    with unchanged():
        r = admin.post("/consumers", json={"username": "tagged",
                                           "tags": [f"t{i}" for i in range(10000)]})
        got = assert_kong_error(r, 400, code=2, name="schema violation",
                                fields={"tags": "length must be at most 1000"})
        assert got["message"] == "schema violation (tags: length must be at most 1000)"


def test_invalid_tag(admin, unchanged):
    with unchanged():
        r = admin.post("/consumers", json={"username": "badtag", "tags": ["a,b"]})
        assert_kong_error(r, 400, code=2, message_contains="invalid tag 'a,b'")


def test_nul_in_json_string_is_a_client_error(admin, unchanged):
    """PostgreSQL cannot store U+0000 in text/jsonb; that is the client's problem (4xx), never
    a 500."""
    with unchanged():
        r = admin.post("/consumers", data=b'{"username": "nul\\u0000byte"}', headers=JSON)
        assert 400 <= r.status_code < 500, f"{r.status_code} {r.text[:300]}"
        json_body(r)


def test_lone_surrogate_in_json(admin, unchanged):
    with unchanged():
        r = admin.post("/consumers", data=b'{"username": "\\ud800"}', headers=JSON)
        assert 400 <= r.status_code < 500, f"{r.status_code} {r.text[:300]}"
        json_body(r)


def test_huge_number(admin, unchanged):
    with unchanged():
        r = admin.post("/services", data=b'{"host": "example.com", "retries": 1e400}',
                       headers=JSON)
        assert r.status_code == 400, f"{r.status_code} {r.text[:300]}"
        json_body(r)


def test_unknown_plugin(admin, unchanged):
    with unchanged():
        r = admin.post("/plugins", json={"name": "no-such-plugin"})
        assert_kong_error(r, 400, code=2,
                          message_contains="plugin 'no-such-plugin' not enabled")


def test_key_auth_cannot_be_consumer_scoped(admin, unchanged, seed):
    with unchanged():
        r = admin.post("/plugins", json={"name": "key-auth",
                                         "consumer": {"id": seed["bob"]["id"]}})
        assert_kong_error(r, 400, code=2, message_contains="consumer")


def test_foreign_key_to_missing_entity(admin, unchanged):
    missing = str(uuid.uuid4())
    with unchanged():
        r = admin.post("/routes", json={"paths": ["/fk"], "service": {"id": missing}})
        assert_kong_error(
            r, 400, code=4, name="foreign key violation",
            message=f"the foreign key '{{id=\"{missing}\"}}' does not reference an existing "
                    "'services' entity.")
        r = admin.post("/key-auths", json={"consumer": {"id": missing}})
        assert_kong_error(r, 400, code=4, name="foreign key violation")


def test_nested_post_to_missing_parent(admin, unchanged):
    with unchanged():
        for path, body in [("/consumers/nobody/key-auth", {}),
                           (f"/consumers/{uuid.uuid4()}/key-auth", {"key": "k"}),
                           ("/services/nosvc/routes", {"paths": ["/n"]}),
                           ("/routes/noroute/plugins", {"name": "key-auth"})]:
            r = admin.post(path, json=body)
            assert_kong_error(r, 404, message="Not found")


# ----------------------------------------------------------------------------- uniqueness

def test_duplicate_username_is_409(admin, unchanged, seed):
    with unchanged():
        for r in (admin.post("/consumers", json={"username": "bob"}),
                  admin.post("/consumers", data="username=bob", headers=FORM)):
            assert_kong_error(r, 409, code=5, name="unique constraint violation",
                              message="UNIQUE violation detected on '{username=\"bob\"}'",
                              fields={"username": "bob"})


def test_duplicate_username_by_patch_is_409(admin, unchanged):
    with unchanged():
        r = admin.patch("/consumers/carol", json={"username": "bob"})
        assert_kong_error(r, 409, code=5,
                          message="UNIQUE violation detected on '{username=\"bob\"}'")


def test_duplicate_custom_id_is_409(admin, unchanged):
    with unchanged():
        r = admin.post("/consumers", json={"username": "dave", "custom_id": "c-1"})
        assert_kong_error(r, 409, code=5, name="unique constraint violation",
                          message="UNIQUE violation detected on '{custom_id=\"c-1\"}'",
                          fields={"custom_id": "c-1"})


def test_duplicate_service_name_is_409(admin, unchanged):
    with unchanged():
        r = admin.post("/services", json={"name": "svc", "host": "example.org"})
        assert_kong_error(r, 409, code=5, message="UNIQUE violation detected on '{name=\"svc\"}'")


def test_duplicate_key_is_409(admin, unchanged, seed):
    with unchanged():
        r = admin.post("/key-auths", json={"consumer": {"id": seed["carol"]["id"]},
                                           "key": "bob-key"})
        assert_kong_error(r, 409, code=5, name="unique constraint violation",
                          message="UNIQUE violation detected on '{key=\"bob-key\"}'")
        r = admin.post("/consumers/carol/key-auth", json={"key": "bob-key"})
        assert_kong_error(r, 409, code=5,
                          message="UNIQUE violation detected on '{key=\"bob-key\"}'")


def test_duplicate_plugin_on_same_scope_is_409(admin, unchanged, seed):
    rid = seed["route"]["id"]
    message = ("UNIQUE violation detected on "
               f"'{{consumer=null,name=\"key-auth\",route={{id=\"{rid}\"}},service=null}}'")
    with unchanged():
        for path, body in [("/plugins", {"name": "key-auth", "route": {"id": rid}}),
                           ("/routes/r1/plugins", {"name": "key-auth"}),
                           (f"/routes/{rid}/plugins", {"name": "key-auth",
                                                       "config": {"key_names": ["k"]}})]:
            r = admin.post(path, json=body)
            assert_kong_error(r, 409, code=5, name="unique constraint violation",
                              message=message,
                              fields={"consumer": None, "name": "key-auth",
                                      "route": {"id": rid}, "service": None})


# ----------------------------------------------------------------------------- methods, paths

@pytest.mark.parametrize("method,path", [
    ("DELETE", "/consumers"), ("PATCH", "/consumers"), ("PUT", "/consumers"),
    ("DELETE", "/services"), ("PATCH", "/key-auths"), ("DELETE", "/plugins"),
    ("POST", "/consumers/bob"), ("DELETE", "/routes/r1/service"),
    ("DELETE", "/consumers/bob/key-auth"),
])
def test_unsupported_method_is_405(admin, unchanged, method, path):
    with unchanged(f"{method} {path}"):
        r = admin.request(method, path, json={"username": "via-405"})
        assert_kong_error(r, 405, message="Method not allowed")
        assert r.json() == {"message": "Method not allowed"}


@pytest.mark.parametrize("method,path", [
    ("GET", "/nope"), ("POST", "/nope"), ("PUT", "/nope/x"), ("DELETE", "/nope/x"),
    ("POST", "/consumers/bob/nope"), ("PATCH", "/consumers/bob/key-auth/x/y"),
    ("DELETE", "/consumers/bob/key-auth/x/y/z/w/v/u"), ("POST", "/consumerss"),
    ("PATCH", "/consumers/nobody-here"), ("GET", "/consumers/nobody-here"),
    ("PATCH", f"/consumers/{uuid.UUID(int=0)}"),
])
def test_unknown_path_is_404(admin, unchanged, method, path):
    with unchanged(f"{method} {path}"):
        r = admin.request(method, path, json={"username": "via-404"})
        assert_kong_error(r, 404, message="Not found")
        assert r.json() == {"message": "Not found"}


def test_delete_of_missing_entity_writes_nothing(admin, unchanged):
    """Top-level DELETE is idempotent (204) and a write that changes nothing has no version."""
    with unchanged():
        for path in ("/consumers/nobody-here", f"/consumers/{uuid.uuid4()}",
                     f"/key-auths/{uuid.uuid4()}", "/services/nosvc"):
            r = admin.delete(path)
            assert r.status_code == 204, f"DELETE {path}: {r.status_code} {r.text[:200]}"


# ----------------------------------------------------------------------------- content types

@pytest.mark.parametrize("ctype", ["text/plain", "application/xml", "application/jsonx",
                                   "image/png", "text/json"])
def test_unsupported_content_type_is_415(admin, unchanged, ctype):
    with unchanged(ctype):
        r = admin.post("/consumers", data=b'{"username": "ctype"}', headers={"Content-Type": ctype})
        assert r.status_code == 415, f"{r.status_code} {r.text[:300]}"
        if r.content:
            json_body(r)


def test_two_content_type_headers_is_400(cp, unchanged):
    body = b'{"username": "twoct"}'
    with unchanged():
        for cts in (["application/json", "application/json"],
                    ["application/json", "application/x-www-form-urlencoded"]):
            r = raw_request(port_of(cp.admin_url), http_head(
                "POST", "/consumers", [f"Content-Type: {c}" for c in cts], body, len(body)))
            assert r is not None, "closed without a response"
            assert_kong_error(r, 400, message="Multiple Content-Type headers not allowed")


@pytest.mark.parametrize("body", [b"username=%zz", b"username=%", b"username=%4",
                                  b"username=ok%zz&custom_id=x", b"%zz=bob"],
                         ids=["pct-zz", "pct-alone", "pct-short", "second-value", "in-key"])
def test_garbage_form_encoding_is_400(admin, unchanged, body):
    with unchanged(body.decode()):
        r = admin.post("/consumers", data=body, headers=FORM)
        assert r.status_code == 400, f"{r.status_code} {r.text[:300]}"
        json_body(r)


def test_garbage_query_string_on_write_is_400(cp, unchanged):
    """(Raw socket: `requests` would re-quote %zz as %25zz.)"""
    body = b'{"username": "query-garbage"}'
    with unchanged():
        r = raw_request(port_of(cp.admin_url), http_head(
            "POST", "/consumers?x=%zz", ["Content-Type: application/json"], body, len(body)))
        assert r is not None and r.status_code == 400, r and (r.status_code, r.text)
        json_body(r)


@pytest.mark.parametrize("body", [
    b"garbage without any boundary",
    b"--xyz\r\nContent-Disposition: form-data; name=\"username\"\r\n\r\nmp",  # no close
    b"--xyz\r\nno-disposition\r\n\r\nmp\r\n--xyz--\r\n",
])
def test_garbage_multipart_is_400(admin, unchanged, body):
    with unchanged():
        r = admin.post("/consumers", data=body,
                       headers={"Content-Type": "multipart/form-data; boundary=xyz"})
        assert r.status_code == 400, f"{r.status_code} {r.text[:300]}"
        json_body(r)


def test_nul_in_path_is_400(cp, unchanged):
    with unchanged():
        for method in ("DELETE", "PUT", "PATCH"):
            body = b'{"username": "nulpath"}'
            r = raw_request(port_of(cp.admin_url), http_head(
                method, "/consumers/a%00b", ["Content-Type: application/json"], body, len(body)))
            assert r is not None and r.status_code == 400, r and r.status_code
            json_body(r)


# ----------------------------------------------------------------------------- body size

BIG = 11 * 1024 * 1024


def test_body_above_limit_is_413(cp, unchanged):
    port = port_of(cp.admin_url)
    body = b'{"username": "big", "tags": ["' + b"x" * (BIG - 40) + b'"]}'
    with unchanged():
        with contextlib.closing(connect(port, 60)) as s:
            s.sendall(http_head("POST", "/consumers", ["Content-Type: application/json"],
                                content_length=len(body)))
            send_until_answered(s, body)
            r = read_response(s, 60)
        assert r is not None, "closed without a response"
        assert_kong_error(r, 413, message="Payload too large")


def test_chunked_body_above_limit_is_413(cp, unchanged):
    port = port_of(cp.admin_url)
    piece = b"x" * (1024 * 1024)
    chunked = (b"%x\r\n" % len(piece) + piece + b"\r\n") * 12 + b"0\r\n\r\n"
    with unchanged():
        with contextlib.closing(connect(port, 60)) as s:
            s.sendall(http_head("POST", "/consumers", ["Content-Type: application/json",
                                                       "Transfer-Encoding: chunked"]))
            send_until_answered(s, chunked)
            r = read_response(s, 60)
        assert r is not None, "closed without a response"
        assert_kong_error(r, 413, message="Payload too large")


def test_declared_huge_chunk_is_413(cp, unchanged):
    with unchanged():
        r = raw_request(port_of(cp.admin_url), http_head(
            "POST", "/consumers", ["Content-Type: application/json",
                                   "Transfer-Encoding: chunked"]) + b"ffffffff\r\n{")
        assert r is not None and r.status_code == 413, r and (r.status_code, r.text)


def test_body_just_below_limit_is_parsed_not_refused(admin, unchanged):
    """A body under admin_body_max is read and validated (here: a schema violation)."""
    with unchanged():
        r = admin.post("/consumers", json={"username": "v" * (9 * 1024 * 1024)})
        assert_kong_error(r, 400, code=2, fields={"username": "length must be at most 65536"})


# ----------------------------------------------------------------------------- cut-off requests

def test_request_cut_off_mid_body(cp, admin, unchanged):
    port = port_of(cp.admin_url)
    body = json.dumps({"username": "cutoff"}).encode().ljust(1000)
    with unchanged():
        for n in (0, 10, 999):
            with contextlib.closing(connect(port)) as s:
                s.sendall(http_head("POST", "/consumers", ["Content-Type: application/json"],
                                    body[:n], 1000))
        # And with a reset instead of an orderly close.
        s = connect(port)
        s.sendall(http_head("POST", "/consumers", ["Content-Type: application/json"],
                            body[:10], 1000))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()
        # A chunked body that stops mid-chunk.
        with contextlib.closing(connect(port)) as s:
            s.sendall(http_head("POST", "/consumers", ["Content-Type: application/json",
                                                       "Transfer-Encoding: chunked"])
                      + b"3e8\r\n" + body[:10])
        # A head that stops half way.
        with contextlib.closing(connect(port)) as s:
            s.sendall(b"POST /consumers HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty")


def test_stalled_request_does_not_block_others(cp, admin, unchanged):
    """A client that stops sending mid-body holds only its own connection."""
    port = port_of(cp.admin_url)
    stalled = []
    with unchanged():
        try:
            for _ in range(16):  # more stalled connections than worker threads
                s = connect(port)
                s.sendall(http_head("POST", "/consumers", ["Content-Type: application/json"],
                                    b'{"username"', 1000))
                stalled.append(s)
            s = connect(port)
            s.sendall(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Len")
            stalled.append(s)
            t0 = time.monotonic()
            for _ in range(5):
                r = admin.get("/consumers", timeout=30)
                assert r.status_code == 200
            assert time.monotonic() - t0 < 25, "other clients were held up by stalled requests"
        finally:
            for s in stalled:
                s.close()


# ----------------------------------------------------------------------------- malformed HTTP

VALID = b'{"username": "smuggled"}'
MALFORMED_HTTP = {
    "bad-request-line": (b"GARBAGE\r\n\r\n", (400,)),
    "bad-request-line-spaces": (b"POST  /consumers  HTTP/1.1\r\nHost: x\r\n\r\n", (400,)),
    "no-version": (b"POST /consumers\r\nHost: x\r\n\r\n", (400,)),
    "bad-method-chars": (b"PO(ST /consumers HTTP/1.1\r\nHost: x\r\n\r\n", (400,)),
    "header-without-colon": (b"POST /consumers HTTP/1.1\r\nHost: x\r\nContent-Type "
                             b"application/json\r\nContent-Length: %d\r\n\r\n" % len(VALID)
                             + VALID, (400,)),
    "space-before-colon": (b"POST /consumers HTTP/1.1\r\nHost: x\r\nContent-Type : "
                           b"application/json\r\nContent-Length: %d\r\n\r\n" % len(VALID)
                           + VALID, (400,)),
    "nul-in-header-value": (b"POST /consumers HTTP/1.1\r\nHost: x\r\nContent-Type: "
                            b"application/json\r\nX-A: a\x00b\r\nContent-Length: %d\r\n\r\n"
                            % len(VALID) + VALID, (400,)),
    "nul-in-header-name": (b"POST /consumers HTTP/1.1\r\nHost: x\r\nX-\x00A: b\r\n"
                           b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                           % len(VALID) + VALID, (400,)),
    "nul-in-request-line": (b"POST /consu\x00mers HTTP/1.1\r\nHost: x\r\nContent-Type: "
                            b"application/json\r\nContent-Length: %d\r\n\r\n" % len(VALID)
                            + VALID, (400,)),
    "huge-header-100k": (b"POST /consumers HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100000
                         + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                         % len(VALID) + VALID, (431, 400)),
    "many-headers": (b"POST /consumers HTTP/1.1\r\nHost: x\r\n"
                     + b"".join(b"X-H%d: v\r\n" % i for i in range(500))
                     + b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                     % len(VALID) + VALID, (431, 400)),
    "huge-uri": (b"POST /consumers?" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n"
                 b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(VALID)
                 + VALID, (414, 400)),
    "bad-content-length": (b"POST /consumers HTTP/1.1\r\nHost: x\r\nContent-Type: "
                           b"application/json\r\nContent-Length: abc\r\n\r\n" + VALID, (400,)),
    "negative-content-length": (b"POST /consumers HTTP/1.1\r\nHost: x\r\nContent-Type: "
                                b"application/json\r\nContent-Length: -5\r\n\r\n" + VALID,
                                (400,)),
    "two-content-lengths": (b"POST /consumers HTTP/1.1\r\nHost: x\r\nContent-Type: "
                            b"application/json\r\nContent-Length: %d\r\nContent-Length: 5"
                            b"\r\n\r\n" % len(VALID) + VALID, (400,)),
    "cl-and-te": (b"POST /consumers HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n" % len(VALID)
                  + VALID, (400,)),
    "bad-chunk-size": (b"POST /consumers HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                       b"\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n" + VALID + b"\r\n0\r\n\r\n",
                       (400,)),
    "bare-cr-in-header": (b"POST /consumers HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n"
                          b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                          % len(VALID) + VALID, (400,)),
    "obs-fold": (b"POST /consumers HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n"
                 b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                 % len(VALID) + VALID, (400,)),
    "binary-junk": (bytes(range(256)) * 4 + b"\r\n\r\n", (400,)),
}


@pytest.mark.parametrize("data,statuses", MALFORMED_HTTP.values(), ids=MALFORMED_HTTP.keys())
def test_malformed_http_is_refused(cp, unchanged, data, statuses):
    with unchanged():
        r = raw_request(port_of(cp.admin_url), data)
        assert r is not None, "connection closed without a response"
        assert r.status_code in statuses, f"expected {statuses}, got {r.status_code} {r.text!r}"
        if r.content:
            json_body(r)


def test_malformed_http_after_a_good_request_on_keepalive(cp, admin, unchanged):
    """A good request, then garbage on the same connection: the good one is answered, the
    garbage gets a 400 and the connection closes; nothing is written by the garbage."""
    with unchanged():
        with contextlib.closing(connect(port_of(cp.admin_url))) as s:
            s.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
            r = read_response(s)
            assert r.status_code == 200
            s.sendall(b"POST /consumers HTTP/1.1\r\nHost x\r\n\r\n")
            r = read_response(s)
            assert r is not None and r.status_code == 400, r and r.status_code


def test_cp_survives_everything_above(cp, admin, pg_server, seed):
    """Last: the seed data is intact, the CP still accepts a good write, and the snapshot
    used above does notice a write (so "unchanged" meant something)."""
    assert_cp_alive(cp, admin)
    before = state_snapshot(admin, pg_server, cp.database)
    r = admin.post("/consumers", json={"username": "after-all-bad-input"})
    assert r.status_code == 201, r.text
    with pytest.raises(AssertionError):
        assert_nothing_written(before, state_snapshot(admin, pg_server, cp.database))
    assert admin.delete("/consumers/after-all-bad-input").status_code == 204


def test_get_single_entity_returns_it(admin, seed):
    """GET /consumers/{username or id} (and the other entities) answer 200 with the entity."""
    for path, expected in [("/consumers/bob", seed["bob"]),
                           (f"/consumers/{seed['bob']['id']}", seed["bob"]),
                           ("/services/svc", seed["svc"]),
                           (f"/plugins/{seed['plugin']['id']}", seed["plugin"]),
                           ("/key-auths/bob-key", seed["key"])]:
        r = admin.get(path)
        assert r.status_code == 200, f"GET {path}: {r.status_code} {r.text[:200]}"
        assert r.content, f"GET {path}: 200 with an empty body (Content-Length: " \
                          f"{r.headers.get('Content-Length')})"
        assert json_body(r)["id"] == expected["id"]


def test_invalid_route_regex_is_a_schema_violation(admin):
    """A regex path the router could not compile is refused when written, as Kong does."""
    r = admin.post("/routes", json={"paths": ["~/(foo"]})
    assert r.status_code == 400
    body = r.json()
    assert body["code"] == 2
    assert body["fields"]["paths"] == ["invalid regex: '/(foo' (PCRE returned: missing closing parenthesis)"]
    assert admin.post("/routes", json={"paths": [r"~/foo/\d+$"]}).status_code == 201
