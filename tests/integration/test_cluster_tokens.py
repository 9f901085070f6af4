"""Join tokens and data plane records on the Admin API (/clustering/...) and the CLI
(`tollgate cp token create | list | revoke`), DESIGN.md §6.

A token is shown once, at creation, with the full `tollgate dp join` command line; it is stored
hashed and never listed. The CA hash in that command is the SHA-256 of the cluster CA's
SubjectPublicKeyInfo, the same from the Admin API, the CLI and the certificate in the database.
"""
import contextlib
import re
import time

import pytest

from admin_helpers import FORM, NOT_FOUND, UUID_RE, expect, uniq
from harness import cluster

TOKEN_RE = re.compile(r"^[a-z0-9]{6}\.[a-z0-9]{16}$")
HASH_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
BAD_TOKEN = {"message": "invalid or expired join token"}


def create(admin, status=201, **kw):
    return expect(admin.post("/clustering/join-tokens", **kw), status)


def listed_ids(admin):
    body = expect(admin.get("/clustering/join-tokens"), 200)
    assert body["next"] is None
    return {t["id"]: t for t in body["data"]}


def join_command_parts(cmd):
    m = re.fullmatch(r"tollgate dp join (\S+) --token (\S+) --ca-hash (\S+)", cmd)
    assert m, cmd
    return m.groups()


def stored_ca_hash(cp, pg_server):
    if not cluster.HAVE_CRYPTOGRAPHY:
        pytest.skip("python3-cryptography is not installed")
    with contextlib.closing(pg_server.connect(cp.database)) as conn, conn.cursor() as cur:
        cur.execute("SELECT cert_pem, key_enc FROM cluster_ca")
        rows = cur.fetchall()
    assert len(rows) == 1
    cert_pem, key_enc = rows[0]
    assert b"PRIVATE KEY" not in bytes(key_enc)  # encrypted under the keyring
    return cluster.spki_hash(cert_pem)


# ------------------------------------------------------------------------------ Admin API


def test_create_token_with_defaults(cp, admin, pg_server):
    before = time.time()
    body = create(admin, json={})
    assert TOKEN_RE.match(body["token"])
    assert body["id"] == body["token"][:6]
    assert UUID_RE.match(body["control_plane_id"])
    assert body["uses_left"] is None
    assert before + 86400 - 5 <= body["expires_at"] <= time.time() + 86400 + 5
    address, token, ca_hash = join_command_parts(body["join_command"])
    # cluster_listen names one address: that is what DPs are told to dial
    assert address == cp.cluster_address
    assert token == body["token"]
    assert HASH_RE.match(ca_hash)
    assert ca_hash == stored_ca_hash(cp, pg_server)
    status = expect(admin.get("/status"), 200)
    assert body["control_plane_id"] == status["configuration"]["control_plane_id"]


def test_create_token_from_form_and_json(admin):
    now = time.time()
    body = create(admin, data="ttl=90m&uses=2&description=edge+nodes", headers=FORM)
    assert body["uses_left"] == 2
    assert body["description"] == "edge nodes"
    assert now + 5400 - 5 <= body["expires_at"] <= time.time() + 5400 + 5
    body = create(admin, json={"ttl": 3600, "uses": 0, "description": None,
                               "control_plane": "default"})
    assert body["uses_left"] is None
    assert now + 3600 - 5 <= body["expires_at"] <= time.time() + 3600 + 5
    by_id = create(admin, json={"ttl": "7d", "control_plane": body["control_plane_id"]})
    assert by_id["control_plane_id"] == body["control_plane_id"]


def test_tokens_are_listed_without_secrets(admin):
    body = create(admin, json={"uses": 5, "description": uniq("list")})
    resp = admin.get("/clustering/join-tokens")
    assert body["token"] not in resp.text
    assert body["token"][7:] not in resp.text
    entry = listed_ids(admin)[body["id"]]
    assert "token" not in entry and "join_command" not in entry
    assert entry["uses_left"] == 5
    assert entry["expired"] is False
    assert entry["description"] == body["description"]
    one = expect(admin.get(f"/clustering/join-tokens/{body['id']}"), 200)
    assert one == entry


def test_delete_token(admin):
    body = create(admin, json={})
    assert expect(admin.delete(f"/clustering/join-tokens/{body['id']}"), 204) is None
    assert body["id"] not in listed_ids(admin)
    assert expect(admin.get(f"/clustering/join-tokens/{body['id']}"), 404) == NOT_FOUND
    assert expect(admin.delete(f"/clustering/join-tokens/{body['id']}"), 404) == NOT_FOUND
    assert expect(admin.delete("/clustering/join-tokens/not-a-token-id"), 404) == NOT_FOUND


@pytest.mark.parametrize("args, field", [
    ({"ttl": "abc"}, "ttl"),
    ({"ttl": 0}, "ttl"),
    ({"ttl": -5}, "ttl"),
    ({"ttl": "400d"}, "ttl"),
    ({"ttl": 1.5}, "ttl"),
    ({"uses": -1}, "uses"),
    ({"uses": "x"}, "uses"),
    ({"uses": True}, "uses"),
    ({"description": 42}, "description"),
    ({"description": "x" * 1001}, "description"),
    ({"control_plane": "no-such-control-plane"}, "control_plane"),
    ({"control_plane": "00000000-0000-4000-8000-000000000000"}, "control_plane"),
    ({"secret": "mine"}, "secret"),
])
def test_bad_token_input(admin, args, field):
    before = set(listed_ids(admin))
    body = create(admin, 400, json=args)
    assert body["name"] == "schema violation"
    assert field in body["fields"], body
    assert field in body["message"]
    assert set(listed_ids(admin)) == before  # nothing was created


def test_bad_token_input_forms(admin):
    body = create(admin, 400, data="uses=-3", headers=FORM)
    assert "uses" in body["fields"]
    resp = admin.post("/clustering/join-tokens", data="{not json",
                      headers={"Content-Type": "application/json"})
    assert expect(resp, 400) == {"message": "Cannot parse JSON body"}


def test_clustering_methods_and_paths(admin):
    for method, path in [("PUT", "/clustering/join-tokens"),
                         ("PATCH", "/clustering/join-tokens/abcdef"),
                         ("POST", "/clustering/data-planes"),
                         ("PUT", "/clustering/data-planes/x")]:
        resp = admin.request(method, path, json={})
        assert expect(resp, 405) == {"message": "Method not allowed"}
        assert "Allow" in resp.headers
    assert expect(admin.get("/clustering/other"), 404) == NOT_FOUND
    assert expect(admin.get("/clustering/join-tokens/abcdef/more"), 404) == NOT_FOUND


def test_data_planes_empty_and_unknown(admin):
    assert expect(admin.get("/clustering/data-planes"), 200) == {"data": [], "next": None}
    unknown = "00000000-0000-4000-8000-000000000000"
    assert expect(admin.get(f"/clustering/data-planes/{unknown}"), 404) == NOT_FOUND
    assert expect(admin.delete(f"/clustering/data-planes/{unknown}"), 404) == NOT_FOUND
    assert expect(admin.delete("/clustering/data-planes/not-a-uuid"), 404) == NOT_FOUND
    assert expect(admin.get("/clustering/data-planes/not-a-uuid"), 404) == NOT_FOUND


def test_data_plane_records_and_revocation(cp, admin, pg_server):
    """A DP row as the join endpoint leaves it: listed in Kong's shape, revoked by DELETE (the row
    stays, marked, and every CP node is told with NOTIFY)."""
    node = "6a1f3c52-7d2e-4b8a-9c01-23456789abcd"
    with contextlib.closing(pg_server.connect(cp.database)) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO data_planes (id, cp_id, hostname, token_id, cert_serial,"
                    " cert_expires_at, address) SELECT %s, id, 'edge-9', 'abcdef', 'ff01',"
                    " to_timestamp(2000000000), '192.0.2.9' FROM control_planes"
                    " WHERE name = 'default'", (node,))
        listener = pg_server.connect(cp.database)
        listener.cursor().execute("LISTEN tollgate_cluster")
    try:
        listed = expect(admin.get("/clustering/data-planes"), 200)
        assert listed["next"] is None
        [dp] = [d for d in listed["data"] if d["id"] == node]
        assert dp["hostname"] == "edge-9" and dp["ip"] == "192.0.2.9"
        assert dp["cert_details"] == {"expiry_timestamp": 2000000000}
        assert dp["sync_status"] == "unknown" and dp["config_version"] == 0
        assert dp["revoked_at"] is None and isinstance(dp["created_at"], int)
        for key in ("last_seen", "version", "config_hash", "last_error", "cp_node", "lag_versions",
                    "lag_seconds", "token_id", "cert_serial", "control_plane_id"):
            assert key in dp
        assert expect(admin.get(f"/clustering/data-planes/{node}"), 200) == dp

        assert expect(admin.delete(f"/clustering/data-planes/{node}"), 204) is None
        revoked = expect(admin.get(f"/clustering/data-planes/{node}"), 200)
        assert revoked["revoked_at"] is not None
        assert abs(revoked["revoked_at"] - time.time()) < 60

        def notified():
            listener.poll()
            return [n.payload for n in listener.notifies]
        deadline = time.time() + 10
        while f"revoke:{node}" not in notified() and time.time() < deadline:
            time.sleep(0.05)
        assert f"revoke:{node}" in notified()
        # revoking again keeps the first time
        assert expect(admin.delete(f"/clustering/data-planes/{node}"), 204) is None
        again = expect(admin.get(f"/clustering/data-planes/{node}"), 200)
        assert again["revoked_at"] == revoked["revoked_at"]
    finally:
        listener.close()


# ------------------------------------------------------------------------------ CLI


def cli_create(cp, *args):
    out = cp.run_cli("cp", "token", "create", *args)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 2, out.stdout
    return lines[0], lines[1], out


def test_cli_create_list_revoke(cp, admin):
    desc = uniq("cli")
    token, command, out = cli_create(cp, "--ttl", "90m", "--uses", "3", "--description", desc)
    assert TOKEN_RE.match(token)
    address, cmd_token, ca_hash = join_command_parts(command)
    assert address == cp.cluster_address and cmd_token == token
    # the CLI and the Admin API print the same CA pin
    assert ca_hash == join_command_parts(create(admin, json={})["join_command"])[2]
    assert "3 uses" in out.stderr

    entry = listed_ids(admin)[token[:6]]
    assert entry["uses_left"] == 3 and entry["description"] == desc
    assert time.time() + 5400 - 60 <= entry["expires_at"] <= time.time() + 5400 + 60

    listed = cp.run_cli("cp", "token", "list")
    assert listed.returncode == 0, listed.stderr
    [line] = [ln for ln in listed.stdout.splitlines() if ln.startswith(token[:6] + " ")]
    assert desc in line and " 3 " in line
    assert token[7:] not in listed.stdout

    revoked = cp.run_cli("cp", "token", "revoke", token[:6])
    assert revoked.returncode == 0, revoked.stderr
    assert token[:6] not in listed_ids(admin)
    assert token[:6] not in cp.run_cli("cp", "token", "list").stdout
    again = cp.run_cli("cp", "token", "revoke", token[:6])
    assert again.returncode == 1
    assert "no join token" in again.stderr


def test_cli_defaults(cp, admin):
    token, _, out = cli_create(cp)
    entry = listed_ids(admin)[token[:6]]
    assert entry["uses_left"] is None
    assert abs(entry["expires_at"] - (time.time() + 86400)) < 60
    assert "unlimited" in out.stderr
    token, _, _ = cli_create(cp, "--control-plane=default", "--ttl=3600", "--uses=0")
    assert listed_ids(admin)[token[:6]]["uses_left"] is None


@pytest.mark.parametrize("args, message", [
    (["create", "--ttl", "abc"], "--ttl"),
    (["create", "--ttl", "0"], "--ttl"),
    (["create", "--ttl", "400d"], "--ttl"),
    (["create", "--uses", "-1"], "--uses"),
    (["create", "--uses", "many"], "--uses"),
    (["create", "--ttl"], "needs a value"),
    (["create", "--bogus"], "unknown option"),
    (["create", "--control-plane", "no-such-control-plane"], "no control plane"),
    (["revoke", "not a token"], "not a join token id"),
    (["revoke"], "usage"),
    (["frobnicate"], "usage"),
])
def test_cli_bad_input(cp, admin, args, message):
    before = set(listed_ids(admin))
    out = cp.run_cli("cp", "token", *args)
    assert out.returncode == 1, out
    assert message in out.stderr, out.stderr
    assert out.stdout == ""
    assert set(listed_ids(admin)) == before


def test_cli_before_first_start_shares_the_ca(cp_factory):
    """`cp token create` on a brand-new embedded prefix creates the database and the CA, so the
    join command is complete before the first `cp start`; the CP then uses that same CA."""
    node = cp_factory(embedded=True, start=False)
    token, command, _ = cli_create(node)
    _, _, ca_hash = join_command_parts(command)
    node.start()
    try:
        listed = listed_ids(node.admin)
        assert token[:6] in listed
        created = create(node.admin, json={})
        assert join_command_parts(created["join_command"])[2] == ca_hash
        # while the CP runs, the CLI attaches to its embedded server
        token2, command2, _ = cli_create(node)
        assert join_command_parts(command2)[2] == ca_hash
        assert token2[:6] in listed_ids(node.admin)
    finally:
        node.stop()
