"""The Konnect-style Consumers API on the control plane: /v1/realms (docs/realms.md).

Seed 003's calls verbatim (plain HTTP on loopback, and through the HTTPS admin listener with an
admin token), every endpoint, cursor pagination, filters, the NOTIFY payloads the sync side
relies on, and bad input: every refused request answers application/problem+json with the right
status and invalid_parameters, and writes nothing (checked in PostgreSQL).
"""
import contextlib
import hashlib
import json
import re
import select
import time
import uuid

import pytest

from admin_helpers import UUID_RE, uniq
from admin_state import raw_request

pytestmark = pytest.mark.asan  # the realms handlers are C with hand-managed JSON refcounts

PROBLEM = "application/problem+json"
ISO_RE = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$"
NIL = "00000000-0000-0000-0000-000000000000"


# ----------------------------------------------------------------------------- helpers

def ok(resp, status):
    """Asserts a success status with a JSON body (None for 204) and returns the body."""
    where = f"{resp.request.method} {resp.request.path_url}"
    assert resp.status_code == status, f"{where}: {resp.status_code} {resp.text[:2000]}"
    if status == 204:
        assert resp.content == b""
        return None
    assert resp.headers["Content-Type"].startswith("application/json"), resp.headers
    return resp.json()


def problem(resp, status, *params):
    """Asserts a problem document with `status`; each of params is (field, rule) that must be
    among invalid_parameters (and then no other fields may be listed). Returns the body."""
    where = f"{resp.request.method} {resp.request.path_url}"
    assert resp.status_code == status, f"{where}: {resp.status_code} {resp.text[:2000]}"
    assert resp.headers["Content-Type"].startswith(PROBLEM), f"{where}: {resp.headers}"
    body = resp.json()
    for key in ("status", "title", "type", "instance", "detail"):
        assert key in body, f"{where}: no {key} in {body}"
    assert body["status"] == status
    assert body["type"] == f"https://httpstatuses.com/{status}"
    got = [(p["field"], p["rule"]) for p in body.get("invalid_parameters", [])]
    for p in body.get("invalid_parameters", []):
        assert isinstance(p.get("reason"), str) and p["reason"], p
    if params:
        assert sorted(got) == sorted(params), f"{where}: invalid_parameters {got} != {list(params)}"
    return body


@pytest.fixture(scope="module")
def db(cp, pg_server):
    conn = pg_server.connect(cp.database)
    yield conn
    conn.close()


def snapshot(db):
    """Every realms row, as text: equal snapshots mean nothing was written."""
    out = {}
    with db.cursor() as cur:
        for table in ("realms", "realm_consumers", "realm_keys"):
            cur.execute(f"SELECT coalesce(string_agg(t::text, '|' ORDER BY t.id), '') FROM {table} t")
            out[table] = cur.fetchone()[0]
    return out


@contextlib.contextmanager
def unchanged(db):
    before = snapshot(db)
    yield
    assert snapshot(db) == before, "a refused request wrote to the realms tables"


@pytest.fixture(scope="module")
def listener(cp, pg_server):
    """A PostgreSQL session LISTENing on tollgate_realms, as a CP node does."""
    conn = pg_server.connect(cp.database)
    with conn.cursor() as cur:
        cur.execute("LISTEN tollgate_realms")
    yield conn
    conn.close()


def drain(conn, quiet=0.3):
    """Forgets every notification so far: waits until none has arrived for `quiet` seconds."""
    while True:
        conn.poll()
        if not conn.notifies and not select.select([conn], [], [], quiet)[0]:
            return
        conn.notifies.clear()


def notifications(conn, want=1, timeout=10):
    """The payloads received (at least `want`, bounded wait), decoded."""
    deadline = time.monotonic() + timeout
    while len(conn.notifies) < want and time.monotonic() < deadline:
        select.select([conn], [], [], 0.2)
        conn.poll()
    out = [json.loads(n.payload) for n in conn.notifies]
    conn.notifies.clear()
    return out


def cp_id(admin):
    return ok(admin.get("/status"), 200)["configuration"]["control_plane_id"]


def new_realm(admin, **fields):
    body = {"name": uniq("realm"), "allowed_control_planes": ["*"]}
    body.update(fields)
    return ok(admin.post("/v1/realms", json=body), 201)


def new_consumer(admin, realm, **fields):
    body = {"username": uniq("user")}
    body.update(fields)
    return ok(admin.post(f"/v1/realms/{realm['id']}/consumers", json=body), 201)


def digest(secret):
    return hashlib.sha256(secret.encode()).hexdigest()


# ----------------------------------------------------------------------------- seed 003

def test_seed_003_verbatim_on_loopback(admin, db):
    control_plane = cp_id(admin)
    # POST /v1/realms {name: prod, allowed_control_planes: [$KONNECT_CONTROL_PLANE_ID]} → 201
    realm = ok(admin.post("/v1/realms", json={"name": "prod", "allowed_control_planes": [control_plane]}),
               201)
    assert UUID_RE.match(realm["id"])
    assert realm["name"] == "prod"
    assert realm["allowed_control_planes"] == [control_plane]
    assert realm["ttl"] == 10 and realm["negative_ttl"] == 10  # Konnect's defaults (minutes)
    assert realm["consumer_groups"] == []
    assert realm["created_at"] == realm["updated_at"]
    assert re.match(ISO_RE, realm["created_at"]), realm["created_at"]

    # POST /v1/realms/$DECK_REALM_ID/consumers {username: Ariel} → 201
    consumer = ok(admin.post(f"/v1/realms/{realm['id']}/consumers", json={"username": "Ariel"}), 201)
    assert UUID_RE.match(consumer["id"])
    assert consumer["username"] == "Ariel"
    assert consumer["custom_id"] is None and consumer["type"] is None
    assert consumer["tags"] == [] and consumer["consumer_groups"] == []

    # POST .../consumers/$CONSUMER_ID/keys {type: new} → 201 with the secret
    key = ok(admin.post(f"/v1/realms/{realm['id']}/consumers/{consumer['id']}/keys",
                        json={"type": "new"}), 201)
    assert key["type"] == "new" and UUID_RE.match(key["id"])
    secret = key["secret"]
    assert isinstance(secret, str) and len(secret) >= 32

    # the secret is shown once: never listed, never stored
    keys = ok(admin.get(f"/v1/realms/{realm['id']}/consumers/{consumer['id']}/keys"), 200)
    assert [k["id"] for k in keys["data"]] == [key["id"]]
    assert "secret" not in keys["data"][0]
    got = ok(admin.get(f"/v1/realms/{realm['id']}/consumers/{consumer['id']}/keys/{key['id']}"), 200)
    assert "secret" not in got and got["type"] == "new"
    with db.cursor() as cur:
        cur.execute("SELECT encode(key_digest, 'hex'), t::text FROM realm_keys t WHERE id = %s",
                    (key["id"],))
        stored, row = cur.fetchone()
    assert stored == digest(secret)
    assert secret not in row


def test_seed_003_through_https_with_admin_token(cp, db):
    out = cp.run_cli("cp", "admin-token", "create", "--name", uniq("realms"))
    assert out.returncode == 0, out.stderr
    token = out.stdout.strip().splitlines()[-1].strip()
    anonymous = cp.admin_client(https=True)
    client = cp.admin_client(https=True, token=token)
    try:
        with unchanged(db):
            problem(anonymous.post("/v1/realms", json={"name": uniq("tls")}), 401)
            problem(anonymous.get("/v1/realms"), 401)
            wrong = cp.admin_client(https=True, token="tgat_not-a-real-token")
            problem(wrong.post("/v1/realms", json={"name": uniq("tls")}), 401)
            wrong.close()
        realm = ok(client.post("/v1/realms", json={"name": uniq("tls"),
                                                   "allowed_control_planes": [cp_id(client)]}), 201)
        consumer = ok(client.post(f"/v1/realms/{realm['id']}/consumers", json={"username": "Ariel"}),
                      201)
        key = ok(client.post(f"/v1/realms/{realm['id']}/consumers/{consumer['id']}/keys",
                             json={"type": "new"}), 201)
        assert key["secret"]
        assert ok(client.get(f"/v1/realms/{realm['id']}"), 200)["id"] == realm["id"]
    finally:
        anonymous.close()
        client.close()


# ----------------------------------------------------------------------------- realms

def test_realm_crud(admin, listener):
    control_plane = cp_id(admin)
    realm = new_realm(admin, allowed_control_planes=[control_plane.upper()], ttl=5, negative_ttl=30,
                      consumer_groups=["gold", "silver"])
    assert realm["allowed_control_planes"] == [control_plane]  # normalised to lower case
    assert (realm["ttl"], realm["negative_ttl"]) == (5, 30)
    assert realm["consumer_groups"] == ["gold", "silver"]
    assert ok(admin.get(f"/v1/realms/{realm['id']}"), 200) == realm
    assert ok(admin.get(f"/v1/realms/{realm['id'].upper()}"), 200)["id"] == realm["id"]

    drain(listener)
    # a rename changes nothing a data plane caches: no invalidation
    renamed = ok(admin.patch(f"/v1/realms/{realm['id']}", json={"name": realm["name"] + "-x"}), 200)
    assert renamed["name"] == realm["name"] + "-x"
    assert renamed["ttl"] == 5 and renamed["updated_at"] >= realm["updated_at"]
    assert notifications(listener, want=1, timeout=1) == []

    # who may use it, or for how long answers are cached: every DP drops the realm's cache
    patched = ok(admin.patch(f"/v1/realms/{realm['id']}", json={"allowed_control_planes": []}), 200)
    assert patched["allowed_control_planes"] == []
    assert notifications(listener) == [{"realm_id": realm["id"], "op": "realm_updated", "flush": True}]
    ok(admin.patch(f"/v1/realms/{realm['id']}", json={"ttl": 6}), 200)
    assert notifications(listener)[0]["op"] == "realm_updated"

    assert ok(admin.delete(f"/v1/realms/{realm['id']}"), 204) is None
    assert notifications(listener) == [{"realm_id": realm["id"], "op": "realm_deleted", "flush": True}]
    problem(admin.get(f"/v1/realms/{realm['id']}"), 404)
    problem(admin.delete(f"/v1/realms/{realm['id']}"), 404)


def test_realm_delete_needs_force_when_it_has_consumers(admin, db):
    realm = new_realm(admin)
    consumer = new_consumer(admin, realm)
    ok(admin.post(f"/v1/realms/{realm['id']}/consumers/{consumer['id']}/keys", json={"type": "new"}), 201)
    with unchanged(db):
        body = problem(admin.delete(f"/v1/realms/{realm['id']}"), 400)
        assert "force" in body["detail"]
        problem(admin.delete(f"/v1/realms/{realm['id']}", params={"force": "false"}), 400)
        problem(admin.delete(f"/v1/realms/{realm['id']}", params={"force": "yes"}), 400,
                ("force", "is_boolean"))
    ok(admin.delete(f"/v1/realms/{realm['id']}", params={"force": "true"}), 204)
    with db.cursor() as cur:
        cur.execute("SELECT (SELECT count(*) FROM realm_consumers WHERE realm_id = %s),"
                    " (SELECT count(*) FROM realm_keys WHERE realm_id = %s)", (realm["id"], realm["id"]))
        assert cur.fetchone() == (0, 0)
    # an empty realm needs no force
    empty = new_realm(admin)
    ok(admin.delete(f"/v1/realms/{empty['id']}", params={"force": "false"}), 204)


def test_realm_bad_input_writes_nothing(admin, db):
    existing = new_realm(admin)
    cases = [
        ({}, [("name", "required")]),
        ({"name": ""}, [("name", "min_length")]),
        ({"name": "x" * 256}, [("name", "max_length")]),
        ({"name": 12}, [("name", "is_string")]),
        ({"name": None}, [("name", "not_null")]),
        ({"name": uniq("r"), "colour": "red"}, [("colour", "unknown_property")]),
        ({"name": uniq("r"), "ttl": 4}, [("ttl", "min")]),
        ({"name": uniq("r"), "negative_ttl": 0}, [("negative_ttl", "min")]),
        ({"name": uniq("r"), "ttl": "10"}, [("ttl", "is_integer")]),
        ({"name": uniq("r"), "ttl": 10.5}, [("ttl", "is_integer")]),
        ({"name": uniq("r"), "ttl": True}, [("ttl", "is_integer")]),
        ({"name": uniq("r"), "ttl": 10 ** 9}, [("ttl", "max")]),
        ({"name": uniq("r"), "allowed_control_planes": "*"}, [("allowed_control_planes", "is_array")]),
        ({"name": uniq("r"), "allowed_control_planes": ["not-a-uuid"]},
         [("allowed_control_planes[0]", "is_uuid")]),
        ({"name": uniq("r"), "allowed_control_planes": [str(uuid.uuid4())]},
         [("allowed_control_planes[0]", "reference")]),
        ({"name": uniq("r"), "allowed_control_planes": ["*", "*"]},
         [("allowed_control_planes[1]", "unique")]),
        ({"name": uniq("r"), "allowed_control_planes": [7]}, [("allowed_control_planes[0]", "is_string")]),
        ({"name": uniq("r"), "consumer_groups": ["a", "a"]}, [("consumer_groups[1]", "unique")]),
        ({"name": uniq("r"), "consumer_groups": [""]}, [("consumer_groups[0]", "min_length")]),
        ({"ttl": 1, "extra": 1}, [("ttl", "min"), ("extra", "unknown_property"), ("name", "required")]),
    ]
    other = new_realm(admin)
    with unchanged(db):
        for body, params in cases:
            problem(admin.post("/v1/realms", json=body), 400, *params)
            if params[0][1] != "required":
                patch = {k: v for k, v in body.items() if k != "name" or params[0][0] == "name"}
                problem(admin.patch(f"/v1/realms/{existing['id']}", json=patch), 400,
                        *[p for p in params if p[1] != "required"])
        # duplicate names: 409 on create and on rename
        problem(admin.post("/v1/realms", json={"name": existing["name"]}), 409, ("name", "unique"))
    with unchanged(db):
        problem(admin.patch(f"/v1/realms/{other['id']}", json={"name": existing["name"]}), 409,
                ("name", "unique"))
        # malformed bodies
        resp = admin.post("/v1/realms", data="{not json", headers={"Content-Type": "application/json"})
        problem(resp, 400, ("body", "is_json"))
        problem(admin.post("/v1/realms", json=["name"]), 400, ("body", "is_object"))
        resp = admin.post("/v1/realms", data='{"name":"a","name":"b"}',
                          headers={"Content-Type": "application/json"})
        problem(resp, 400, ("body", "is_json"))
        problem(admin.post("/v1/realms", data="name=x",
                           headers={"Content-Type": "application/x-www-form-urlencoded"}), 415)
        # malformed and unknown ids
        problem(admin.get("/v1/realms/not-a-uuid"), 400, ("realmId", "is_uuid"))
        problem(admin.patch("/v1/realms/not-a-uuid", json={"ttl": 6}), 400, ("realmId", "is_uuid"))
        problem(admin.delete("/v1/realms/123"), 400, ("realmId", "is_uuid"))
        problem(admin.get(f"/v1/realms/{NIL}"), 404)
        problem(admin.patch(f"/v1/realms/{NIL}", json={"ttl": 6}), 404)
        problem(admin.delete(f"/v1/realms/{NIL}"), 404)
        # methods and paths
        body = problem(admin.put("/v1/realms", json={"name": "x"}), 405)
        assert "POST" in admin.put("/v1/realms", json={}).headers["Allow"]
        problem(admin.delete("/v1/realms"), 405)
        problem(admin.post(f"/v1/realms/{existing['id']}", json={}), 405)
        problem(admin.get(f"/v1/realms/{existing['id']}/nothing"), 404)


# ----------------------------------------------------------------------------- pagination, filters

def walk(admin, path, params, direction="next", max_pages=100):
    pages = []
    url = path
    while url and len(pages) < max_pages:
        body = ok(admin.get(url, params=params if url == path else None), 200)
        pages.append(body)
        url = body["meta"][direction]
    assert len(pages) < max_pages
    return pages


def test_cursor_pagination_and_filters(admin):
    realm = new_realm(admin)
    names = [f"pager-{i:02d}" for i in range(23)]
    made = [new_consumer(admin, realm, username=n, custom_id=f"cid-{n}", type="app" if i % 2 else "svc")
            for i, n in enumerate(names)]
    base = f"/v1/realms/{realm['id']}/consumers"

    first = ok(admin.get(base), 200)
    assert [c["id"] for c in first["data"]] == [c["id"] for c in made]  # creation order
    assert first["meta"] == {"next": None, "previous": None, "size": 100}

    pages = walk(admin, base, {"page[size]": 5})
    assert [len(p["data"]) for p in pages] == [5, 5, 5, 5, 3]
    assert [c["id"] for p in pages for c in p["data"]] == [c["id"] for c in made]
    assert pages[0]["meta"]["previous"] is None and pages[-1]["meta"]["next"] is None
    assert pages[1]["meta"]["next"].startswith(f"{base}?page[size]=5&page[after]=")
    assert all(p["meta"]["size"] == 5 for p in pages)

    # back from the last page with meta.previous
    back = walk(admin, pages[-1]["meta"]["previous"], None, direction="previous")
    assert [c["id"] for p in reversed(back) for c in p["data"]] == [c["id"] for c in made[:20]]

    # a cursor stays valid when its row is deleted
    after = pages[0]["meta"]["next"]
    ok(admin.delete(f"{base}/{made[4]['id']}"), 204)
    assert ok(admin.get(after), 200)["data"][0]["id"] == made[5]["id"]

    # filters, with the page size and filters kept in meta.next
    one = ok(admin.get(base, params={"filter[username]": "pager-07"}), 200)
    assert [c["id"] for c in one["data"]] == [made[7]["id"]]
    one = ok(admin.get(base, params={"filter[username][eq]": "pager-07"}), 200)
    assert [c["id"] for c in one["data"]] == [made[7]["id"]]
    one = ok(admin.get(base, params={"filter[username][oeq]": "PAGER-07"}), 200)
    assert [c["id"] for c in one["data"]] == [made[7]["id"]]
    one = ok(admin.get(base, params={"filter[custom_id]": "cid-pager-08"}), 200)
    assert [c["id"] for c in one["data"]] == [made[8]["id"]]
    assert ok(admin.get(base, params={"filter[username]": "nobody"}), 200)["data"] == []
    apps = walk(admin, base, {"filter[type]": "app", "filter[username][contains]": "pager-1", "page[size]": 2})
    got = [c["username"] for p in apps for c in p["data"]]
    assert got == [n for i, n in enumerate(names) if i % 2 and "pager-1" in n]
    assert "filter[type]=app" in apps[0]["meta"]["next"]

    realms = ok(admin.get("/v1/realms", params={"filter[name]": realm["name"]}), 200)
    assert [r["id"] for r in realms["data"]] == [realm["id"]]


def test_pagination_bad_input(cp, admin):
    realm = new_realm(admin)
    base = f"/v1/realms/{realm['id']}/consumers"
    problem(admin.get(base, params={"page[size]": "0"}), 400, ("page[size]", "min"))
    problem(admin.get(base, params={"page[size]": "1001"}), 400, ("page[size]", "max"))
    problem(admin.get(base, params={"page[size]": "ten"}), 400, ("page[size]", "is_integer"))
    problem(admin.get(base, params={"page[after]": "garbage!"}), 400, ("page[after]", "is_cursor"))
    problem(admin.get(base, params={"page[after]": "Zm9vLmJhcg"}), 400, ("page[after]", "is_cursor"))
    problem(admin.get(base, params={"page[number]": "2"}), 400, ("page[number]", "unknown_property"))
    problem(admin.get(base, params={"filter[colour]": "red"}), 400, ("filter[colour]", "unknown_property"))
    problem(admin.get(base, params={"filter[username][like]": "x"}), 400, ("filter[username][like]", "enum"))
    problem(admin.get(base, params={"filter": "x"}), 400, ("filter", "is_object"))
    problem(admin.get("/v1/realms", params={"page[size]": "-1"}), 400, ("page[size]", "min"))
    # an undecodable query string (sent raw: an HTTP library would re-encode it)
    raw = raw_request(cp.admin_port, f"GET {base}?filter[username]=%zz HTTP/1.1\r\nHost: x\r\n"
                                     "Connection: close\r\n\r\n".encode())
    assert raw.status_code == 400 and raw.headers["Content-Type"].startswith(PROBLEM), raw.raw[:500]
    # many filters are refused, not a crash (the SQL parameters are bounded)
    many = [(f"filter[{f}][{op}]", "x") for op in ("eq", "neq", "oeq", "contains", "ocontains")
            for f in ("username", "custom_id", "type", "id")]
    body = problem(admin.get(base, params=many), 400)
    assert any(p["rule"] == "max_items" for p in body["invalid_parameters"]), body
    assert ok(admin.get(base), 200)["data"] == []


# ----------------------------------------------------------------------------- consumers

def test_consumer_crud_and_notifications(admin, listener):
    realm = new_realm(admin, consumer_groups=["gold"])
    base = f"/v1/realms/{realm['id']}/consumers"
    c = ok(admin.post(base, json={"username": "Bob", "custom_id": "b-1", "type": "developer",
                                  "tags": ["a", "b"], "consumer_groups": ["beta"]}), 201)
    assert (c["username"], c["custom_id"], c["type"]) == ("Bob", "b-1", "developer")
    assert c["tags"] == ["a", "b"] and c["consumer_groups"] == ["beta"]
    assert ok(admin.get(f"{base}/{c['id']}"), 200) == c

    drain(listener)
    p = ok(admin.patch(f"{base}/{c['id']}", json={"custom_id": None, "tags": ["z"]}), 200)
    assert p["custom_id"] is None and p["tags"] == ["z"] and p["username"] == "Bob"
    assert notifications(listener) == [{"realm_id": realm["id"], "op": "consumer_updated", "flush": False,
                                        "key_digests": [], "consumer_ids": [c["id"]]}]

    keys = [ok(admin.post(f"{base}/{c['id']}/keys", json={"type": "new"}), 201) for _ in range(2)]
    assert [n["op"] for n in notifications(listener, want=2)] == ["key_created", "key_created"]
    ok(admin.delete(f"{base}/{c['id']}"), 204)
    got = notifications(listener)
    assert len(got) == 1 and got[0]["op"] == "consumer_deleted" and got[0]["consumer_ids"] == [c["id"]]
    assert sorted(got[0]["key_digests"]) == sorted(digest(k["secret"]) for k in keys)
    problem(admin.get(f"{base}/{c['id']}"), 404)
    problem(admin.delete(f"{base}/{c['id']}"), 404)
    problem(admin.get(f"{base}/{c['id']}/keys"), 404)


def test_consumer_bad_input_writes_nothing(admin, db):
    realm = new_realm(admin)
    base = f"/v1/realms/{realm['id']}/consumers"
    c = new_consumer(admin, realm, username="Carol", custom_id="carol-1")
    other = new_consumer(admin, realm)
    with unchanged(db):
        problem(admin.post(base, json={}), 400, ("username", "required"))
        problem(admin.post(base, json={"username": None}), 400, ("username", "not_null"))
        problem(admin.post(base, json={"username": 5}), 400, ("username", "is_string"))
        problem(admin.post(base, json={"username": "x", "tags": "t"}), 400, ("tags", "is_array"))
        problem(admin.post(base, json={"username": "x", "tags": ["t", "t"]}), 400, ("tags[1]", "unique"))
        problem(admin.post(base, json={"username": "x", "tags": [1]}), 400, ("tags[0]", "is_string"))
        problem(admin.post(base, json={"username": "x", "realm": "y"}), 400, ("realm", "unknown_property"))
        problem(admin.post(base, json={"username": "x", "custom_id": ""}), 400, ("custom_id", "min_length"))
        # usernames are unique per realm without regard to case; custom_ids too
        problem(admin.post(base, json={"username": "carol"}), 409, ("username", "unique"))
        problem(admin.post(base, json={"username": "dave", "custom_id": "carol-1"}), 409,
                ("custom_id", "unique"))
    with unchanged(db):
        problem(admin.patch(f"{base}/{other['id']}", json={"username": "CAROL"}), 409, ("username", "unique"))
        problem(admin.patch(f"{base}/{other['id']}", json={"username": None}), 400, ("username", "not_null"))
        problem(admin.patch(f"{base}/{other['id']}", json={"id": other["id"]}), 400, ("id", "unknown_property"))
        problem(admin.post(f"/v1/realms/{NIL}/consumers", json={"username": "x"}), 404)
        problem(admin.get(f"/v1/realms/{NIL}/consumers"), 404)
        problem(admin.get(f"{base}/nope"), 400, ("consumerId", "is_uuid"))
        problem(admin.get(f"{base}/{NIL}"), 404)
        problem(admin.patch(f"{base}/{NIL}", json={"type": "x"}), 404)
        problem(admin.delete(f"{base}/{NIL}"), 404)
        problem(admin.put(f"{base}/{c['id']}", json={}), 405)
    # the same username is fine in another realm
    elsewhere = new_realm(admin)
    new_consumer(admin, elsewhere, username="Carol", custom_id="carol-1")
    # a consumer is only reachable through its own realm
    problem(admin.get(f"/v1/realms/{elsewhere['id']}/consumers/{c['id']}"), 404)


# ----------------------------------------------------------------------------- keys

def test_keys(admin, db, listener):
    realm = new_realm(admin)
    c = new_consumer(admin, realm)
    base = f"/v1/realms/{realm['id']}/consumers/{c['id']}/keys"
    drain(listener)
    new = ok(admin.post(base, json={"type": "new", "tags": ["ci"]}), 201)
    assert set(new) == {"id", "type", "secret", "tags", "created_at", "updated_at"}
    assert new["tags"] == ["ci"]
    legacy = ok(admin.post(base, json={"type": "legacy", "secret": "my-old-kong-key"}), 201)
    assert legacy["secret"] == "my-old-kong-key" and legacy["type"] == "legacy"
    created = notifications(listener, want=2)
    assert [n["key_digests"] for n in created] == [[digest(new["secret"])], [digest("my-old-kong-key")]]

    listed = ok(admin.get(base), 200)
    assert [k["id"] for k in listed["data"]] == [new["id"], legacy["id"]]
    assert all(set(k) == {"id", "type", "tags", "created_at", "updated_at"} for k in listed["data"])
    assert [k["id"] for k in ok(admin.get(base, params={"filter[type]": "legacy"}), 200)["data"]] == \
        [legacy["id"]]

    other = new_consumer(admin, realm)
    with unchanged(db):
        problem(admin.post(base, json={}), 400, ("type", "required"))
        problem(admin.post(base, json={"type": "old"}), 400, ("type", "enum"))
        problem(admin.post(base, json={"type": "legacy"}), 400, ("secret", "required"))
        problem(admin.post(base, json={"type": "new", "secret": "x"}), 400, ("secret", "unknown_property"))
        problem(admin.post(base, json={"type": "legacy", "secret": ""}), 400, ("secret", "min_length"))
        problem(admin.post(base, json={"type": "legacy", "secret": 5}), 400, ("secret", "is_string"))
        problem(admin.post(base, json={"type": "new", "ttl": 5}), 400, ("ttl", "unknown_property"))
        # a legacy secret is unique per realm (it is the lookup key)
    with unchanged(db):
        problem(admin.post(f"/v1/realms/{realm['id']}/consumers/{other['id']}/keys",
                           json={"type": "legacy", "secret": "my-old-kong-key"}), 409, ("secret", "unique"))
        problem(admin.post(f"/v1/realms/{realm['id']}/consumers/{NIL}/keys", json={"type": "new"}), 404)
        problem(admin.get(f"{base}/{NIL}"), 404)
        problem(admin.delete(f"{base}/{NIL}"), 404)
        problem(admin.get(f"{base}/xyz"), 400, ("keyId", "is_uuid"))
        problem(admin.patch(f"{base}/{new['id']}", json={"tags": []}), 405)  # rotate = create + delete
        # a key is only reachable through its own consumer
        problem(admin.get(f"/v1/realms/{realm['id']}/consumers/{other['id']}/keys/{new['id']}"), 404)

    drain(listener)
    ok(admin.delete(f"{base}/{legacy['id']}"), 204)
    assert notifications(listener) == [{"realm_id": realm["id"], "op": "key_deleted", "flush": False,
                                        "key_digests": [digest("my-old-kong-key")],
                                        "consumer_ids": [c["id"]]}]
    problem(admin.get(f"{base}/{legacy['id']}"), 404)
    # the same legacy secret may be imported again once the old key is gone
    ok(admin.post(f"/v1/realms/{realm['id']}/consumers/{other['id']}/keys",
                  json={"type": "legacy", "secret": "my-old-kong-key"}), 201)


# ----------------------------------------------------------------------------- move

def test_move_consumer(admin, db, listener):
    source, target = new_realm(admin), new_realm(admin)
    c = new_consumer(admin, source, username="Mover", custom_id="m-1")
    key = ok(admin.post(f"/v1/realms/{source['id']}/consumers/{c['id']}/keys", json={"type": "new"}), 201)
    move = f"/v1/realms/{source['id']}/consumers/{c['id']}/move"

    clash = new_consumer(admin, target, username="MOVER")
    with unchanged(db):
        problem(admin.post(move, json={}), 400, ("target_realm_id", "required"))
        problem(admin.post(move, json={"target_realm_id": "x"}), 400, ("target_realm_id", "is_uuid"))
        problem(admin.post(move, json={"target_realm_id": str(uuid.uuid4())}), 400,
                ("target_realm_id", "reference"))
        problem(admin.post(move, json={"target_realm_id": source["id"]}), 400,
                ("target_realm_id", "different"))
        problem(admin.post(move, json={"target_realm_id": target["id"], "x": 1}), 400, ("x", "unknown_property"))
        problem(admin.post(f"/v1/realms/{source['id']}/consumers/{NIL}/move",
                           json={"target_realm_id": target["id"]}), 404)
        problem(admin.get(move), 405)
    with unchanged(db):
        problem(admin.post(move, json={"target_realm_id": target["id"]}), 409, ("username", "unique"))
    ok(admin.delete(f"/v1/realms/{target['id']}/consumers/{clash['id']}"), 204)

    drain(listener)
    assert ok(admin.post(move, json={"target_realm_id": target["id"]}), 201) == {"realm_id": target["id"]}
    assert notifications(listener) == [{"realm_id": source["id"], "op": "consumer_moved", "flush": False,
                                        "key_digests": [digest(key["secret"])], "consumer_ids": [c["id"]],
                                        "target_realm_id": target["id"]}]
    problem(admin.get(f"/v1/realms/{source['id']}/consumers/{c['id']}"), 404)
    moved = ok(admin.get(f"/v1/realms/{target['id']}/consumers/{c['id']}"), 200)
    assert moved["username"] == "Mover"
    keys = ok(admin.get(f"/v1/realms/{target['id']}/consumers/{c['id']}/keys"), 200)["data"]
    assert [k["id"] for k in keys] == [key["id"]]  # the keys moved along

    # a key whose secret the target realm already knows blocks the move
    back = new_consumer(admin, source)
    ok(admin.post(f"/v1/realms/{source['id']}/consumers/{back['id']}/keys",
                  json={"type": "legacy", "secret": "shared-secret"}), 201)
    ok(admin.post(f"/v1/realms/{target['id']}/consumers/{c['id']}/keys",
                  json={"type": "legacy", "secret": "shared-secret"}), 201)
    with unchanged(db):
        problem(admin.post(f"/v1/realms/{source['id']}/consumers/{back['id']}/move",
                           json={"target_realm_id": target["id"]}), 409, ("target_realm_id", "unique"))


def test_many_keys_make_the_notification_a_flush(admin, listener):
    realm = new_realm(admin)
    c = new_consumer(admin, realm)
    for _ in range(65):
        ok(admin.post(f"/v1/realms/{realm['id']}/consumers/{c['id']}/keys", json={"type": "new"}), 201)
    drain(listener)
    ok(admin.delete(f"/v1/realms/{realm['id']}/consumers/{c['id']}"), 204)
    assert notifications(listener) == [{"realm_id": realm["id"], "op": "consumer_deleted", "flush": True}]


def test_deleting_a_control_plane_removes_it_from_realms(admin, db):
    """The migration's trigger: no realm keeps the id of a control plane that is gone."""
    with db.cursor() as cur:
        cur.execute("INSERT INTO control_planes (id, name) VALUES (gen_random_uuid(), %s) RETURNING id",
                    (uniq("cp"),))
        other = str(cur.fetchone()[0])
    realm = new_realm(admin, allowed_control_planes=[cp_id(admin), other])
    with db.cursor() as cur:
        cur.execute("DELETE FROM control_planes WHERE id = %s", (other,))
    assert ok(admin.get(f"/v1/realms/{realm['id']}"), 200)["allowed_control_planes"] == [cp_id(admin)]


def test_concurrent_writes_get_their_real_answers(cp, admin, db):
    """Writes run in group-commit batches; a conflict in a batch is replayed alone, so every
    client gets its own answer: exactly one of several identical creates succeeds."""
    from concurrent.futures import ThreadPoolExecutor
    realm = new_realm(admin)
    name = uniq("race")

    def create(_):
        client = cp.admin_client()  # one session per thread
        try:
            return client.post(f"/v1/realms/{realm['id']}/consumers", json={"username": name}).status_code
        finally:
            client.close()

    with ThreadPoolExecutor(8) as pool:
        codes = sorted(pool.map(create, range(16)))
    assert codes.count(201) == 1 and codes.count(409) == 15, codes
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM realm_consumers WHERE realm_id = %s", (realm["id"],))
        assert cur.fetchone()[0] == 1


# ----------------------------------------------------------------------------- lookup (for sync)

def test_store_lookup_against_this_database(cp, pg_server, tollgate_bin):
    """realms/tests/test_realm_store.c: tg_realm_store_lookup() (found with the consumer and the
    realm's TTLs, not found, not allowed, "*", unknown realm, malformed ids) on the migrated
    database of this module's control plane."""
    import os
    import subprocess
    binary = os.path.join(os.path.dirname(tollgate_bin), "test_realm_store")
    if not os.access(binary, os.X_OK):
        pytest.skip(f"{binary} not built (cmocka missing?)")
    env = dict(os.environ, TOLLGATE_TEST_PG_CONNINFO=pg_server.dsn(cp.database))
    out = subprocess.run([binary], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "4 test(s)" in out.stdout + out.stderr and "SKIPPED" not in out.stdout + out.stderr, out.stdout
