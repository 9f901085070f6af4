"""Admin API nested endpoints (kong-compat.md §1.3, §1.5): children listed and created under their
parent, child entities addressed through their parent (ownership checked), and the
`/{child}/{c}/{parent field}` endpoints that address the referenced entity."""
import uuid

from admin_helpers import (GENERATED_KEY_RE, NOT_FOUND, UUID_RE, expect, form, list_all,
                           make_consumer, make_key, make_route, make_service, uniq)

METHOD_NOT_ALLOWED = {"message": "Method not allowed"}


# ------------------------------------------------------------------------------ service routes

def test_service_routes_post_and_list(admin):
    svc, other = make_service(admin), make_service(admin)
    r1 = expect(admin.post(f"/services/{svc['name']}/routes", **form(("paths", "/sr1"))), 201)
    r2 = expect(admin.post(f"/services/{svc['id']}/routes",
                           json={"name": uniq("route"), "hosts": ["h.test"]}), 201)
    assert r1["service"] == {"id": svc["id"]} and r2["service"] == {"id": svc["id"]}
    assert r1["protocols"] == ["http", "https"] and r1["strip_path"] is True
    make_route(admin, service=other)
    make_route(admin)

    body = expect(admin.get(f"/services/{svc['name']}/routes"), 200)
    assert {r["id"] for r in body["data"]} == {r1["id"], r2["id"]}
    assert body["next"] is None and "offset" not in body
    assert {r["id"] for r in list_all(admin, f"/services/{svc['id']}/routes")} == \
        {r1["id"], r2["id"]}


def test_service_routes_parent_not_found(admin):
    for parent in (uniq("nope"), str(uuid.uuid4())):
        assert expect(admin.post(f"/services/{parent}/routes", json={"paths": ["/x"]}), 404) \
            == NOT_FOUND
        assert expect(admin.get(f"/services/{parent}/routes"), 404) == NOT_FOUND


def test_service_route_item_get_patch_put_delete(admin):
    svc, other = make_service(admin), make_service(admin)
    route = make_route(admin, service=svc)
    foreign = make_route(admin, service=other)
    base = f"/services/{svc['name']}/routes"

    assert expect(admin.get(f"{base}/{route['id']}"), 200) == route
    assert expect(admin.get(f"{base}/{route['name']}"), 200) == route
    # A route of another service (or of none) is not found under this one.
    assert expect(admin.get(f"{base}/{foreign['id']}"), 404) == NOT_FOUND
    assert expect(admin.get(f"{base}/{foreign['name']}"), 404) == NOT_FOUND
    assert expect(admin.patch(f"{base}/{foreign['id']}", json={"paths": ["/z"]}), 404) == \
        NOT_FOUND
    assert expect(admin.delete(f"{base}/{foreign['id']}"), 404) == NOT_FOUND
    assert expect(admin.get(f"/routes/{foreign['id']}"), 200)["paths"] == foreign["paths"]

    patched = expect(admin.patch(f"{base}/{route['name']}", **form(("strip_path", "false"))),
                     200)
    assert patched["strip_path"] is False and patched["service"] == {"id": svc["id"]}

    new_name = uniq("route")
    put = expect(admin.put(f"{base}/{new_name}", json={"paths": ["/put-nested"]}), 200)
    assert put["name"] == new_name and put["service"] == {"id": svc["id"]}

    expect(admin.delete(f"{base}/{route['id']}"), 204)
    expect(admin.delete(f"{base}/{put['name']}"), 204)
    assert expect(admin.get(f"/routes/{route['id']}"), 404) == NOT_FOUND
    assert expect(admin.delete(f"{base}/{route['id']}"), 404) == NOT_FOUND
    assert expect(admin.delete(f"{base}/{uniq('nope')}"), 404) == NOT_FOUND


def test_route_service_endpoint(admin):
    svc = make_service(admin)
    route = make_route(admin, service=svc)
    lonely = make_route(admin)

    assert expect(admin.get(f"/routes/{route['name']}/service"), 200) == svc
    assert expect(admin.get(f"/routes/{route['id']}/service"), 200) == svc
    assert expect(admin.get(f"/routes/{lonely['id']}/service"), 404) == NOT_FOUND
    assert expect(admin.get(f"/routes/{uniq('nope')}/service"), 404) == NOT_FOUND

    patched = expect(admin.patch(f"/routes/{route['id']}/service", **form(("retries", "9"))),
                     200)
    assert patched["id"] == svc["id"] and patched["retries"] == 9
    assert expect(admin.get(f"/services/{svc['id']}"), 200)["retries"] == 9

    put = expect(admin.put(f"/routes/{route['id']}/service",
                           json={"name": svc["name"], "host": "put.test"}), 200)
    assert put["id"] == svc["id"] and put["host"] == "put.test" and put["retries"] == 5

    assert expect(admin.delete(f"/routes/{route['id']}/service"), 405) == METHOD_NOT_ALLOWED
    assert expect(admin.get(f"/services/{svc['id']}"), 200)["id"] == svc["id"]


# ------------------------------------------------------------------------------ plugins

def test_scoped_plugins_post_list_and_item(admin):
    svc = make_service(admin)
    route = make_route(admin, service=svc)
    consumer = make_consumer(admin)

    on_svc = expect(admin.post(f"/services/{svc['name']}/plugins",
                               **form(("name", "rate-limiting"), ("config.minute", "5"))), 201)
    on_route = expect(admin.post(f"/routes/{route['name']}/plugins",
                                 **form(("name", "key-auth"))), 201)
    on_consumer = expect(admin.post(f"/consumers/{consumer['username']}/plugins",
                                    json={"name": "rate-limiting", "config": {"hour": 50}}),
                         201)
    assert on_svc["service"] == {"id": svc["id"]} and on_svc["route"] is None
    assert on_route["route"] == {"id": route["id"]} and on_route["service"] is None
    assert on_consumer["consumer"] == {"id": consumer["id"]}
    assert on_consumer["route"] is None and on_consumer["service"] is None

    for parent, plugin in ((f"/services/{svc['id']}", on_svc),
                           (f"/routes/{route['id']}", on_route),
                           (f"/consumers/{consumer['id']}", on_consumer)):
        body = expect(admin.get(f"{parent}/plugins"), 200)
        assert [p["id"] for p in body["data"]] == [plugin["id"]]
        assert body["next"] is None
        assert expect(admin.get(f"{parent}/plugins/{plugin['id']}"), 200) == plugin

    # A plugin is only found under its own parent.
    assert expect(admin.get(f"/services/{svc['id']}/plugins/{on_route['id']}"), 404) == \
        NOT_FOUND
    assert expect(admin.get(f"/routes/{route['id']}/plugins/{on_svc['id']}"), 404) == \
        NOT_FOUND
    assert expect(admin.delete(f"/consumers/{consumer['id']}/plugins/{on_svc['id']}"), 404) \
        == NOT_FOUND

    patched = expect(admin.patch(f"/routes/{route['id']}/plugins/{on_route['id']}",
                                 **form(("enabled", "false"))), 200)
    assert patched["enabled"] is False and patched["route"] == {"id": route["id"]}
    patched = expect(admin.patch(f"/services/{svc['id']}/plugins/{on_svc['id']}",
                                 **form(("config.minute", "7"))), 200)
    assert patched["config"]["minute"] == 7 and patched["config"]["policy"] == "local"

    expect(admin.delete(f"/consumers/{consumer['id']}/plugins/{on_consumer['id']}"), 204)
    assert expect(admin.get(f"/plugins/{on_consumer['id']}"), 404) == NOT_FOUND
    assert expect(admin.delete(f"/consumers/{consumer['id']}/plugins/{on_consumer['id']}"),
                  404) == NOT_FOUND


def test_plugin_parent_endpoints(admin):
    svc = make_service(admin)
    route = make_route(admin, service=svc)
    consumer = make_consumer(admin)
    plugin = expect(admin.post("/plugins", json={
        "name": "rate-limiting", "config": {"minute": 1}, "route": {"id": route["id"]},
        "service": {"id": svc["id"]}, "consumer": {"id": consumer["id"]}}), 201)
    assert expect(admin.get(f"/plugins/{plugin['id']}/route"), 200) == route
    assert expect(admin.get(f"/plugins/{plugin['id']}/service"), 200) == svc
    assert expect(admin.get(f"/plugins/{plugin['id']}/consumer"), 200) == consumer

    global_plugin = expect(admin.post("/plugins", json={"name": "key-auth",
                                                        "instance_name": uniq("g")}), 201)
    for field in ("route", "service", "consumer"):
        assert expect(admin.get(f"/plugins/{global_plugin['id']}/{field}"), 404) == NOT_FOUND
        assert expect(admin.get(f"/plugins/{global_plugin['instance_name']}/{field}"), 404) \
            == NOT_FOUND
    expect(admin.delete(f"/plugins/{global_plugin['id']}"), 204)


def test_plugin_post_under_missing_parent(admin):
    for parent in ("services", "routes", "consumers"):
        assert expect(admin.post(f"/{parent}/{uniq('nope')}/plugins",
                                 json={"name": "rate-limiting", "config": {"minute": 1}}),
                      404) == NOT_FOUND
        assert expect(admin.get(f"/{parent}/{uuid.uuid4()}/plugins"), 404) == NOT_FOUND


# ------------------------------------------------------------------------------ key-auth

def test_consumer_key_auth_post_list_get(admin):
    consumer, other = make_consumer(admin), make_consumer(admin)
    k1 = expect(admin.post(f"/consumers/{consumer['username']}/key-auth",
                           **form(("key", uniq("k")))), 201)
    k2 = expect(admin.post(f"/consumers/{consumer['id']}/key-auth", json={}), 201)
    assert GENERATED_KEY_RE.match(k2["key"])
    make_key(admin, other)
    body = expect(admin.get(f"/consumers/{consumer['username']}/key-auth"), 200)
    assert {c["id"] for c in body["data"]} == {k1["id"], k2["id"]}
    assert body["next"] is None
    for x in (k1["id"], k1["key"]):
        assert expect(admin.get(f"/consumers/{consumer['username']}/key-auth/{x}"), 200) == k1


def test_consumer_key_auth_parent_not_found(admin):
    for parent in (uniq("nope"), str(uuid.uuid4())):
        assert expect(admin.post(f"/consumers/{parent}/key-auth", json={}), 404) == NOT_FOUND
        assert expect(admin.get(f"/consumers/{parent}/key-auth"), 404) == NOT_FOUND
        assert expect(admin.put(f"/consumers/{parent}/key-auth/{uniq('k')}", json={}), 404) \
            == NOT_FOUND


def test_credential_of_another_consumer_is_404(admin):
    bob, alice = make_consumer(admin), make_consumer(admin)
    cred = make_key(admin, bob, key=uniq("k"))
    assert expect(admin.get(f"/consumers/{bob['username']}/key-auth/{cred['id']}"), 200) == cred
    for x in (cred["id"], cred["key"]):
        path = f"/consumers/{alice['username']}/key-auth/{x}"
        assert expect(admin.get(path), 404) == NOT_FOUND
        assert expect(admin.patch(path, json={"tags": ["stolen"]}), 404) == NOT_FOUND
        assert expect(admin.delete(path), 404) == NOT_FOUND
    still = expect(admin.get(f"/key-auths/{cred['id']}"), 200)
    assert still == cred


def test_nested_key_auth_delete_missing_is_404(admin):
    consumer = make_consumer(admin)
    base = f"/consumers/{consumer['username']}/key-auth"
    assert expect(admin.delete(f"{base}/blah"), 404) == NOT_FOUND
    assert expect(admin.delete(f"{base}/00000000-0000-0000-0000-000000000000"), 404) == \
        NOT_FOUND
    cred = make_key(admin, consumer)
    expect(admin.delete(f"{base}/{cred['key']}"), 204)
    assert expect(admin.delete(f"{base}/{cred['id']}"), 404) == NOT_FOUND


def test_nested_key_auth_put_by_key_and_by_id(admin):
    consumer = make_consumer(admin)
    base = f"/consumers/{consumer['username']}/key-auth"
    key = f"1234-{uuid.uuid4().hex[:6]}"
    body = expect(admin.put(f"{base}/{key}", json={}), 200)
    assert body["key"] == key and body["consumer"] == {"id": consumer["id"]}
    assert UUID_RE.match(body["id"])

    again = expect(admin.put(f"{base}/{key}", json={"tags": ["v2"]}), 200)
    assert again["id"] == body["id"] and again["tags"] == ["v2"]

    cid = str(uuid.uuid4())
    by_id = expect(admin.put(f"{base}/{cid}", json={}), 200)
    assert by_id["id"] == cid and GENERATED_KEY_RE.match(by_id["key"])
    assert by_id["consumer"] == {"id": consumer["id"]}
    assert expect(admin.get(f"/key-auths/{cid}"), 200) == by_id


def test_nested_key_auth_patch(admin):
    consumer = make_consumer(admin)
    base = f"/consumers/{consumer['id']}/key-auth"
    cred = make_key(admin, consumer)
    new_key = uniq("4321")
    body = expect(admin.patch(f"{base}/{cred['id']}", json={"key": new_key}), 200)
    assert body["key"] == new_key and body["id"] == cred["id"]
    newer = uniq("4321UPD")
    body = expect(admin.patch(f"{base}/{new_key}", **form(("key", newer))), 200)
    assert body["key"] == newer
    body = expect(admin.patch(f"{base}/{cred['id']}", json={"key": 123}), 400)
    assert body["fields"] == {"key": "expected a string"}


def test_key_auths_consumer_endpoint(admin):
    consumer = make_consumer(admin, custom_id=uniq("cid"))
    cred = make_key(admin, consumer)
    assert expect(admin.get(f"/key-auths/{cred['id']}/consumer"), 200) == consumer
    assert expect(admin.get(f"/key-auths/{cred['key']}/consumer"), 200) == consumer
    assert expect(admin.get(f"/key-auths/{uuid.uuid4()}/consumer"), 404) == NOT_FOUND
    assert expect(admin.get(f"/key-auths/{uniq('random')}/consumer"), 404) == NOT_FOUND
    assert expect(admin.delete(f"/key-auths/{cred['id']}/consumer"), 405) == \
        METHOD_NOT_ALLOWED
    assert expect(admin.get(f"/consumers/{consumer['id']}"), 200) == consumer
