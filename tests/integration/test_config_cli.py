"""`tollgate config validate|diff|sync|dump` against a real control plane.

What a decK user would notice: seed 004's four files apply in order with `config sync` (and
leave the Admin API in the state the tutorial relies on), `diff` shows changes without making
them, `_info.select_tags` keeps a sync to its own entities, a dump syncs back to exactly the
same configuration, and a bad file is refused with its position, a non-zero exit and nothing
written on the control plane (compared through the Admin API and the change log)."""
import re
import subprocess

import pytest
import yaml

from admin_helpers import expect, uniq
from admin_state import assert_nothing_written, list_all, state_snapshot
from harness.cp import clean_env
from harness.procs import wait_for
from harness.seed004 import HybridDp, seed_004_files, with_local_upstream
from harness.upstream import closed_port

SEED_TAG = "httpbin-service-route"
COLLECTIONS = ("/services", "/routes", "/consumers", "/plugins", "/key-auths")


def run(binary, verb, file, *args, url=None, env=None, timeout=120):
    full_env = clean_env()
    full_env.pop("TOLLGATE_ADMIN_URL", None)
    full_env.pop("TOLLGATE_ADMIN_TOKEN", None)
    full_env.update(env or {})
    cmd = [binary, "config", verb, str(file), *map(str, args)]
    if url:
        cmd += ["--admin-url", url]
    return subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=timeout)


def ok(proc):
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def by_name(admin, path, key="name"):
    return {e[key]: e for e in list_all(admin, path) if e.get(key)}


@pytest.fixture(scope="module")
def config(tollgate_bin):
    """config(verb, file, *args, cp=..., env=...) -> CompletedProcess."""
    def call(verb, file, *args, cp=None, **kw):
        return run(tollgate_bin, verb, file, *args, url=cp.admin_url if cp else None, **kw)
    return call


@pytest.fixture
def fresh_cp(cp_factory):
    """A control plane with an empty configuration of its own (sync without select_tags
    manages everything, so these tests must not share one)."""
    return cp_factory()


def snapshot(cp, pg_server):
    return state_snapshot(cp.admin, pg_server, cp.database)


# ------------------------------------------------------------------------------ validate

def test_validate_accepts_every_seed_004_file_and_notes_konnect(config, tmp_path):
    for i, text in enumerate(seed_004_files()):
        path = write(tmp_path, f"key-auth-{i}.yaml", text)
        out = ok(config("validate", path))
        assert f"{path}: valid" in out.stdout
        assert "_konnect" in out.stderr and "ignored" in out.stderr, out.stderr
    # The last file: one service, its route, two consumers with a key each, three plugins.
    assert "1 services, 1 routes, 2 consumers, 2 keyauth_credentials, 3 plugins" in out.stdout


BAD_FILES = {
    "yaml syntax error": (
        '_format_version: "3.0"\nservices:\n- name: s1\n  host: [unclosed\n',
        r":[45]:\d+:", ["expected", "line 4"]),
    "unknown entity": (
        '_format_version: "3.0"\nupstreamz:\n- name: u\n',
        r":2:1:", ["upstreamz", "unknown field"]),
    "unknown field": (
        '_format_version: "3.0"\nservices:\n- name: s1\n  host: example.com\n  colour: red\n',
        r":5:3:", ["services[0] (s1)", "colour", "unknown field"]),
    "wrong type": (
        '_format_version: "3.0"\nservices:\n- name: s1\n  host: example.com\n  port: "eighty"\n',
        r":5:\d+:", ["services[0] (s1)", "port", "expected an integer"]),
    "dangling reference": (
        '_format_version: "3.0"\nroutes:\n- name: r1\n  paths: [/x]\n  service: nowhere\n',
        r":5:\d+:", ["routes[0] (r1)", "service", "nowhere"]),
    "duplicate names": (
        '_format_version: "3.0"\nconsumers:\n- username: alice\n- username: alice\n',
        r":4:\d+:", ["consumers[1] (alice)", "username", "uniqueness violation"]),
    "duplicate nested route names": (
        '_format_version: "3.0"\nservices:\n- name: s1\n  host: a.example\n  routes:\n'
        '  - name: r\n    paths: [/a]\n- name: s2\n  host: b.example\n  routes:\n'
        '  - name: r\n    paths: [/b]\n',
        r":11:\d+:", ["services[1].routes[0] (r)", "name", "already declared"]),
    "bad plugin config": (
        '_format_version: "3.0"\nplugins:\n- name: rate-limiting\n  config:\n    minute: -1\n',
        r":5:\d+:", ["plugins[0] (rate-limiting)", "config.minute"]),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_bad_file_is_refused_with_its_position_and_changes_nothing(case, config, cp, pg_server,
                                                                     tmp_path):
    text, position, words = BAD_FILES[case]
    path = write(tmp_path, "bad.yaml", text)
    # Something on the CP that a sync of this file (no select_tags) would otherwise delete.
    expect(cp.admin.post("/consumers", json={"username": uniq("keep")}), 201)
    before = snapshot(cp, pg_server)
    for verb in ("validate", "diff", "sync"):
        out = config(verb, path, cp=cp)
        assert out.returncode != 0, f"{verb} accepted a file with a {case}: {out.stdout}"
        assert re.search(re.escape(str(path)) + position, out.stderr), out.stderr
        for w in words:
            assert w in out.stderr, f"{verb}: {w!r} not in {out.stderr!r}"
        assert "nothing was changed" in out.stderr
    assert_nothing_written(before, snapshot(cp, pg_server), case)


def test_an_unreadable_file_or_unreachable_admin_api_is_an_error(config, tmp_path, tollgate_bin):
    out = config("validate", tmp_path / "missing.yaml")
    assert out.returncode != 0 and "cannot read" in out.stderr
    good = write(tmp_path, "good.yaml", '_format_version: "3.0"\nconsumers:\n- username: x\n')
    out = run(tollgate_bin, "sync", good, url=f"http://127.0.0.1:{closed_port()}")
    assert out.returncode != 0 and "cannot reach the Admin API" in out.stderr, out.stderr
    out = run(tollgate_bin, "diff", good, url="ftp://example.com")
    assert out.returncode != 0 and "--admin-url" in out.stderr


# ------------------------------------------------------------------------------ seed 004

def test_seed_004_files_sync_in_order(config, fresh_cp, tmp_path):
    cp, admin = fresh_cp, fresh_cp.admin
    # Not carrying the seed's tag: outside the file's selection, so never touched.
    bystander = expect(admin.post("/consumers", json={"username": "bystander"}), 201)
    files = seed_004_files()
    ids = {}
    for step, text in enumerate(files, 1):
        path = write(tmp_path, "key-auth.yaml", text)
        out = ok(config("sync", path, cp=cp))
        assert "Summary" in out.stdout
        assert "_konnect" in out.stderr
        again = ok(config("diff", path, cp=cp))
        assert "No changes" in again.stdout, f"step {step}: diff after sync:\n{again.stdout}"

        services = by_name(admin, "/services")
        svc = services["httpbin-service"]
        assert (svc["host"], svc["port"], svc["protocol"]) == \
            ("httpbin.kong.svc.cluster.local", 8000, "http")
        route = by_name(admin, "/routes")["httpbin-route"]
        assert route["paths"] == ["/key-auth-route"] and route["service"]["id"] == svc["id"]
        plugins = by_name(admin, "/plugins", "instance_name")
        ka = plugins["key-auth1"]
        assert ka["name"] == "key-auth" and ka["service"]["id"] == svc["id"]
        assert ka["config"]["key_names"] == ["apikey"]
        for e in [svc, route, *plugins.values()]:
            assert SEED_TAG in e["tags"], e
        # Updates keep ids: every step after the first changes nothing on the service.
        ids.setdefault("service", svc["id"])
        assert svc["id"] == ids["service"]

        consumers = by_name(admin, "/consumers", "username")
        assert consumers["bystander"]["id"] == bystander["id"]
        expected_keys = {2: {"consumer1": "123456"},
                         3: {"consumer1": "123456", "consumer2": "987654"},
                         4: {"consumer1": "123456", "consumer2": "987654"}}.get(step, {})
        assert set(consumers) - {"bystander"} == set(expected_keys)
        for username, key in expected_keys.items():
            creds = expect(admin.get(f"/consumers/{username}/key-auth"), 200)["data"]
            assert [c["key"] for c in creds] == [key]
            assert SEED_TAG in consumers[username]["tags"] and SEED_TAG in creds[0]["tags"]
        if step == 4:
            rl = {plugins[n]["consumer"]["id"]: plugins[n]["config"]["minute"]
                  for n in ("rate-limiting1", "rate-limiting2")}
            assert rl == {consumers["consumer1"]["id"]: 5, consumers["consumer2"]["id"]: 8}
            assert plugins["rate-limiting1"]["name"] == "rate-limiting"
        else:
            assert "rate-limiting1" not in plugins

    # Going back to the first file deletes what the later ones added, children first.
    path = write(tmp_path, "key-auth.yaml", files[0])
    out = ok(config("sync", path, cp=cp))
    assert re.search(r"consumers\s+created 0, updated 0, deleted 2", out.stdout), out.stdout
    assert re.search(r"plugins\s+created 0, updated 0, deleted 2", out.stdout), out.stdout
    assert set(by_name(admin, "/consumers", "username")) == {"bystander"}
    assert list_all(admin, "/key-auths") == []


def test_seed_004_behaviour_through_a_hybrid_data_plane(config, cp_factory, tollgate_bin, workdir,
                                                      tmp_path):
    """The tutorial's curl checks, on a data plane fed by the control plane's sync (not DB-less):
    401 without a key, 200 with either key, 429 for consumer1 after 5 requests a minute while
    consumer2 (8 a minute) still passes."""
    h = HybridDp(cp_factory, tollgate_bin, workdir, "cfg-dp")
    cp, status, wait_status = h.cp, h.status, h.wait_status
    try:
        def apply(text):
            text = with_local_upstream(text, h.up.port)
            ok(config("sync", write(tmp_path, "key-auth.yaml", text), cp=cp))

        files = seed_004_files()
        apply(files[0])
        r = wait_status(401)
        assert r.headers["WWW-Authenticate"].startswith("Key")
        assert r.json()["message"] == "No API key found in request"
        apply(files[1])
        wait_status(200, "123456")
        assert status("12").status_code == 401
        apply(files[2])
        wait_status(200, "987654")
        apply(files[3])
        wait_for(lambda: (r := status("987654")) is not None and
                 r.headers.get("X-RateLimit-Limit-Minute") == "8", 60, interval=0.1,
                 what="consumer2's rate limit on the data plane")
        seen = []
        for _ in range(13):  # 5 a minute: a 429 comes even if a minute starts meanwhile
            r = status("123456")
            seen.append(r.status_code)
            if r.status_code == 429:
                break
            assert r.headers["X-RateLimit-Limit-Minute"] == "5"
        assert seen[-1] == 429, seen
        assert r.json()["message"] == "API rate limit exceeded" and "Retry-After" in r.headers
        r = status("987654")
        assert r.status_code == 200 and r.headers["X-RateLimit-Limit-Minute"] == "8"
    finally:
        h.stop()


# ------------------------------------------------------------------------------ diff, sync

BASE = """_format_version: "3.0"
services:
- name: orders
  url: http://orders.internal:8080/v1
  routes:
  - name: orders-route
    paths: [/orders]
    methods: [GET, POST]
  plugins:
  - name: key-auth
consumers:
- username: alice
  keyauth_credentials:
  - key: alice-key
- username: bob
"""

CHANGED = """_format_version: "3.0"
services:
- name: orders
  url: http://orders.internal:9090/v1
  routes:
  - name: orders-route
    paths: [/orders, /o]
    methods: [GET, POST]
  - name: orders-admin
    paths: [/orders-admin]
  plugins:
  - name: key-auth
consumers:
- username: alice
  keyauth_credentials:
  - key: alice-key
"""


def test_diff_shows_the_changes_and_writes_nothing(config, fresh_cp, pg_server, tmp_path):
    cp = fresh_cp
    ok(config("sync", write(tmp_path, "base.yaml", BASE), cp=cp))
    before = snapshot(cp, pg_server)
    out = ok(config("diff", write(tmp_path, "changed.yaml", CHANGED), cp=cp))
    text = out.stdout
    assert "updating service orders" in text and "~ port: 8080 -> 9090" in text, text
    assert "updating route orders-route" in text and '"/o"' in text, text
    assert "creating route orders-admin" in text, text
    assert "deleting consumer bob" in text, text
    assert re.search(r"total\s+created 1, updated 2, deleted 1", text), text
    assert_nothing_written(before, snapshot(cp, pg_server), "config diff")

    ok(config("sync", write(tmp_path, "changed.yaml", CHANGED), cp=cp))
    svc = by_name(cp.admin, "/services")["orders"]
    assert svc["port"] == 9090
    assert set(by_name(cp.admin, "/routes")) == {"orders-route", "orders-admin"}
    assert set(by_name(cp.admin, "/consumers", "username")) == {"alice"}
    assert "No changes" in ok(config("diff", tmp_path / "changed.yaml", cp=cp)).stdout


def test_sync_adopts_entities_created_through_the_admin_api_by_name(config, fresh_cp, tmp_path):
    admin = fresh_cp.admin
    svc = expect(admin.post("/services", json={"name": "orders", "host": "old.internal"}), 201)
    alice = expect(admin.post("/consumers", json={"username": "alice"}), 201)
    cred = expect(admin.post("/consumers/alice/key-auth", json={"key": "alice-key"}), 201)
    ok(config("sync", write(tmp_path, "base.yaml", BASE), cp=fresh_cp))
    after = by_name(admin, "/services")["orders"]
    assert after["id"] == svc["id"] and after["host"] == "orders.internal"
    assert (after["port"], after["path"]) == (8080, "/v1")
    route = by_name(admin, "/routes")["orders-route"]
    assert route["service"]["id"] == svc["id"]
    assert by_name(admin, "/consumers", "username")["alice"]["id"] == alice["id"]
    creds = list_all(admin, "/key-auths")
    assert [(c["id"], c["key"]) for c in creds] == [(cred["id"], "alice-key")]
    plugin = list_all(admin, "/plugins")
    assert len(plugin) == 1 and plugin[0]["service"]["id"] == svc["id"]


def test_a_route_moves_to_a_new_service_before_its_old_service_is_deleted(config, fresh_cp,
                                                                            tmp_path):
    # Routes hold their service restrictively (as in Kong): the old service can only be
    # deleted once the route points at the new one.
    old = ('_format_version: "3.0"\nservices:\n- name: old-svc\n  host: old.internal\n'
           '  routes:\n  - name: moving\n    paths: [/m]\n')
    ok(config("sync", write(tmp_path, "m.yaml", old), cp=fresh_cp))
    route_id = by_name(fresh_cp.admin, "/routes")["moving"]["id"]
    new = old.replace("old-svc", "new-svc").replace("old.internal", "new.internal")
    out = ok(config("sync", write(tmp_path, "m.yaml", new), cp=fresh_cp))
    lines = out.stdout.splitlines()
    assert lines.index("deleting service old-svc") > lines.index("updating route moving"), lines
    services = by_name(fresh_cp.admin, "/services")
    assert set(services) == {"new-svc"}
    route = by_name(fresh_cp.admin, "/routes")["moving"]
    assert route["id"] == route_id and route["service"]["id"] == services["new-svc"]["id"]


def test_a_credential_without_key_keeps_the_key_the_cp_generated(config, fresh_cp, tmp_path):
    path = write(tmp_path, "k.yaml", '_format_version: "3.0"\nconsumers:\n- username: carol\n'
                                     '  keyauth_credentials:\n  - tags: [generated]\n')
    ok(config("sync", path, cp=fresh_cp))
    first = list_all(fresh_cp.admin, "/key-auths")
    assert len(first) == 1 and re.fullmatch(r"[A-Za-z0-9]{32}", first[0]["key"])
    assert "No changes" in ok(config("diff", path, cp=fresh_cp)).stdout
    ok(config("sync", path, cp=fresh_cp))
    assert list_all(fresh_cp.admin, "/key-auths") == first


def test_sync_stops_at_the_first_admin_api_error_with_its_message(config, cp, tmp_path):
    tag, taken = uniq("tag"), uniq("taken")
    # A username the file's selection cannot see: the CP refuses the create with 409.
    expect(cp.admin.post("/consumers", json={"username": taken}), 201)
    path = write(tmp_path, "conflict.yaml", f"""_format_version: "3.0"
_info:
  select_tags: [{tag}]
services:
- name: {uniq("svc")}
  host: example.com
consumers:
- username: {taken}
- username: {uniq("later")}
""")
    out = config("sync", path, cp=cp)
    assert out.returncode != 0
    assert f"creating consumer {taken}" in out.stderr and "HTTP 409" in out.stderr, out.stderr
    assert "UNIQUE violation" in out.stderr, out.stderr
    assert "Stopped at the first error" in out.stdout
    # The service (before the failure) was created; the consumer after it was not.
    tagged = list_all(cp.admin, "/consumers") + list_all(cp.admin, "/services")
    mine = [e for e in tagged if tag in (e.get("tags") or [])]
    assert [e.get("host") for e in mine] == ["example.com"], mine


# ------------------------------------------------------------------------------ select_tags

def team_file(tag, consumers, extra=""):
    lines = ['_format_version: "3.0"', "_info:", "  select_tags:", f"  - {tag}", "consumers:"]
    lines += [f"- username: {c}" for c in consumers]
    return "\n".join(lines) + "\n" + extra


def test_select_tags_keep_each_file_to_its_own_entities(config, cp, tmp_path):
    a, b = uniq("team-a"), uniq("team-b")
    outsider = expect(cp.admin.post("/consumers", json={"username": uniq("outsider")}), 201)
    ok(config("sync", write(tmp_path, "a.yaml", team_file(a, [f"{a}-1", f"{a}-2"])), cp=cp))
    ok(config("sync", write(tmp_path, "b.yaml", team_file(b, [f"{b}-1"])), cp=cp))
    names = by_name(cp.admin, "/consumers", "username")
    assert {f"{a}-1", f"{a}-2", f"{b}-1", outsider["username"]} <= set(names)
    assert names[f"{a}-1"]["tags"] == [a] and names[f"{b}-1"]["tags"] == [b]

    # Team A drops a consumer: only A's selection is compared, B and the outsider stay.
    out = ok(config("sync", write(tmp_path, "a.yaml", team_file(a, [f"{a}-1"])), cp=cp))
    assert f"deleting consumer {a}-2" in out.stdout
    assert re.search(r"total\s+created 0, updated 0, deleted 1", out.stdout), out.stdout
    names = by_name(cp.admin, "/consumers", "username")
    assert f"{a}-2" not in names and {f"{a}-1", f"{b}-1", outsider["username"]} <= set(names)

    # The same selection from the command line, for a file without _info.
    c = uniq("team-c")
    plain = write(tmp_path, "c.yaml", f'_format_version: "3.0"\nconsumers:\n- username: {c}-1\n')
    ok(config("sync", plain, "--select-tag", c, cp=cp))
    assert by_name(cp.admin, "/consumers", "username")[f"{c}-1"]["tags"] == [c]
    assert "No changes" in ok(config("diff", plain, "--select-tag", c, cp=cp)).stdout

    # Both given and different: refused before anything is read or written.
    out = config("sync", write(tmp_path, "a.yaml", team_file(a, [])), "--select-tag", b, cp=cp)
    assert out.returncode != 0 and "select_tags" in out.stderr


# ------------------------------------------------------------------------------ dump

RICH = """_format_version: "3.0"
services:
- name: catalog
  host: catalog.internal
  port: 8443
  protocol: https
  tags: [shop]
  routes:
  - name: catalog-route
    paths: [/catalog]
    strip_path: false
    plugins:
    - name: rate-limiting
      config: {second: 5, hour: 1000}
  - paths: [/unnamed]
    hosts: [shop.example.com]
  plugins:
  - name: key-auth
    config: {key_names: [apikey, x-api-key], hide_credentials: true}
- url: http://anonymous.internal/
routes:
- name: orphan-route
  paths: [/orphan]
consumers:
- username: "123456"
  custom_id: c-1
  keyauth_credentials:
  - key: "0042"
  - key: "on"
  plugins:
  - name: rate-limiting
    instance_name: rl-consumer
    config: {minute: 7}
- custom_id: only-custom
plugins:
- name: rate-limiting
  config: {day: 100000}
- name: rate-limiting
  service: catalog
  consumer: "123456"
  config: {minute: 3}
"""


def test_dump_nests_like_deck_and_syncs_back_to_the_same_config(config, cp_factory, tmp_path):
    src, dst = cp_factory(), cp_factory()
    ok(config("sync", write(tmp_path, "rich.yaml", RICH), cp=src))
    dump1 = tmp_path / "dump1.yaml"
    ok(config("dump", dump1, cp=src))
    doc = yaml.safe_load(dump1.read_text())
    assert doc["_format_version"] == "3.0"
    catalog = next(s for s in doc["services"] if s.get("name") == "catalog")
    assert {r.get("name") for r in catalog["routes"]} == {"catalog-route", None}
    assert [p["name"] for p in catalog["plugins"]] == ["key-auth"]
    route = next(r for r in catalog["routes"] if r.get("name") == "catalog-route")
    assert route["plugins"][0]["config"]["second"] == 5
    assert [r["name"] for r in doc["routes"]] == ["orphan-route"]
    consumer = next(c for c in doc["consumers"] if c.get("username") == "123456")
    assert sorted(k["key"] for k in consumer["keyauth_credentials"]) == ["0042", "on"]
    assert consumer["plugins"][0]["instance_name"] == "rl-consumer"
    # Global and multi-scope plugins stay top-level, referring to their entities by name.
    top = sorted(doc["plugins"], key=lambda p: str(p.get("service")))
    assert top[0].get("service") is None and top[0]["config"]["day"] == 100000
    assert (top[1]["service"], top[1]["consumer"]) == ("catalog", "123456")
    assert all("created_at" not in s for s in doc["services"])

    # No differences against its own source, then the same config on another control plane.
    assert "No changes" in ok(config("diff", dump1, cp=src)).stdout
    ok(config("sync", dump1, cp=dst))
    assert "No changes" in ok(config("diff", dump1, cp=dst)).stdout
    dump2 = tmp_path / "dump2.yaml"
    ok(config("dump", dump2, cp=dst))
    assert dump2.read_text() == dump1.read_text()
    strip = ("created_at", "updated_at")
    for path in COLLECTIONS:
        a = sorted((({k: v for k, v in e.items() if k not in strip}) for e in
                    list_all(src.admin, path)), key=lambda e: e["id"])
        b = sorted((({k: v for k, v in e.items() if k not in strip}) for e in
                    list_all(dst.admin, path)), key=lambda e: e["id"])
        assert a == b, path


def test_dump_with_select_tags_and_without_ids(config, cp, tmp_path):
    tag = uniq("dumped")
    ok(config("sync", write(tmp_path, "t.yaml", team_file(tag, [f"{tag}-x"], extra=(
        "services:\n- name: " + tag + "-svc\n  host: a.example\n  routes:\n"
        "  - paths: [/" + tag + "]\n"))), cp=cp))
    out = ok(config("dump", "-", "--select-tag", tag, "--without-ids", cp=cp))
    doc = yaml.safe_load(out.stdout)
    assert doc["_info"] == {"select_tags": [tag]}
    assert [c["username"] for c in doc["consumers"]] == [f"{tag}-x"]
    assert "id" not in doc["consumers"][0] and "id" not in doc["services"][0]
    assert "id" in doc["services"][0]["routes"][0]  # unnamed: only its id can match it
    path = write(tmp_path, "dumped.yaml", out.stdout)
    assert "No changes" in ok(config("diff", path, cp=cp)).stdout


# ------------------------------------------------------------------------------ HTTPS + token

def test_https_admin_api_with_a_token(config, cp, tmp_path, tollgate_bin):
    made = cp.run_cli("cp", "admin-token", "create", "--name", uniq("cfg"))
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip().splitlines()[-1].strip()
    name = uniq("tls")
    path = write(tmp_path, "tls.yaml", team_file(name, [name]))
    url = cp.admin_https_url
    out = run(tollgate_bin, "sync", path, "--tls-skip-verify", url=url)
    assert out.returncode != 0 and "401" in out.stderr and "admin-token" in out.stderr
    out = run(tollgate_bin, "sync", path, url=url, env={"TOLLGATE_ADMIN_TOKEN": token})
    assert out.returncode != 0 and "--ca-cert" in out.stderr
    ok(run(tollgate_bin, "sync", path, "--tls-skip-verify", url=url,
           env={"TOLLGATE_ADMIN_TOKEN": token}))
    assert by_name(cp.admin, "/consumers", "username")[name]["tags"] == [name]
