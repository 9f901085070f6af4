"""Admin API informational endpoints (kong-compat.md §1.7): GET /, /status (with the control
plane's config_version), /endpoints, /schemas, /plugins/enabled; the change log every write
appends in PostgreSQL (DESIGN.md §4); keys at rest; the HTTPS listener and admin tokens."""
import socket

import pytest

from admin_helpers import (UUID_RE, config_version, control_plane_id, db_cursor,
                           expect, make_consumer, make_key, make_route, make_service, uniq)

RATE_LIMIT_ONE_OF = ("at least one of these fields must be non-empty: 'config.second', "
                     "'config.minute', 'config.hour', 'config.day', 'config.month', "
                     "'config.year'")
OK_VALIDATION = {"message": "schema validation successful"}


def fields_of(schema_fields):
    """Kong's schema "fields" array ([{name: {...}}, ...]) as a dict, keeping the order."""
    out = {}
    for item in schema_fields:
        assert isinstance(item, dict) and len(item) == 1, item
        out.update(item)
    return out


# ------------------------------------------------------------------------------ GET /

def test_root_reports_kong_version_and_node(admin):
    body = expect(admin.get("/"), 200)
    assert body["version"] == "3.10.0"
    assert UUID_RE.match(body["node_id"])
    assert body["hostname"] == socket.gethostname()
    assert body["configuration"]["database"] == "postgres"
    assert "enterprise" not in body["version"]
    available = body["plugins"]["available_on_server"]
    assert available["key-auth"]["priority"] == 1250
    assert available["rate-limiting"]["priority"] == 910
    for name in ("key-auth", "rate-limiting"):
        assert isinstance(available[name]["version"], str) and available[name]["version"]
    assert isinstance(body["plugins"]["enabled_in_cluster"], list)
    assert isinstance(body["tagline"], str)
    assert body["edition"] == "community"
    assert expect(admin.get("/"), 200)["node_id"] == body["node_id"]


def test_root_enabled_in_cluster_lists_configured_plugins(admin):
    route = make_route(admin)
    expect(admin.post(f"/routes/{route['id']}/plugins", json={"name": "key-auth"}), 201)
    assert "key-auth" in expect(admin.get("/"), 200)["plugins"]["enabled_in_cluster"]


# ------------------------------------------------------------------------------ /status

def test_status(admin):
    body = expect(admin.get("/status"), 200)
    assert body["database"] == {"reachable": True}
    assert isinstance(body["server"]["total_requests"], int)
    assert isinstance(body["configuration"]["config_version"], int)
    assert UUID_RE.match(body["configuration"]["control_plane_id"])


def test_config_version_counts_successful_writes_only(admin):
    version = config_version(admin)

    def step(resp, status, bump):
        nonlocal version
        expect(resp, status)
        now = config_version(admin)
        req = resp.request
        assert now == version + bump, \
            f"{req.method} {req.path_url} ({status}) moved config_version {version} -> {now}"
        version = now

    name = uniq("u")
    step(admin.post("/consumers", json={"username": name}), 201, 1)
    step(admin.post("/consumers", json={"username": name}), 409, 0)
    step(admin.post("/consumers", json={}), 400, 0)
    step(admin.post("/consumers", data="{oops", headers={"Content-Type": "application/json"}),
         400, 0)
    step(admin.patch(f"/consumers/{name}", json={"custom_id": uniq("c")}), 200, 1)
    step(admin.patch(f"/consumers/{uniq('nope')}", json={"custom_id": "x"}), 404, 0)
    step(admin.put(f"/consumers/{name}", json={"tags": ["a"]}), 200, 1)
    step(admin.post(f"/consumers/{name}/key-auth", json={}), 201, 1)
    step(admin.post(f"/consumers/{name}/key-auth", json={"key": 5}), 400, 0)
    step(admin.post(f"/consumers/{uniq('nope')}/key-auth", json={}), 404, 0)
    step(admin.post(f"/consumers/{name}/plugins",
                    json={"name": "rate-limiting", "config": {"minute": 2}}), 201, 1)
    step(admin.post("/plugins", json={"name": "nope"}), 400, 0)
    step(admin.post("/schemas/plugins/validate", json={"name": "key-auth"}), 200, 0)
    step(admin.get("/consumers"), 200, 0)

    svc = make_service(admin)
    version += 1
    make_route(admin, service=svc)
    version += 1
    assert config_version(admin) == version
    step(admin.delete(f"/services/{svc['id']}"), 400, 0)

    # A cascading delete (consumer + credential + plugin) is one write.
    step(admin.delete(f"/consumers/{name}"), 204, 1)
    step(admin.delete(f"/consumers/{name}"), 204, 0)


# ------------------------------------------------------------------------------ /endpoints

def test_endpoints_lists_the_admin_api(admin):
    data = expect(admin.get("/endpoints"), 200)["data"]
    assert len(data) == len(set(data))
    for path in ("/", "/status", "/endpoints", "/plugins/enabled", "/tags", "/tags/{tags}",
                 "/services", "/services/{services}", "/services/{services}/routes",
                 "/services/{services}/routes/{routes}", "/services/{services}/plugins",
                 "/services/{services}/plugins/{plugins}",
                 "/routes", "/routes/{routes}", "/routes/{routes}/service",
                 "/routes/{routes}/plugins", "/routes/{routes}/plugins/{plugins}",
                 "/consumers", "/consumers/{consumers}", "/consumers/{consumers}/plugins",
                 "/consumers/{consumers}/plugins/{plugins}",
                 "/plugins", "/plugins/{plugins}", "/plugins/{plugins}/route",
                 "/plugins/{plugins}/service", "/plugins/{plugins}/consumer",
                 "/key-auths", "/consumers/{consumers}/key-auth"):
        assert path in data, path


def test_endpoints_names_credential_parameters_and_sorts_like_kong(admin):
    data = expect(admin.get("/endpoints"), 200)["data"]
    # Kong names a path parameter after the schema (`/key-auths/:keyauth_credentials`).
    for path in ("/key-auths/{keyauth_credentials}", "/key-auths/{keyauth_credentials}/consumer",
                 "/consumers/{consumers}/key-auth/{keyauth_credentials}"):
        assert path in data, path
    # Kong sorts segment-wise ("/" sorts before any other character).
    assert data == sorted(data, key=lambda p: p.replace("/", "\x00"))


# ------------------------------------------------------------------------------ /schemas

def test_entity_schemas(admin):
    services = fields_of(expect(admin.get("/schemas/services"), 200)["fields"])
    assert services["host"]["type"] == "string" and services["host"]["required"] is True
    assert services["retries"]["default"] == 5
    assert services["port"]["default"] == 80
    assert services["protocol"]["default"] == "http"
    assert services["read_timeout"]["default"] == 60000

    routes = fields_of(expect(admin.get("/schemas/routes"), 200)["fields"])
    assert routes["protocols"]["default"] == ["http", "https"]
    assert routes["strip_path"]["default"] is True
    assert routes["path_handling"]["default"] == "v0"
    assert routes["https_redirect_status_code"]["default"] == 426
    assert routes["service"]["type"] == "foreign"

    consumers = fields_of(expect(admin.get("/schemas/consumers"), 200)["fields"])
    assert {"id", "username", "custom_id", "tags", "created_at"} <= set(consumers)

    creds = fields_of(expect(admin.get("/schemas/keyauth_credentials"), 200)["fields"])
    assert creds["consumer"]["type"] == "foreign" and creds["key"]["type"] == "string"

    assert expect(admin.get("/schemas/nope"), 404) == {"message": "No entity named 'nope'"}


def test_plugin_schemas(admin):
    ka = fields_of(expect(admin.get("/schemas/plugins/key-auth"), 200)["fields"])
    config = fields_of(ka["config"]["fields"])
    assert ka["config"]["type"] == "record"
    assert config["key_names"]["default"] == ["apikey"]
    assert config["key_names"]["type"] == "array"
    assert config["hide_credentials"]["default"] is False
    assert config["key_in_body"]["default"] is False
    assert config["run_on_preflight"]["default"] is True
    assert ka["protocols"]["default"] == ["grpc", "grpcs", "http", "https", "ws", "wss"]

    rl = fields_of(expect(admin.get("/schemas/plugins/rate-limiting"), 200)["fields"])
    config = fields_of(rl["config"]["fields"])
    assert config["limit_by"]["default"] == "consumer"
    assert config["policy"]["default"] == "local"
    assert config["error_code"]["default"] == 429
    assert config["error_message"]["default"] == "API rate limit exceeded"
    assert config["minute"]["type"] == "number"

    assert expect(admin.get("/schemas/plugins/nope"), 404) == {"message": "No plugin named 'nope'"}


def test_validate_endpoints_store_nothing(admin):
    before = config_version(admin)
    plugins_before = expect(admin.get("/plugins", params={"size": 1000}), 200)["data"]
    assert expect(admin.post("/schemas/plugins/validate", json={"name": "key-auth"}), 200) == \
        OK_VALIDATION
    assert expect(admin.post("/schemas/plugins/validate",
                             data="name=rate-limiting&config.minute=3",
                             headers={"Content-Type": "application/x-www-form-urlencoded"}),
                  200) == OK_VALIDATION
    assert expect(admin.post("/schemas/plugins/validate", json={"name": "rate-limiting"}), 400) \
        == {"code": 2, "name": "schema violation",
            "message": f"schema violation ({RATE_LIMIT_ONE_OF})",
            "fields": {"@entity": [RATE_LIMIT_ONE_OF]}}
    body = expect(admin.post("/schemas/plugins/validate", json={"name": "nope"}), 400)
    assert body["code"] == 2 and "name" in body["fields"]

    assert expect(admin.post("/schemas/consumers/validate", json={"username": uniq("v")}),
                  200) == OK_VALIDATION
    body = expect(admin.post("/schemas/consumers/validate", json={}), 400)
    assert body["fields"] == {"@entity": [
        "at least one of these fields must be non-empty: 'custom_id', 'username'"]}
    assert expect(admin.post("/schemas/services/validate", json={"host": "h.test"}), 200) == \
        OK_VALIDATION

    assert config_version(admin) == before
    assert expect(admin.get("/plugins", params={"size": 1000}), 200)["data"] == plugins_before


def test_plugins_enabled(admin):
    body = expect(admin.get("/plugins/enabled"), 200)
    assert set(body) == {"enabled_plugins"}
    assert {"key-auth", "rate-limiting"} <= set(body["enabled_plugins"])


# ------------------------------------------------------------------------------ change log

def test_cascading_delete_writes_one_version_children_first(admin, cp, pg_server):
    consumer = make_consumer(admin)
    k1, k2 = make_key(admin, consumer), make_key(admin, consumer)
    plugin = expect(admin.post(f"/consumers/{consumer['id']}/plugins",
                               json={"name": "rate-limiting", "config": {"minute": 9}}), 201)
    cp_id = control_plane_id(admin)
    before = config_version(admin)

    expect(admin.delete(f"/consumers/{consumer['id']}"), 204)
    assert config_version(admin) == before + 1

    with db_cursor(pg_server, cp) as cur:
        cur.execute("SELECT version, changes FROM config_versions WHERE cp_id = %s "
                    "AND version > %s ORDER BY version", (cp_id, before))
        assert cur.fetchall() == [(before + 1, 4)]
        cur.execute("SELECT seq, entity_type, entity_id::text, op FROM config_changes "
                    "WHERE cp_id = %s AND version = %s ORDER BY seq", (cp_id, before + 1))
        rows = cur.fetchall()
    assert [r[0] for r in rows] == sorted({r[0] for r in rows}) and len(rows) == 4
    assert all(r[3] == "delete" for r in rows)
    assert (rows[-1][1], rows[-1][2]) == ("consumers", consumer["id"])
    assert {(r[1], r[2]) for r in rows[:-1]} == {("keyauth_credentials", k1["id"]),
                                                  ("keyauth_credentials", k2["id"]),
                                                  ("plugins", plugin["id"])}


def test_each_write_is_one_version_with_its_changes(admin, cp, pg_server):
    cp_id = control_plane_id(admin)
    before = config_version(admin)
    consumer = make_consumer(admin)
    cred = make_key(admin, consumer)
    expect(admin.patch(f"/key-auths/{cred['id']}", json={"tags": ["x"]}), 200)
    expect(admin.delete(f"/key-auths/{cred['id']}"), 204)
    with db_cursor(pg_server, cp) as cur:
        cur.execute("SELECT v.version, v.changes, c.seq, c.entity_type, c.entity_id::text, c.op "
                    "FROM config_versions v JOIN config_changes c USING (cp_id, version) "
                    "WHERE v.cp_id = %s AND v.version > %s ORDER BY v.version, c.seq",
                    (cp_id, before))
        rows = cur.fetchall()
    assert [(r[0], r[1], r[3], r[4], r[5]) for r in rows] == [
        (before + 1, 1, "consumers", consumer["id"], "upsert"),
        (before + 2, 1, "keyauth_credentials", cred["id"], "upsert"),
        (before + 3, 1, "keyauth_credentials", cred["id"], "upsert"),
        (before + 4, 1, "keyauth_credentials", cred["id"], "delete"),
    ]


def test_credentials_are_not_stored_in_plaintext(admin, cp, pg_server):
    consumer = make_consumer(admin)
    chosen = f"plain-{uniq('secret')}"
    creds = [make_key(admin, consumer, key=chosen), make_key(admin, consumer)]
    with db_cursor(pg_server, cp) as cur:
        cur.execute("SELECT id::text, row_to_json(t)::text FROM keyauth_credentials t "
                    "WHERE id = ANY(%s::uuid[])", ([c["id"] for c in creds],))
        rows = dict(cur.fetchall())
        cur.execute("SELECT string_agg(row_to_json(t)::text, ' ') FROM config_changes t")
        changes = cur.fetchone()[0] or ""
    assert set(rows) == {c["id"] for c in creds}
    for cred in creds:
        key = cred["key"]
        text = rows[cred["id"]]
        assert key not in text, f"key {key!r} stored in plaintext: {text}"
        assert key.encode().hex() not in text, f"key {key!r} stored as plain bytes: {text}"
        assert key not in changes
        # The Admin API still returns the key.
        assert expect(admin.get(f"/key-auths/{cred['id']}"), 200)["key"] == key


# ------------------------------------------------------------------------------ HTTPS + tokens

@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_https_admin_listener_requires_an_admin_token(cp):
    anonymous = cp.admin_client(https=True)
    try:
        resp = anonymous.get("/consumers")
        assert expect(resp, 401) == {"message": "Unauthorized"}
        assert expect(anonymous.get("/"), 401) == {"message": "Unauthorized"}
        bad = cp.admin_client(https=True, token="tgat_not-a-real-token")
        assert expect(bad.get("/status"), 401) == {"message": "Unauthorized"}
        bad.close()
    finally:
        anonymous.close()

    name = uniq("ci")
    out = cp.run_cli("cp", "admin-token", "create", "--name", name)
    assert out.returncode == 0, out.stderr
    token = out.stdout.strip().splitlines()[-1].strip()
    assert token and " " not in token

    client = cp.admin_client(https=True, token=token)
    try:
        assert expect(client.get("/"), 200)["version"] == "3.10.0"
        created = expect(client.post("/consumers", json={"username": uniq("tls")}), 201)
        assert expect(client.get(f"/consumers/{created['id']}"), 200)["id"] == created["id"]

        listed = cp.run_cli("cp", "admin-token", "list")
        assert listed.returncode == 0, listed.stderr
        lines = [line for line in listed.stdout.splitlines() if name in line.split()]
        assert len(lines) == 1, listed.stdout
        token_id = lines[0].split()[0]
        assert UUID_RE.match(token_id)
        assert token not in listed.stdout

        revoked = cp.run_cli("cp", "admin-token", "revoke", token_id)
        assert revoked.returncode == 0, revoked.stderr
        assert expect(client.get("/"), 401) == {"message": "Unauthorized"}
        listed = cp.run_cli("cp", "admin-token", "list")
        assert token_id not in listed.stdout
        again = cp.run_cli("cp", "admin-token", "revoke", token_id)
        assert again.returncode != 0
    finally:
        client.close()


def test_plain_http_listener_needs_no_token(cp):
    client = cp.admin_client(token="tgat_whatever")
    try:
        assert expect(client.get("/status"), 200)["database"]["reachable"] is True
    finally:
        client.close()
