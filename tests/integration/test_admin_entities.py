"""Admin API, top-level entity endpoints (kong-compat.md §1.1-§1.3, §1.5, §1.6, §2.1, §4.1):
services, routes, consumers, plugins and key-auths: create/read/upsert/update/delete, identifier
resolution, defaults, body formats, foreign keys, errors, cascades and credential TTLs."""
import uuid

import pytest

from admin_helpers import (GENERATED_KEY_RE, NOT_FOUND, UUID_RE, assert_timestamp, expect,
                           form, list_all, make_consumer, make_key, make_route, make_service,
                           multipart, uniq, wait_until)

SERVICE_DEFAULTS = {
    "retries": 5, "protocol": "http", "port": 80, "path": None, "connect_timeout": 60000,
    "write_timeout": 60000, "read_timeout": 60000, "tags": None, "client_certificate": None,
    "tls_verify": None, "tls_verify_depth": None, "ca_certificates": None, "enabled": True,
}
ROUTE_DEFAULTS = {
    "protocols": ["http", "https"], "methods": None, "hosts": None, "headers": None,
    "https_redirect_status_code": 426, "regex_priority": 0, "strip_path": True,
    "path_handling": "v0", "preserve_host": False, "request_buffering": True,
    "response_buffering": True, "snis": None, "sources": None, "destinations": None,
    "tags": None, "service": None,
}
KEY_AUTH_CONFIG_DEFAULTS = {
    "key_names": ["apikey"], "hide_credentials": False, "anonymous": None,
    "key_in_header": True, "key_in_query": True, "key_in_body": False,
    "run_on_preflight": True, "realm": None,
}
RATE_LIMITING_CONFIG_DEFAULTS = {
    "second": None, "hour": None, "day": None, "month": None, "year": None,
    "limit_by": "consumer", "header_name": None, "path": None, "policy": "local",
    "fault_tolerant": True, "hide_client_headers": False, "error_code": 429,
    "error_message": "API rate limit exceeded", "sync_rate": -1,
}
RATE_LIMIT_ONE_OF = ("at least one of these fields must be non-empty: 'config.second', "
                     "'config.minute', 'config.hour', 'config.day', 'config.month', "
                     "'config.year'")
BAD_TAG = ("invalid tag 'a,b': expected printable ascii (except `,` and `/`) or valid utf-8 "
           "sequences")


def unresolved(field, key, value, parent):
    """Kong's code 13 body for one foreign key that names no existing entity."""
    detail = (f"the foreign key cannot be resolved with '{{{key}=\"{value}\"}}' for an "
              f"existing '{parent}' entity")
    return {"code": 13, "name": "foreign keys unresolved",
            "message": f"foreign key unresolved ({field}.{key}: {detail})",
            "fields": {field: {key: detail}}}


# ------------------------------------------------------------------------------ services

def test_service_post_returns_201_with_every_field_and_defaults(admin):
    name = uniq("svc")
    body = expect(admin.post("/services", json={"name": name, "host": "example.com"}), 201)
    assert UUID_RE.match(body["id"])
    assert_timestamp(body["created_at"])
    assert_timestamp(body["updated_at"])
    expected = dict(SERVICE_DEFAULTS, id=body["id"], name=name, host="example.com",
                    created_at=body["created_at"], updated_at=body["updated_at"])
    assert body == expected
    assert expect(admin.get(f"/services/{body['id']}"), 200) == expected
    assert expect(admin.get(f"/services/{name}"), 200) == expected


@pytest.mark.parametrize("url, protocol, host, port, path", [
    ("http://example.com", "http", "example.com", 80, None),
    ("https://example.com", "https", "example.com", 443, None),
    ("https://api.example.com:8443/v1/x", "https", "api.example.com", 8443, "/v1/x"),
    ("http://10.1.2.3:9000/", "http", "10.1.2.3", 9000, "/"),
])
def test_service_url_shorthand_sets_protocol_host_port_path(admin, url, protocol, host, port,
                                                             path):
    body = expect(admin.post("/services", **form(("name", uniq("svc")), ("url", url))), 201)
    assert (body["protocol"], body["host"], body["port"], body["path"]) == \
        (protocol, host, port, path)
    assert "url" not in body


def test_service_without_host_is_a_schema_violation(admin):
    body = expect(admin.post("/services", json={"name": uniq("svc")}), 400)
    assert body == {"code": 2, "name": "schema violation",
                    "message": "schema violation (host: required field missing)",
                    "fields": {"host": "required field missing"}}


def test_service_field_type_and_range_errors(admin):
    body = expect(admin.post("/services", json={"host": "h.test", "retries": "many",
                                                "port": 70000}), 400)
    assert body["code"] == 2 and body["name"] == "schema violation"
    assert body["fields"] == {"retries": "expected an integer",
                              "port": "value should be between 0 and 65535"}
    assert body["message"] == ("2 schema violations (port: value should be between 0 and "
                               "65535; retries: expected an integer)")


def test_service_name_unique_409(admin):
    name = uniq("svc")
    make_service(admin, name=name)
    body = expect(admin.post("/services", json={"name": name, "host": "other.test"}), 409)
    assert body == {"code": 5, "name": "unique constraint violation",
                    "message": f"UNIQUE violation detected on '{{name=\"{name}\"}}'",
                    "fields": {"name": name}}


def test_service_patch_put_delete_by_name_and_id(admin):
    svc = make_service(admin, retries=2, port=8080)
    name = svc["name"]

    patched = expect(admin.patch(f"/services/{name}", json={"retries": 3}), 200)
    assert patched["id"] == svc["id"] and patched["retries"] == 3 and patched["port"] == 8080
    assert patched["created_at"] == svc["created_at"]
    assert patched["updated_at"] >= svc["updated_at"]

    # PUT replaces: omitted fields go back to their defaults, the path's name is forced.
    put = expect(admin.put(f"/services/{name}", json={"host": "replaced.test"}), 200)
    assert put["id"] == svc["id"] and put["name"] == name
    assert put["host"] == "replaced.test" and put["retries"] == 5 and put["port"] == 80

    put = expect(admin.put(f"/services/{svc['id']}", json={"name": name, "host": "byid.test",
                                                         "port": 81}), 200)
    assert put["id"] == svc["id"] and put["host"] == "byid.test" and put["port"] == 81

    patched = expect(admin.patch(f"/services/{svc['id']}", **form(("path", "/p"))), 200)
    assert patched["path"] == "/p" and patched["host"] == "byid.test"

    expect(admin.delete(f"/services/{name}"), 204)
    assert expect(admin.get(f"/services/{name}"), 404) == NOT_FOUND
    assert expect(admin.get(f"/services/{svc['id']}"), 404) == NOT_FOUND
    expect(admin.delete(f"/services/{name}"), 204)
    expect(admin.delete(f"/services/{svc['id']}"), 204)


def test_service_put_creates_by_name_and_by_id(admin):
    name = uniq("svc")
    created = expect(admin.put(f"/services/{name}", json={"host": "new.test"}), 200)
    assert created["name"] == name and UUID_RE.match(created["id"])
    assert expect(admin.get(f"/services/{name}"), 200)["id"] == created["id"]

    sid = str(uuid.uuid4())
    created = expect(admin.put(f"/services/{sid}", json={"host": "new2.test"}), 200)
    assert created["id"] == sid and created["name"] is None
    assert created["retries"] == 5


def test_service_patch_absent_is_404(admin):
    assert expect(admin.patch(f"/services/{uniq('nope')}", json={"retries": 1}), 404) == \
        NOT_FOUND
    assert expect(admin.patch(f"/services/{uuid.uuid4()}", json={"retries": 1}), 404) == \
        NOT_FOUND


def test_form_empty_string_is_null(admin):
    svc = make_service(admin, path="/some")
    body = expect(admin.patch(f"/services/{svc['id']}", **form(("path", ""))), 200)
    assert body["path"] is None
    assert expect(admin.get(f"/services/{svc['id']}"), 200)["path"] is None


# ------------------------------------------------------------------------------ routes

def test_route_post_returns_every_field_and_defaults(admin):
    name = uniq("route")
    body = expect(admin.post("/routes", json={"name": name, "paths": ["/r"]}), 201)
    assert UUID_RE.match(body["id"])
    assert_timestamp(body["created_at"])
    assert_timestamp(body["updated_at"])
    assert body == dict(ROUTE_DEFAULTS, id=body["id"], name=name, paths=["/r"],
                        created_at=body["created_at"], updated_at=body["updated_at"])


def test_route_needs_a_matching_attribute(admin):
    body = expect(admin.post("/routes", json={"name": uniq("route")}), 400)
    msg = "must set one of 'methods', 'hosts', 'headers', 'paths', 'snis' when 'protocols' is 'https'"
    assert body == {"code": 2, "name": "schema violation", "message": f"schema violation ({msg})",
                    "fields": {"@entity": [msg]}}
    body = expect(admin.post("/routes", json={"protocols": ["http"]}), 400)
    msg = "must set one of 'methods', 'hosts', 'headers', 'paths' when 'protocols' is 'http'"
    assert body["fields"] == {"@entity": [msg]}


def test_route_form_arrays_and_type_inference(admin):
    svc = make_service(admin)
    body = expect(admin.post("/routes", **form(
        ("name", uniq("route")), ("service.id", svc["id"]),
        ("paths[]", "/a"), ("paths[]", "/b"),
        ("hosts[1]", "one.test"), ("hosts[2]", "two.test"),
        ("methods", "GET"), ("methods", "POST"),
        ("protocols", "http"),
        ("strip_path", "false"), ("preserve_host", "true"),
        ("regex_priority", "7"), ("https_redirect_status_code", "301"),
        ("snis", ""),
    )), 201)
    assert body["paths"] == ["/a", "/b"]
    assert body["hosts"] == ["one.test", "two.test"]
    assert body["methods"] == ["GET", "POST"]
    assert body["protocols"] == ["http"]
    assert body["strip_path"] is False and body["preserve_host"] is True
    assert body["regex_priority"] == 7 and isinstance(body["regex_priority"], int)
    assert body["https_redirect_status_code"] == 301
    assert body["snis"] is None
    assert body["service"] == {"id": svc["id"]}


def test_route_form_scalar_for_array_field_becomes_one_element_array(admin):
    body = expect(admin.post("/routes", **form(("hosts", "single.test"))), 201)
    assert body["hosts"] == ["single.test"]
    assert body["paths"] is None


def test_route_multipart_body(admin):
    svc = make_service(admin)
    name = uniq("route")
    body = expect(admin.post("/routes", **multipart(
        ("name", name), ("service.name", svc["name"]), ("paths", "/mp1"), ("paths", "/mp2"),
        ("strip_path", "false"), ("regex_priority", "3"))), 201)
    assert body["name"] == name
    assert body["paths"] == ["/mp1", "/mp2"]
    assert body["strip_path"] is False and body["regex_priority"] == 3
    assert body["service"] == {"id": svc["id"]}


def test_route_service_foreign_key_by_id_and_by_name(admin):
    svc = make_service(admin)
    by_id = make_route(admin, service={"id": svc["id"]})
    assert by_id["service"] == {"id": svc["id"]}
    by_name_json = expect(admin.post("/routes", json={"paths": ["/n"],
                                                      "service": {"name": svc["name"]}}), 201)
    assert by_name_json["service"] == {"id": svc["id"]}
    by_name_form = expect(admin.post("/routes", **form(("paths", "/f"),
                                                       ("service.name", svc["name"]))), 201)
    assert by_name_form["service"] == {"id": svc["id"]}
    patched = expect(admin.patch(f"/routes/{by_id['id']}", json={"service": None}), 200)
    assert patched["service"] is None


def test_route_unresolved_service_name_is_code_13(admin):
    missing = uniq("missing")
    body = expect(admin.post("/routes", json={"paths": ["/x"], "service": {"name": missing}}),
                  400)
    assert body == unresolved("service", "name", missing, "services")
    body = expect(admin.post("/routes", **form(("paths", "/x"), ("service.name", missing))), 400)
    assert body == unresolved("service", "name", missing, "services")


def test_route_unknown_service_id_is_foreign_key_violation(admin):
    sid = str(uuid.uuid4())
    body = expect(admin.post("/routes", json={"paths": ["/x"], "service": {"id": sid}}), 400)
    assert body == {
        "code": 4, "name": "foreign key violation",
        "message": f"the foreign key '{{id=\"{sid}\"}}' does not reference an existing "
                   "'services' entity.",
        "fields": {"service": {"id": sid}}}


def test_route_crud_by_name_and_id(admin):
    route = make_route(admin)
    name = route["name"]
    assert expect(admin.get(f"/routes/{name}"), 200) == route
    patched = expect(admin.patch(f"/routes/{name}", **form(("methods", "GET"))), 200)
    assert patched["methods"] == ["GET"] and patched["paths"] == route["paths"]
    put = expect(admin.put(f"/routes/{route['id']}", json={"name": name, "hosts": ["h.test"]}),
                 200)
    assert put["id"] == route["id"] and put["hosts"] == ["h.test"]
    assert put["paths"] is None and put["methods"] is None
    new_name = uniq("route")
    created = expect(admin.put(f"/routes/{new_name}", json={"paths": ["/put"]}), 200)
    assert created["name"] == new_name and created["strip_path"] is True
    expect(admin.delete(f"/routes/{name}"), 204)
    expect(admin.delete(f"/routes/{created['id']}"), 204)
    assert expect(admin.get(f"/routes/{name}"), 404) == NOT_FOUND
    expect(admin.delete(f"/routes/{name}"), 204)


# ------------------------------------------------------------------------------ consumers

def test_consumer_post_returns_every_field(admin):
    username = uniq("user")
    body = expect(admin.post("/consumers", json={"username": username}), 201)
    assert_timestamp(body["created_at"])
    assert_timestamp(body["updated_at"])
    assert body == {"id": body["id"], "created_at": body["created_at"],
                    "updated_at": body["updated_at"], "username": username,
                    "custom_id": None, "tags": None}
    assert UUID_RE.match(body["id"])


def test_consumer_needs_username_or_custom_id(admin):
    msg = "at least one of these fields must be non-empty: 'custom_id', 'username'"
    for kwargs in ({"json": {}}, form(("custom_id", ""))):
        body = expect(admin.post("/consumers", **kwargs), 400)
        assert body == {"code": 2, "name": "schema violation",
                        "message": f"schema violation ({msg})", "fields": {"@entity": [msg]}}


def test_consumer_unique_username_and_custom_id(admin):
    username, custom_id = uniq("user"), uniq("cid")
    make_consumer(admin, username=username, custom_id=custom_id)
    body = expect(admin.post("/consumers", json={"username": username}), 409)
    assert body == {"code": 5, "name": "unique constraint violation",
                    "message": f"UNIQUE violation detected on '{{username=\"{username}\"}}'",
                    "fields": {"username": username}}
    body = expect(admin.post("/consumers", json={"custom_id": custom_id}), 409)
    assert body["code"] == 5 and body["fields"] == {"custom_id": custom_id}


def test_consumer_crud_and_upsert(admin):
    username = uniq("bob")
    created = expect(admin.put(f"/consumers/{username}", json={}), 200)
    assert created["username"] == username and UUID_RE.match(created["id"])

    replaced = expect(admin.put(f"/consumers/{username}",
                                json={"custom_id": "c-1", "tags": ["t1"]}), 200)
    assert replaced["id"] == created["id"] and replaced["username"] == username
    assert replaced["custom_id"] == "c-1" and replaced["tags"] == ["t1"]

    # A PUT is a full replacement: the omitted custom_id and tags go back to null.
    replaced = expect(admin.put(f"/consumers/{created['id']}", json={"username": username}), 200)
    assert replaced["custom_id"] is None and replaced["tags"] is None

    patched = expect(admin.patch(f"/consumers/{username}", **form(("custom_id", "c-2"))), 200)
    assert patched["custom_id"] == "c-2" and patched["username"] == username
    patched = expect(admin.patch(f"/consumers/{created['id']}", **form(("custom_id", ""))), 200)
    assert patched["custom_id"] is None

    cid = str(uuid.uuid4())
    by_id = expect(admin.put(f"/consumers/{cid}", json={"username": uniq("u")}), 200)
    assert by_id["id"] == cid

    expect(admin.delete(f"/consumers/{username}"), 204)
    assert expect(admin.get(f"/consumers/{username}"), 404) == NOT_FOUND
    expect(admin.delete(f"/consumers/{username}"), 204)
    expect(admin.delete(f"/consumers/{cid}"), 204)
    expect(admin.delete(f"/consumers/{cid}"), 204)
    assert expect(admin.patch(f"/consumers/{username}", json={"custom_id": "x"}), 404) == \
        NOT_FOUND


def test_consumer_explicit_id_unknown_field_and_forced_endpoint_key(admin):
    cid = str(uuid.uuid4())
    body = expect(admin.post("/consumers", json={"id": cid, "username": uniq("u")}), 201)
    assert body["id"] == cid
    body = expect(admin.post("/consumers", json={"id": cid, "username": uniq("u")}), 400)
    assert body == {"code": 3, "name": "primary key violation",
                    "message": f"primary key violation on key '{{id=\"{cid}\"}}'",
                    "fields": {"id": cid}}
    body = expect(admin.post("/consumers", json={"id": "not-a-uuid", "username": uniq("u")}),
                  400)
    assert body["fields"] == {"id": "expected a valid UUID"}
    body = expect(admin.post("/consumers", json={"username": uniq("u"), "foo": 1}), 400)
    assert body == {"code": 2, "name": "schema violation",
                    "message": "schema violation (foo: unknown field)",
                    "fields": {"foo": "unknown field"}}
    # PUT by endpoint key: the path's username wins over the body's.
    username = uniq("forced")
    body = expect(admin.put(f"/consumers/{username}", json={"username": uniq("other")}), 200)
    assert body["username"] == username


def test_consumer_with_uuid_username_is_found_by_id_only(admin):
    username = str(uuid.uuid4())
    consumer = make_consumer(admin, username=username)
    assert expect(admin.get(f"/consumers/{username}"), 404) == NOT_FOUND
    assert expect(admin.get(f"/consumers/{consumer['id']}"), 200)["username"] == username


def test_consumer_custom_id_query(admin):
    custom_id = uniq("cid")
    consumer = make_consumer(admin, custom_id=custom_id)
    assert expect(admin.get("/consumers", params={"custom_id": custom_id}), 200) == \
        {"data": [consumer], "next": None}
    assert expect(admin.get("/consumers", params={"custom_id": uniq("none")}), 200) == \
        {"data": [], "next": None}
    assert expect(admin.get("/consumers?custom_id="), 400) == \
        {"message": "custom_id must be an unempty string"}


def test_consumer_tags_validation(admin):
    body = expect(admin.post("/consumers", json={"username": uniq("u"), "tags": ["a,b"]}), 400)
    assert body["code"] == 2 and body["name"] == "schema violation"
    assert BAD_TAG in body["message"]
    assert body["fields"] == {"tags": [BAD_TAG]}


# ------------------------------------------------------------------------------ plugins

def test_key_auth_plugin_defaults(admin):
    body = expect(admin.post("/plugins", **form(("name", "key-auth"),
                                                ("instance_name", uniq("ka")))), 201)
    config = body.pop("config")
    assert_timestamp(body.pop("created_at"))
    assert_timestamp(body.pop("updated_at"))
    assert UUID_RE.match(body.pop("id"))
    assert body.pop("instance_name").startswith("ka-")
    assert body == {"name": "key-auth", "route": None, "service": None, "consumer": None,
                    "protocols": ["grpc", "grpcs", "http", "https", "ws", "wss"],
                    "enabled": True, "tags": None}
    assert {k: config[k] for k in KEY_AUTH_CONFIG_DEFAULTS} == KEY_AUTH_CONFIG_DEFAULTS
    assert "identity_realms" in config


def test_rate_limiting_plugin_defaults_and_form_number(admin):
    svc = make_service(admin)
    body = expect(admin.post("/plugins", **form(("name", "rate-limiting"),
                                                ("service.id", svc["id"]),
                                                ("config.minute", "5"))), 201)
    config = body["config"]
    assert config["minute"] == 5
    assert {k: config[k] for k in RATE_LIMITING_CONFIG_DEFAULTS} == RATE_LIMITING_CONFIG_DEFAULTS
    assert body["protocols"] == ["grpc", "grpcs", "http", "https"]
    assert body["service"] == {"id": svc["id"]}
    assert body["route"] is None and body["consumer"] is None and body["enabled"] is True


def test_rate_limiting_needs_a_limit(admin):
    body = expect(admin.post("/plugins", json={"name": "rate-limiting", "config": {}}), 400)
    assert body == {"code": 2, "name": "schema violation",
                    "message": f"schema violation ({RATE_LIMIT_ONE_OF})",
                    "fields": {"@entity": [RATE_LIMIT_ONE_OF]}}


def test_rate_limiting_window_order_and_policy(admin):
    body = expect(admin.post("/plugins", json={"name": "rate-limiting",
                                               "config": {"second": 20, "hour": 10}}), 400)
    assert body["code"] == 2
    assert body["fields"]["@entity"] == [
        "The limit for hour(10.0) cannot be lower than the limit for second(20.0)"]
    body = expect(admin.post("/plugins", **form(("name", "rate-limiting"),
                                                ("config.minute", "1"),
                                                ("config.policy", "cluster"))), 400)
    assert body["code"] == 2
    assert body["fields"] == {"config": {"policy": "expected one of: local, redis"}}


def test_plugin_json_and_form_config(admin):
    r1, r2, r3 = make_route(admin), make_route(admin), make_route(admin)
    body = expect(admin.post("/plugins", json={
        "name": "key-auth", "route": {"id": r1["id"]},
        "config": {"key_names": ["x-key", "apikey"], "hide_credentials": True}}), 201)
    assert body["config"]["key_names"] == ["x-key", "apikey"]
    assert body["config"]["hide_credentials"] is True
    assert body["config"]["key_in_query"] is True

    body = expect(admin.post("/plugins", **form(
        ("name", "key-auth"), ("route.id", r2["id"]), ("config.key_names", "a-key"),
        ("config.key_names", "b-key"), ("config.key_in_body", "true"),
        ("config.anonymous", ""))), 201)
    assert body["config"]["key_names"] == ["a-key", "b-key"]
    assert body["config"]["key_in_body"] is True and body["config"]["anonymous"] is None

    body = expect(admin.post("/plugins", **multipart(
        ("name", "key-auth"), ("route.name", r3["name"]), ("config.key_names[1]", "m-key"),
        ("config.hide_credentials", "true"))), 201)
    assert body["route"] == {"id": r3["id"]}
    assert body["config"]["key_names"] == ["m-key"]
    assert body["config"]["hide_credentials"] is True


def test_plugin_foreign_keys_by_name(admin):
    svc = make_service(admin)
    route = make_route(admin, service=svc)
    consumer = make_consumer(admin)
    body = expect(admin.post("/plugins", json={
        "name": "rate-limiting", "config": {"minute": 4},
        "service": {"name": svc["name"]}, "route": {"name": route["name"]},
        "consumer": {"username": consumer["username"]}}), 201)
    assert body["service"] == {"id": svc["id"]} and body["route"] == {"id": route["id"]}
    assert body["consumer"] == {"id": consumer["id"]}
    body = expect(admin.post("/plugins", **form(("name", "key-auth"),
                                                ("service.name", svc["name"]))), 201)
    assert body["service"] == {"id": svc["id"]}

    missing = uniq("missing")
    body = expect(admin.post("/plugins", **form(("name", "key-auth"),
                                                ("route.name", missing))), 400)
    assert body == unresolved("route", "name", missing, "routes")
    rid = str(uuid.uuid4())
    body = expect(admin.post("/plugins", json={"name": "key-auth", "route": {"id": rid}}), 400)
    assert body["code"] == 4 and body["fields"] == {"route": {"id": rid}}
    assert body["message"] == (f"the foreign key '{{id=\"{rid}\"}}' does not reference an "
                               "existing 'routes' entity.")


def test_plugin_invalid_key_names(admin):
    body = expect(admin.post("/plugins", json={"name": "key-auth",
                                               "config": {"key_names": ["hello\\world"]}}), 400)
    assert body["code"] == 2
    assert ("bad header name 'hello\\world', allowed characters are A-Z, a-z, 0-9, '_', "
            "and '-'") in body["message"]
    assert "key_names" in body["fields"]["config"]


def test_unknown_plugin_name(admin):
    msg = "plugin 'nope' not enabled; add it to the 'plugins' configuration property"
    body = expect(admin.post("/plugins", json={"name": "nope"}), 400)
    assert body == {"code": 2, "name": "schema violation",
                    "message": f"schema violation (name: {msg})", "fields": {"name": msg}}


def test_plugin_unique_per_scope_409(admin):
    route = make_route(admin)
    expect(admin.post("/plugins", json={"name": "key-auth", "route": {"id": route["id"]}}), 201)
    body = expect(admin.post("/plugins", json={"name": "key-auth",
                                               "route": {"id": route["id"]}}), 409)
    assert body == {
        "code": 5, "name": "unique constraint violation",
        "message": "UNIQUE violation detected on '{consumer=null,name=\"key-auth\","
                   f"route={{id=\"{route['id']}\"}},service=null}}'",
        "fields": {"consumer": None, "name": "key-auth", "route": {"id": route["id"]},
                   "service": None}}


def test_plugin_by_instance_name(admin):
    instance = uniq("limits")
    created = expect(admin.post("/plugins", json={"name": "rate-limiting",
                                                  "instance_name": instance,
                                                  "config": {"minute": 10}}), 201)
    assert expect(admin.get(f"/plugins/{instance}"), 200) == created
    patched = expect(admin.patch(f"/plugins/{instance}", **form(("config.minute", "20"),
                                                               ("enabled", "false"))), 200)
    assert patched["config"]["minute"] == 20 and patched["enabled"] is False
    assert patched["config"]["policy"] == "local"
    put = expect(admin.put(f"/plugins/{instance}", json={"name": "rate-limiting",
                                                        "config": {"hour": 100}}), 200)
    assert put["id"] == created["id"] and put["instance_name"] == instance
    assert put["config"]["hour"] == 100 and put["config"]["minute"] is None
    assert put["enabled"] is True
    expect(admin.delete(f"/plugins/{instance}"), 204)
    assert expect(admin.get(f"/plugins/{created['id']}"), 404) == NOT_FOUND
    expect(admin.delete(f"/plugins/{instance}"), 204)


def test_plugin_put_by_id_creates(admin):
    pid = str(uuid.uuid4())
    route = make_route(admin)
    body = expect(admin.put(f"/plugins/{pid}", json={"name": "key-auth",
                                                     "route": {"id": route["id"]}}), 200)
    assert body["id"] == pid and body["route"] == {"id": route["id"]}
    assert expect(admin.get(f"/plugins/{pid}"), 200) == body
    expect(admin.delete(f"/plugins/{pid}"), 204)
    expect(admin.delete(f"/plugins/{pid}"), 204)


def test_key_auth_cannot_be_consumer_scoped(admin):
    consumer = make_consumer(admin)
    body = expect(admin.post("/plugins", json={"name": "key-auth",
                                               "consumer": {"id": consumer["id"]}}), 400)
    assert body["code"] == 2 and "consumer" in body["fields"]


# ------------------------------------------------------------------------------ key-auths

def test_key_auth_generated_key_and_shape(admin):
    consumer = make_consumer(admin)
    body = expect(admin.post(f"/consumers/{consumer['username']}/key-auth", json={}), 201)
    assert GENERATED_KEY_RE.match(body["key"]), body["key"]
    assert_timestamp(body["created_at"])
    assert body.get("ttl") is None
    body.pop("ttl", None)
    assert body == {"id": body["id"], "created_at": body["created_at"],
                    "consumer": {"id": consumer["id"]}, "key": body["key"], "tags": None}
    other = make_key(admin, consumer)
    assert GENERATED_KEY_RE.match(other["key"]) and other["key"] != body["key"]


def test_key_auths_top_level_crud(admin):
    consumer = make_consumer(admin)
    key = uniq("key")
    cred = expect(admin.post("/key-auths", json={"key": key,
                                                 "consumer": {"id": consumer["id"]}}), 201)
    assert cred["consumer"] == {"id": consumer["id"]} and cred["key"] == key
    assert expect(admin.get(f"/key-auths/{key}"), 200) == cred
    assert expect(admin.get(f"/key-auths/{cred['id']}"), 200) == cred

    new_key = uniq("key")
    patched = expect(admin.patch(f"/key-auths/{key}", json={"key": new_key,
                                                            "tags": ["rotated"]}), 200)
    assert patched["id"] == cred["id"] and patched["key"] == new_key
    assert patched["tags"] == ["rotated"]
    assert expect(admin.get(f"/key-auths/{key}"), 404) == NOT_FOUND
    assert expect(admin.get(f"/key-auths/{new_key}"), 200)["id"] == cred["id"]

    put_key = uniq("key")
    put = expect(admin.put(f"/key-auths/{put_key}",
                           json={"consumer": {"id": consumer["id"]}}), 200)
    assert put["key"] == put_key and put["consumer"] == {"id": consumer["id"]}

    expect(admin.delete(f"/key-auths/{new_key}"), 204)
    expect(admin.delete(f"/key-auths/{put['id']}"), 204)
    assert expect(admin.get(f"/key-auths/{cred['id']}"), 404) == NOT_FOUND
    expect(admin.delete(f"/key-auths/{new_key}"), 204)
    expect(admin.delete(f"/key-auths/{uuid.uuid4()}"), 204)


def test_key_auths_consumer_foreign_key_forms(admin):
    consumer = make_consumer(admin)
    by_name = expect(admin.post("/key-auths", json={
        "consumer": {"username": consumer["username"]}}), 201)
    assert by_name["consumer"] == {"id": consumer["id"]}
    by_form = expect(admin.post("/key-auths", **form(("consumer.username",
                                                      consumer["username"]),
                                                     ("key", uniq("k")))), 201)
    assert by_form["consumer"] == {"id": consumer["id"]}
    by_form_id = expect(admin.post("/key-auths", **form(("consumer.id", consumer["id"]))), 201)
    assert by_form_id["consumer"] == {"id": consumer["id"]}

    missing = uniq("ghost")
    body = expect(admin.post("/key-auths", json={"consumer": {"username": missing}}), 400)
    assert body == unresolved("consumer", "username", missing, "consumers")


def test_key_auths_errors(admin):
    body = expect(admin.post("/key-auths", json={"key": uniq("k")}), 400)
    assert body == {"code": 2, "name": "schema violation",
                    "message": "schema violation (consumer: required field missing)",
                    "fields": {"consumer": "required field missing"}}
    consumer = make_consumer(admin)
    body = expect(admin.post(f"/consumers/{consumer['id']}/key-auth", json={"key": 123}), 400)
    assert body["code"] == 2 and body["fields"] == {"key": "expected a string"}

    key = uniq("dup")
    make_key(admin, consumer, key=key)
    other = make_consumer(admin)
    body = expect(admin.post(f"/consumers/{other['id']}/key-auth", json={"key": key}), 409)
    assert body == {"code": 5, "name": "unique constraint violation",
                    "message": f"UNIQUE violation detected on '{{key=\"{key}\"}}'",
                    "fields": {"key": key}}


# ------------------------------------------------------------------------------ bodies, methods

def test_bad_json_body_is_400(admin):
    resp = admin.post("/consumers", data="{not json", headers={"Content-Type":
                                                                "application/json"})
    assert expect(resp, 400) == {"message": "Cannot parse JSON body"}


def test_unsupported_content_type_is_415(admin):
    resp = admin.post("/consumers", data="username=x", headers={"Content-Type": "text/plain"})
    assert resp.status_code == 415


def test_unsupported_method_is_405_and_unknown_path_404(admin):
    assert expect(admin.delete("/consumers"), 405) == {"message": "Method not allowed"}
    assert expect(admin.patch("/services", json={}), 405) == {"message": "Method not allowed"}
    assert expect(admin.get("/nope"), 404) == NOT_FOUND
    assert expect(admin.get("/consumers/x/nope"), 404) == NOT_FOUND


def test_json_utf8_and_explicit_null(admin):
    username = uniq("Jürgen-名前")
    body = expect(admin.post("/consumers", json={"username": username, "custom_id": None}), 201)
    assert body["username"] == username and body["custom_id"] is None
    assert expect(admin.get(f"/consumers/{body['id']}"), 200)["username"] == username


# ------------------------------------------------------------------------------ cascades

def test_deleting_a_consumer_removes_its_credentials_and_plugins(admin):
    consumer = make_consumer(admin)
    k1, k2 = make_key(admin, consumer), make_key(admin, consumer, key=uniq("k"))
    plugin = expect(admin.post(f"/consumers/{consumer['id']}/plugins",
                               json={"name": "rate-limiting", "config": {"minute": 3}}), 201)
    expect(admin.delete(f"/consumers/{consumer['username']}"), 204)
    for path in (f"/key-auths/{k1['id']}", f"/key-auths/{k2['key']}", f"/plugins/{plugin['id']}",
                 f"/consumers/{consumer['id']}/key-auth"):
        assert expect(admin.get(path), 404) == NOT_FOUND
    ids = {c["id"] for c in list_all(admin, "/key-auths")}
    assert not ids & {k1["id"], k2["id"]}
    # The key is free again.
    other = make_consumer(admin)
    make_key(admin, other, key=k2["key"])


def test_deleting_a_route_removes_its_plugins(admin):
    route = make_route(admin)
    plugin = expect(admin.post(f"/routes/{route['id']}/plugins", json={"name": "key-auth"}), 201)
    expect(admin.delete(f"/routes/{route['name']}"), 204)
    assert expect(admin.get(f"/plugins/{plugin['id']}"), 404) == NOT_FOUND


def test_deleting_a_service_with_routes_is_refused(admin):
    svc = make_service(admin)
    route = make_route(admin, service=svc)
    body = expect(admin.delete(f"/services/{svc['name']}"), 400)
    assert body == {"code": 4, "name": "foreign key violation",
                    "message": "an existing 'routes' entity references this 'services' entity",
                    "fields": {"@referenced_by": "routes"}}
    assert expect(admin.get(f"/services/{svc['id']}"), 200)["id"] == svc["id"]
    expect(admin.delete(f"/routes/{route['id']}"), 204)
    expect(admin.delete(f"/services/{svc['id']}"), 204)


def test_deleting_a_service_removes_its_plugins(admin):
    svc = make_service(admin)
    plugin = expect(admin.post(f"/services/{svc['id']}/plugins",
                               json={"name": "rate-limiting", "config": {"hour": 9}}), 201)
    expect(admin.delete(f"/services/{svc['id']}"), 204)
    assert expect(admin.get(f"/plugins/{plugin['id']}"), 404) == NOT_FOUND
    assert plugin["id"] not in {p["id"] for p in list_all(admin, "/plugins")}


# ------------------------------------------------------------------------------ credential ttl

def test_credential_ttl_counts_down_and_expires(admin):
    consumer = make_consumer(admin)
    key = uniq("ttl")
    cred = expect(admin.post(f"/consumers/{consumer['id']}/key-auth",
                             json={"key": key, "ttl": 2}), 201)
    assert isinstance(cred["ttl"], int) and 0 <= cred["ttl"] <= 2
    forever = make_key(admin, consumer)
    assert forever.get("ttl") is None

    wait_until(lambda: admin.get(f"/key-auths/{key}").status_code == 404, timeout=15,
               what="the credential to expire")
    assert expect(admin.get(f"/key-auths/{cred['id']}"), 404) == NOT_FOUND
    assert expect(admin.get(f"/consumers/{consumer['id']}/key-auth/{key}"), 404) == NOT_FOUND
    listed = {c["id"] for c in list_all(admin, f"/consumers/{consumer['id']}/key-auth")}
    assert listed == {forever["id"]}
    assert cred["id"] not in {c["id"] for c in list_all(admin, "/key-auths")}

    # The expired key may be issued again, to anyone.
    again = expect(admin.post(f"/consumers/{consumer['id']}/key-auth", json={"key": key}), 201)
    assert again["key"] == key and again["id"] != cred["id"]
    assert expect(admin.get(f"/key-auths/{key}"), 200)["id"] == again["id"]


def test_credential_ttl_from_form_and_remaining_seconds(admin):
    consumer = make_consumer(admin)
    cred = expect(admin.post(f"/consumers/{consumer['username']}/key-auth",
                             **form(("ttl", "1000"))), 201)
    assert 995 <= cred["ttl"] <= 1000
    got = expect(admin.get(f"/key-auths/{cred['id']}"), 200)
    assert 990 <= got["ttl"] <= 1000
    assert GENERATED_KEY_RE.match(got["key"])
    patched = expect(admin.patch(f"/key-auths/{cred['id']}", json={"ttl": 50}), 200)
    assert 45 <= patched["ttl"] <= 50
    assert 40 <= expect(admin.get(f"/key-auths/{cred['key']}"), 200)["ttl"] <= 50
