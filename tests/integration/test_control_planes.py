"""Control planes (DESIGN.md §4, issue 5 item 1): Konnect's `/v2/control-planes` API, the
per-control-plane Admin API under `/v2/control-planes/{id}/core-entities/...`, join tokens bound
to a control plane, and a real data plane that receives only its own control plane's config.

Everything runs against one real CP on its own PostgreSQL database; the last tests add a real
`tollgate dp start` process enrolled with `tollgate dp join` and an echo upstream.
"""
import json
import os
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from harness import cluster
from harness.dp import DpProcess
from harness.procs import wait_for
from harness.upstream import EchoUpstream

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
PROBLEM = "application/problem+json"
CP_KEYS = {"id", "name", "description", "labels", "config", "created_at", "updated_at",
           "config_version"}


@pytest.fixture(scope="module")
def ccp(cp_factory):
    """A CP whose cluster listener advertises its loopback address (so enrolled DPs reach it)."""
    cp = cp_factory(start=False)
    cp.env["TOLLGATE_CLUSTER_ADVERTISE"] = cp.cluster_address
    cp.process.env = cp.env
    return cp.start()


@pytest.fixture(scope="module")
def api(ccp):
    return ccp.admin


def unique(prefix="cp"):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def create_cp(api, **body):
    body.setdefault("name", unique())
    r = api.post("/v2/control-planes", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def core(cp_id, path=""):
    return f"/v2/control-planes/{cp_id}/core-entities{path}"


def total(api):
    r = api.get("/v2/control-planes", params={"page[size]": "1"})
    assert r.status_code == 200, r.text
    return r.json()["meta"]["page"]["total"]


def assert_problem(r, status, field=None, rule=None):
    """A Konnect problem: status, content type, the required members and, for 400s, the
    invalid parameter named `field` with `rule`. Returns the matching parameter (or None)."""
    assert r.status_code == status, r.text
    assert r.headers["Content-Type"] == PROBLEM, r.headers
    body = r.json()
    assert body["status"] == status
    assert body["title"] and body["detail"]
    assert re.match(r"^kong:trace:\d+$", body["instance"]), body
    if status == 400:
        params = body["invalid_parameters"]
        assert params, body
        if field is not None:
            match = [p for p in params if p["field"] == field and (rule is None or p["rule"] == rule)]
            assert match, f"no invalid parameter {field}/{rule} in {params}"
            assert match[0]["reason"]
            return match[0]
    return None


def default_cp(api):
    r = api.get("/v2/control-planes", params={"filter[name][eq]": "default"})
    (cp,) = r.json()["data"]
    return cp


# ------------------------------------------------------------------------------ CRUD


def test_the_default_control_plane_is_listed_in_konnects_shape(api):
    cp = default_cp(api)
    assert set(cp) == CP_KEYS
    assert cp["id"] == api.get("/status").json()["configuration"]["control_plane_id"]
    assert ISO.match(cp["created_at"]) and ISO.match(cp["updated_at"])
    cfg = cp["config"]
    assert cfg["cluster_type"] == "CLUSTER_TYPE_CONTROL_PLANE"
    assert cfg["auth_type"] == "pki_client_certs"
    assert cfg["cloud_gateway"] is False and cfg["proxy_urls"] == []
    assert cfg["control_plane_endpoint"].startswith("https://")


@pytest.mark.asan
def test_create_get_update_delete(api):
    name = unique("crud")
    r = api.post("/v2/control-planes", json={"name": name, "description": "first one",
                                             "labels": {"env": "test", "team": "a.b-c_d"},
                                             "cluster_type": "CLUSTER_TYPE_CONTROL_PLANE",
                                             "auth_type": "pki_client_certs",
                                             "cloud_gateway": False, "proxy_urls": []})
    assert r.status_code == 201, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    cp = r.json()
    assert set(cp) == CP_KEYS
    assert uuid.UUID(cp["id"])
    assert (cp["name"], cp["description"]) == (name, "first one")
    assert cp["labels"] == {"env": "test", "team": "a.b-c_d"}
    assert cp["config_version"] == 0
    assert ISO.match(cp["created_at"]) and cp["created_at"] == cp["updated_at"]

    got = api.get(f"/v2/control-planes/{cp['id']}")
    assert got.status_code == 200 and got.json() == cp
    assert api.get(f"/v2/control-planes/{cp['id'].upper()}").json()["id"] == cp["id"]

    time.sleep(0.01)
    r = api.patch(f"/v2/control-planes/{cp['id']}", json={"description": "changed",
                                                          "labels": {"env": "prod"}})
    assert r.status_code == 200, r.text
    upd = r.json()
    assert upd["description"] == "changed" and upd["name"] == name
    assert upd["labels"] == {"env": "prod"}  # labels are replaced as a whole
    assert upd["created_at"] == cp["created_at"] and upd["updated_at"] > cp["updated_at"]
    r = api.patch(f"/v2/control-planes/{cp['id']}", json={"name": name + "-renamed"})
    assert r.status_code == 200 and r.json()["name"] == name + "-renamed"
    assert r.json()["description"] == "changed"  # untouched fields stay

    assert api.delete(f"/v2/control-planes/{cp['id']}").status_code == 204
    assert_problem(api.get(f"/v2/control-planes/{cp['id']}"), 404)
    assert_problem(api.delete(f"/v2/control-planes/{cp['id']}"), 404)
    assert_problem(api.patch(f"/v2/control-planes/{cp['id']}", json={}), 404)


def test_names_are_unique(api):
    a = create_cp(api)
    before = total(api)
    r = api.post("/v2/control-planes", json={"name": a["name"]})
    assert_problem(r, 409)
    assert a["name"] in r.json()["detail"]
    b = create_cp(api)
    assert_problem(api.patch(f"/v2/control-planes/{b['id']}", json={"name": a["name"]}), 409)
    assert api.get(f"/v2/control-planes/{b['id']}").json()["name"] == b["name"]
    assert_problem(api.post("/v2/control-planes", json={"name": "default"}), 409)
    assert total(api) == before + 1


def test_concurrent_creates_with_one_name(ccp):
    """Group commit batches concurrent writes: a duplicate in a batch must cost only itself."""
    name = unique("race")
    clients = [ccp.admin_client() for _ in range(8)]
    try:
        with ThreadPoolExecutor(len(clients)) as pool:
            results = list(pool.map(lambda c: c.post("/v2/control-planes", json={"name": name}),
                                    clients))
            others = list(pool.map(lambda c: c.post("/v2/control-planes", json={"name": unique()}),
                                   clients))
    finally:
        for c in clients:
            c.close()
    assert sorted(r.status_code for r in results) == [201] + [409] * 7, [r.text for r in results]
    assert all(r.status_code == 201 for r in others), [r.text for r in others]
    found = ccp.admin.get("/v2/control-planes", params={"filter[name][eq]": name}).json()
    assert found["meta"]["page"]["total"] == 1


def test_the_default_control_plane_cannot_be_deleted_or_renamed(api):
    d = default_cp(api)
    assert_problem(api.delete(f"/v2/control-planes/{d['id']}"), 409)
    assert_problem(api.patch(f"/v2/control-planes/{d['id']}", json={"name": "other"}), 400,
                   "name", "invalid")
    # its description and labels may change; keeping its name is fine
    r = api.patch(f"/v2/control-planes/{d['id']}", json={"name": "default", "labels": {"k": "v"}})
    assert r.status_code == 200 and r.json()["labels"] == {"k": "v"}
    assert default_cp(api)["id"] == d["id"]
    # the root paths still address it
    assert api.get("/status").json()["configuration"]["control_plane_id"] == d["id"]


# ------------------------------------------------------------------------------ bad input

LONG = "x" * 101


@pytest.mark.asan
@pytest.mark.parametrize("body, field, rule", [
    ({}, "name", "required"),
    ({"name": 5}, "name", "is_string"),
    ({"name": None}, "name", "is_string"),
    ({"name": ""}, "name", "min_length"),
    ({"name": LONG}, "name", "max_length"),
    ({"name": "tab\there"}, "name", "invalid"),
    ({"name": "ok", "bogus": 1}, "bogus", "unknown_property"),
    ({"name": "ok", "description": 3}, "description", "is_string"),
    ({"name": "ok", "description": "d" * 1001}, "description", "max_length"),
    ({"name": "ok", "labels": "env=test"}, "labels", "is_object"),
    ({"name": "ok", "labels": {"kong-thing": "v"}}, "labels.kong-thing", "is_label"),
    ({"name": "ok", "labels": {"_x": "v"}}, "labels._x", "is_label"),
    ({"name": "ok", "labels": {"-bad": "v"}}, "labels.-bad", "is_label"),
    ({"name": "ok", "labels": {"k" * 64: "v"}}, "labels." + "k" * 63, "is_label"),
    ({"name": "ok", "labels": {"env": ""}}, "labels.env", "is_label"),
    ({"name": "ok", "labels": {"env": "a b"}}, "labels.env", "is_label"),
    ({"name": "ok", "labels": {"env": 5}}, "labels.env", "is_string"),
    ({"name": "ok", "labels": {f"k{i}": "v" for i in range(51)}}, "labels", "max_items"),
    ({"name": "ok", "cluster_type": "CLUSTER_TYPE_SERVERLESS"}, "cluster_type", "enum"),
    ({"name": "ok", "auth_type": "pinned_client_certs"}, "auth_type", "enum"),
    ({"name": "ok", "cloud_gateway": True}, "cloud_gateway", "invalid"),
    ({"name": "ok", "cloud_gateway": "no"}, "cloud_gateway", "is_boolean"),
    ({"name": "ok", "proxy_urls": [{"host": "a", "port": 1, "protocol": "https"}]},
     "proxy_urls", "invalid"),
    ({"name": "ok", "proxy_urls": {}}, "proxy_urls", "is_array"),
])
def test_bad_create_bodies_write_nothing(api, body, field, rule):
    before = total(api)
    p = assert_problem(api.post("/v2/control-planes", json=body), 400, field, rule)
    assert p["source"] == "body"
    if rule == "enum":
        assert p["choices"]
    assert total(api) == before


def test_every_problem_is_reported_at_once(api):
    r = api.post("/v2/control-planes", json={"name": "", "labels": {"kic": "x"}, "what": 1})
    fields = {p["field"] for p in r.json()["invalid_parameters"]}
    assert fields == {"name", "labels.kic", "what"}


@pytest.mark.parametrize("data, headers, status", [
    ("{", {"Content-Type": "application/json"}, 400),
    ("[1]", {"Content-Type": "application/json"}, 400),
    ('"name"', {"Content-Type": "application/json"}, 400),
    ('{"name":"a","name":"b"}', {"Content-Type": "application/json"}, 400),
    ("name=x", {"Content-Type": "application/x-www-form-urlencoded"}, 415),
    ("name=x", {}, 415),
])
def test_bodies_that_are_not_a_json_object(api, data, headers, status):
    before = total(api)
    assert_problem(api.post("/v2/control-planes", data=data, headers=headers), status)
    assert total(api) == before


def test_bad_updates_write_nothing(api):
    cp = create_cp(api, labels={"a": "b"})
    url = f"/v2/control-planes/{cp['id']}"
    # cluster_type and cloud_gateway are fixed at creation, as in Konnect's update schema
    assert_problem(api.patch(url, json={"cluster_type": "CLUSTER_TYPE_CONTROL_PLANE"}), 400,
                   "cluster_type", "unknown_property")
    assert_problem(api.patch(url, json={"name": ""}), 400, "name", "min_length")
    assert_problem(api.patch(url, json={"description": "ok", "labels": {"mesh1": "x"}}), 400,
                   "labels.mesh1", "is_label")
    assert_problem(api.patch(url, data="nope", headers={"Content-Type": "application/json"}), 400)
    assert api.get(url).json() == cp


def test_ids_and_methods(api):
    assert_problem(api.get("/v2/control-planes/not-a-uuid"), 400, "controlPlaneId", "is_uuid")
    assert_problem(api.get(core("not-a-uuid", "/services")), 400, "controlPlaneId", "is_uuid")
    missing = str(uuid.uuid4())
    assert_problem(api.get(f"/v2/control-planes/{missing}"), 404)
    assert_problem(api.get(core(missing, "/services")), 404)
    assert_problem(api.post(core(missing, "/services"), json={"name": "x", "url": "http://a/"}), 404)
    r = api.put("/v2/control-planes", json={})
    assert_problem(r, 405)
    assert "POST" in r.headers["Allow"]
    assert_problem(api.post(f"/v2/control-planes/{missing}", json={}), 405)
    cp = create_cp(api)
    assert_problem(api.get(f"/v2/control-planes/{cp['id']}/nonsense"), 404)
    # under core-entities the Admin API answers in Kong's own format
    r = api.get(core(cp["id"], "/nonsense"))
    assert r.status_code == 404 and r.json() == {"message": "Not found"}
    r = api.get(core(cp["id"]))
    assert r.status_code == 404 and r.json() == {"message": "Not found"}


def test_https_listener_needs_an_admin_token(ccp):
    anonymous = ccp.admin_client(https=True)
    try:
        assert_problem(anonymous.get("/v2/control-planes"), 401)
        assert_problem(anonymous.post("/v2/control-planes", json={"name": unique()}), 401)
        # core-entities is the Kong Admin API: Kong's body
        d = default_cp(ccp.admin)
        r = anonymous.get(core(d["id"], "/services"))
        assert r.status_code == 401 and r.json() == {"message": "Unauthorized"}
    finally:
        anonymous.close()
    out = ccp.run_cli("cp", "admin-token", "create", "--name", unique("tok"))
    assert out.returncode == 0, out.stderr
    client = ccp.admin_client(https=True, token=out.stdout.strip().splitlines()[-1].strip())
    try:
        r = client.post("/v2/control-planes", json={"name": unique("tls")})
        assert r.status_code == 201, r.text
        assert client.get(core(r.json()["id"], "/services")).json()["data"] == []
    finally:
        client.close()


# ------------------------------------------------------------------------------ lists


@pytest.fixture(scope="module")
def listed(api):
    """Five control planes sharing a label, created in name order."""
    tag = uuid.uuid4().hex[:8]
    cps = [create_cp(api, name=f"list-{tag}-{i}", labels={"suite": tag, "n": str(i)})
           for i in range(5)]
    return tag, cps


def test_pagination(api, listed):
    tag, cps = listed
    seen = []
    for number in (1, 2, 3):
        r = api.get("/v2/control-planes", params={"labels": f"suite:{tag}", "page[size]": "2",
                                                  "page[number]": str(number)})
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) == {"data", "meta"}
        assert body["meta"] == {"page": {"number": number, "size": 2, "total": 5}}
        seen += [c["id"] for c in body["data"]]
    assert seen == [c["id"] for c in cps]  # oldest first, no repeats, nothing missed
    r = api.get("/v2/control-planes", params={"labels": f"suite:{tag}", "page[number]": "9"})
    assert r.json()["data"] == [] and r.json()["meta"]["page"]["total"] == 5
    r = api.get("/v2/control-planes")
    assert r.json()["meta"]["page"]["size"] == 10 and len(r.json()["data"]) <= 10


@pytest.mark.parametrize("params, field, rule", [
    ({"page[size]": "0"}, "page[size]", "min"),
    ({"page[size]": "1001"}, "page[size]", "max"),
    ({"page[size]": "ten"}, "page[size]", "is_integer"),
    ({"page[size]": ""}, "page[size]", "is_integer"),
    ({"page[number]": "-1"}, "page[number]", "min"),
    ({"page[number]": "1.5"}, "page[number]", "is_integer"),
    ({"filter[colour][eq]": "red"}, "filter[colour]", "unknown_property"),
    ({"filter[name][like]": "x"}, "filter[name]", "enum"),
    ({"filter[id][contains]": "x"}, "filter[id]", "enum"),
    ({"filter[cloud_gateway]": "maybe"}, "filter[cloud_gateway]", "is_boolean"),
    ({"sort": "colour"}, "sort", "enum"),
    ({"sort": "name sideways"}, "sort", "enum"),
])
def test_bad_list_arguments(api, params, field, rule):
    p = assert_problem(api.get("/v2/control-planes", params=params), 400, field, rule)
    assert p["source"] == "query"


def names(r):
    assert r.status_code == 200, r.text
    return [c["name"] for c in r.json()["data"]]


@pytest.mark.asan
def test_filters_labels_and_sort(api, listed):
    tag, cps = listed
    all_names = [c["name"] for c in cps]
    lab = {"labels": f"suite:{tag}"}
    get = lambda **p: names(api.get("/v2/control-planes", params={**lab, **p}))  # noqa: E731
    assert get(**{"filter[name][eq]": all_names[2]}) == [all_names[2]]
    assert get(**{"filter[name]": all_names[3]}) == [all_names[3]]
    assert get(**{"filter[name][neq]": all_names[0]}) == all_names[1:]
    assert get(**{"filter[name][contains]": f"{tag.upper()}-4"}) == [all_names[4]]
    ids = f"{cps[1]['id']},{cps[3]['id'].upper()}"
    assert get(**{"filter[id][oeq]": ids}) == [all_names[1], all_names[3]]
    assert get(**{"filter[id][eq]": cps[0]["id"]}) == [all_names[0]]
    assert get(**{"filter[cluster_type][eq]": "CLUSTER_TYPE_CONTROL_PLANE"}) == all_names
    assert get(**{"filter[cluster_type][eq]": "CLUSTER_TYPE_K8S_INGRESS_CONTROLLER"}) == []
    assert get(**{"filter[cluster_type][neq]": "CLUSTER_TYPE_CONTROL_PLANE"}) == []
    assert get(**{"filter[cloud_gateway]": "false"}) == all_names
    assert get(**{"filter[cloud_gateway]": "true"}) == []
    assert get(sort="name desc") == list(reversed(all_names))
    assert get(sort="created_at desc,name") == list(reversed(all_names))
    # labels: key:value pairs and bare keys, all of them must hold
    assert names(api.get("/v2/control-planes", params={"labels": f"suite:{tag},n:2"})) == \
        [all_names[2]]
    assert names(api.get("/v2/control-planes", params={"labels": f"suite:{tag},n"})) == all_names
    assert names(api.get("/v2/control-planes", params={"labels": f"suite:{tag},nope"})) == []
    assert names(api.get("/v2/control-planes", params={"labels": f"suite:{tag}x"})) == []


# ------------------------------------------------------------------------------ core entities


def version_of(api, cp_id):
    return api.get(f"/v2/control-planes/{cp_id}").json()["config_version"]


def root_version(api):
    return api.get("/status").json()["configuration"]["config_version"]


@pytest.mark.asan
def test_core_entities_are_isolated_per_control_plane(api):
    b = create_cp(api)
    B = lambda path="": core(b["id"], path)  # noqa: E731
    svc = unique("iso-svc")
    # the same names on both sides
    root_svc = api.post("/services", json={"name": svc, "url": "http://127.0.0.1:9/root"})
    b_svc = api.post(B("/services"), json={"name": svc, "url": "http://127.0.0.1:9/b"})
    assert root_svc.status_code == 201 and b_svc.status_code == 201, (root_svc.text, b_svc.text)
    root_svc, b_svc = root_svc.json(), b_svc.json()
    assert root_svc["id"] != b_svc["id"]

    # by name, each side sees its own; by id, never the other's
    assert api.get(f"/services/{svc}").json()["id"] == root_svc["id"]
    assert api.get(B(f"/services/{svc}")).json()["id"] == b_svc["id"]
    assert api.get(f"/services/{b_svc['id']}").status_code == 404
    assert api.get(B(f"/services/{root_svc['id']}")).status_code == 404
    assert root_svc["id"] not in [s["id"] for s in api.get(B("/services")).json()["data"]]
    assert b_svc["id"] not in [s["id"] for s in api.get("/services?size=1000").json()["data"]]

    # nested paths, foreign keys resolved within the control plane
    r = api.post(B(f"/services/{svc}/routes"), json={"name": svc + "-r", "paths": ["/b"]})
    assert r.status_code == 201, r.text
    route = r.json()
    assert route["service"] == {"id": b_svc["id"]}
    assert api.get(B(f"/routes/{route['id']}/service")).json()["id"] == b_svc["id"]
    assert api.get(f"/routes/{route['id']}").status_code == 404
    # a reference to the other control plane's entity does not resolve
    r = api.post(B("/routes"), json={"paths": ["/x"], "service": {"id": root_svc["id"]}})
    assert r.status_code == 400 and r.json()["name"] == "foreign key violation", r.text

    # consumers and key-auth credentials: the same username and key in both
    user = unique("iso-user")
    for prefix in ("", B()):
        c = api.post(f"{prefix}/consumers", json={"username": user})
        assert c.status_code == 201, c.text
        k = api.post(f"{prefix}/consumers/{user}/key-auth", json={"key": user + "-key"})
        assert k.status_code == 201, k.text
        assert api.get(f"{prefix}/key-auths/{user}-key").json()["consumer"] == {"id": c.json()["id"]}
    # plugins, scoped per control plane
    r = api.post(B(f"/services/{svc}/plugins"), json={"name": "key-auth"})
    assert r.status_code == 201, r.text
    assert api.get(f"/plugins/{r.json()['id']}").status_code == 404
    assert api.get(B("/plugins/enabled")).json()["enabled_plugins"]

    # tags and list links
    for i in range(3):
        assert api.post(B("/consumers"), json={"username": f"{user}-{i}", "tags": [user]}).status_code == 201
    t = api.get(B(f"/tags/{user}"))
    assert t.status_code == 200 and len(t.json()["data"]) == 3
    assert api.get(f"/tags/{user}").json()["data"] == []
    page = api.get(B("/consumers"), params={"size": "2", "tags": user}).json()
    assert page["next"].startswith(B("/consumers?offset="))
    rest = api.get(page["next"]).json()
    assert len(page["data"]) + len(rest["data"]) == 3 and rest["next"] is None

    # deleting in B leaves the root alone, and the reverse
    assert api.delete(B(f"/consumers/{user}")).status_code == 204
    assert api.get(f"/consumers/{user}").status_code == 200
    assert api.get(B(f"/key-auths/{user}-key")).status_code == 404
    assert api.get(f"/key-auths/{user}-key").status_code == 200


def test_versions_are_counted_per_control_plane(api):
    b = create_cp(api)
    root_before, b_before = root_version(api), version_of(api, b["id"])
    assert b_before == 0
    for i in range(3):
        r = api.post(core(b["id"], "/consumers"), json={"username": f"v-{i}"})
        assert r.status_code == 201, r.text
    assert version_of(api, b["id"]) == 3
    assert root_version(api) == root_before
    assert api.post("/consumers", json={"username": unique("v")}).status_code == 201
    assert root_version(api) == root_before + 1
    assert version_of(api, b["id"]) == 3
    # a failed write in B creates no version anywhere
    assert api.post(core(b["id"], "/consumers"), json={"username": "v-0"}).status_code == 409
    assert version_of(api, b["id"]) == 3 and root_version(api) == root_before + 1


def test_deleting_a_control_plane_removes_what_it_owns(api, ccp):
    b = create_cp(api)
    svc = api.post(core(b["id"], "/services"), json={"name": "gone", "url": "http://a/"}).json()
    api.post(core(b["id"], "/services/gone/routes"), json={"paths": ["/gone"]})
    api.post(core(b["id"], "/consumers"), json={"username": "gone"})
    api.post(core(b["id"], "/consumers/gone/key-auth"), json={"key": "gone-key"})
    plugin = api.post(core(b["id"], "/services/gone/plugins"), json={"name": "key-auth"})
    assert plugin.status_code == 201, plugin.text
    tok = api.post("/clustering/join-tokens", json={"control_plane": b["id"]})
    assert tok.status_code == 201, tok.text
    assert api.delete(f"/v2/control-planes/{b['id']}").status_code == 204
    assert_problem(api.get(core(b["id"], f"/services/{svc['id']}")), 404)
    tokens = api.get("/clustering/join-tokens").json()["data"]
    assert tok.json()["id"] not in [t["id"] for t in tokens]
    # the name is free again, and the new control plane starts empty
    again = create_cp(api, name=b["name"])
    assert api.get(core(again["id"], "/services")).json()["data"] == []
    assert again["config_version"] == 0


# ------------------------------------------------------------------------------ join tokens


def test_join_tokens_bound_to_a_control_plane(api, ccp):
    b = create_cp(api)
    for ref in (b["id"], b["name"]):
        out = ccp.run_cli("cp", "token", "create", "--control-plane", ref, "--uses", "1")
        assert out.returncode == 0, out.stderr
        token = out.stdout.split()[0]
        assert re.match(r"^[a-z0-9]{6}\.[a-z0-9]{16}$", token)
        assert f"--token {token}" in out.stdout
        assert b["id"] in out.stderr
        rec = api.get(f"/clustering/join-tokens/{token[:6]}").json()
        assert rec["control_plane_id"] == b["id"]
    out = ccp.run_cli("cp", "token", "create", "--control-plane", "no-such-plane")
    assert out.returncode != 0 and "no control plane" in out.stderr
    listed = ccp.run_cli("cp", "token", "list", "--control-plane", b["name"])
    assert listed.returncode == 0, listed.stderr
    rows = listed.stdout.strip().splitlines()[1:]
    assert len(rows) == 2 and all(b["id"] in row for row in rows), listed.stdout
    listed = ccp.run_cli("cp", "token", "list", f"--control-plane={b['id']}")
    assert listed.stdout.strip().splitlines()[1:] == rows
    out = ccp.run_cli("cp", "token", "list", "--control-plane", "no-such-plane")
    assert out.returncode != 0 and "no control plane" in out.stderr

    r = api.post("/clustering/join-tokens", json={"control_plane": b["id"], "uses": 1})
    assert r.status_code == 201, r.text
    assert r.json()["control_plane_id"] == b["id"]
    r = api.post("/clustering/join-tokens", json={"control_plane": str(uuid.uuid4())})
    assert r.status_code == 400 and "control_plane" in r.json()["fields"], r.text
    r = api.post("/clustering/join-tokens", json={})
    assert r.json()["control_plane_id"] == default_cp(api)["id"]


# ------------------------------------------------------------------------------ a real data plane


@pytest.fixture(scope="module")
def upstream():
    up = EchoUpstream().start()
    yield up
    up.stop()


def add_route(api, prefix, name, path, upstream):
    s = api.post(f"{prefix}/services", json={"name": name, "url": upstream.url})
    assert s.status_code == 201, s.text
    r = api.post(f"{prefix}/services/{name}/routes", json={"name": name, "paths": [path]})
    assert r.status_code == 201, r.text


def applied(dp):
    return dp.status("/status").json()["cluster"]


@pytest.mark.asan
def test_a_data_plane_of_control_plane_b_serves_only_bs_routes(api, ccp, upstream, workdir,
                                                               tollgate_bin):
    b = create_cp(api, name=unique("dp-b"))
    B = core(b["id"])
    add_route(api, "", unique("root-svc"), "/root-only", upstream)
    add_route(api, B, "b-svc", "/b-only", upstream)

    out = ccp.run_cli("cp", "token", "create", "--control-plane", b["id"], "--uses", "1")
    assert out.returncode == 0, out.stderr
    token = out.stdout.split()[0]
    prefix = os.path.join(workdir, unique("dp-of-b"))
    joined = cluster.run_dp_join(tollgate_bin, prefix, ccp.cluster_address, "--token", token)
    assert joined.returncode == 0, joined.stderr
    with open(os.path.join(prefix, "cluster", "cluster.json")) as f:
        enrolment = json.load(f)
    assert enrolment["control_plane_id"] == b["id"]

    dp = DpProcess(tollgate_bin, prefix, os.path.join(workdir, "logs"), name="dp-of-b", workers=1)
    try:
        dp.start()
        wait_for(lambda: applied(dp)["applied_version"] >= version_of(api, b["id"]), 30,
                 what="the data plane to apply control plane B's config")
        r = dp.get("/b-only/x")
        assert r.status_code == 200, r.text
        assert r.json()["path"] == "/x"  # strip_path, as Kong
        assert dp.get("/root-only/x").status_code == 404

        # live changes: B's reach it, the root's never do
        add_route(api, B, "b-svc-2", "/b-two", upstream)
        add_route(api, "", unique("root-svc-2"), "/root-two", upstream)
        wait_for(lambda: dp.get("/b-two").status_code == 200, 30, what="B's new route")
        assert dp.get("/root-two").status_code == 404
        assert applied(dp)["applied_version"] == version_of(api, b["id"])

        rec = api.get(f"/clustering/data-planes/{enrolment['node_id']}").json()
        assert rec["control_plane_id"] == b["id"]

        # deleting B cuts the data plane off: its record is gone and it cannot sync again,
        # while it keeps serving the last configuration it had
        assert api.delete(f"/v2/control-planes/{b['id']}").status_code == 204
        assert api.get(f"/clustering/data-planes/{enrolment['node_id']}").status_code == 404
        wait_for(lambda: not applied(dp)["connected"], 30, what="the data plane to be cut off")
        time.sleep(1.5)  # a reconnect attempt or more
        assert not applied(dp)["connected"]
        assert dp.get("/b-only/y").status_code == 200
    finally:
        dp.stop()
