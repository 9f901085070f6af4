"""Realm keys end to end (issue 5): a control plane, data planes enrolled with `tollgate dp join`,
realms made through /v1/realms, and key-auth with `identity_realms` on the data planes.

Seed 003 is the spine: realm -> consumer -> key -> key-auth with [realm, cp] -> 200 with the realm
key, 401 with `another_key`, and a CP key still works through the `cp` entry. Around it: every
order of sources, a realm that does not allow the DP's control plane, the second request asking
nobody (the CP's lookup counter), negative caching, revocation pushed within a second, two
control planes sharing one realm, a flood of random keys staying within the cache bound, and the
control plane down (a cached key keeps working, an unknown one gets 503 when only a realm could
have known it, 401 when the control plane's own keys were also consulted... see each test).

The tests build on each other's state in file order, as an operator's session would.
"""
import os
import re
import tempfile
import time
import uuid

import pytest
import requests

from harness.dp import enroll_dp
from harness.procs import sanitizer_report, wait_for
from harness.upstream import EchoUpstream

CP_ENV = {"TOLLGATE_CLUSTER_HEARTBEAT_MS": "1000"}
DP_ENV = {"TOLLGATE_REALM_CACHE_SIZE": "1000", "TOLLGATE_REALM_LOOKUP_TIMEOUT": "3000"}


@pytest.fixture(scope="module")
def upstream():
    up = EchoUpstream().start()
    yield up
    up.stop()


@pytest.fixture(scope="module")
def world(cp_factory, tollgate_bin, workdir, upstream):
    cp = cp_factory(env=CP_ENV, start=False)
    cp.env["TOLLGATE_CLUSTER_ADVERTISE"] = cp.cluster_address
    cp.start()
    logs = os.path.join(workdir, "logs")
    dp = enroll_dp(cp, tollgate_bin, tempfile.mkdtemp(prefix="realm-dp-", dir=workdir), logs,
                   "realm-dp", env=DP_ENV, workers=2).start()
    state = {"cp": cp, "dp": dp, "bin": tollgate_bin, "workdir": workdir, "logs": logs,
             "up": upstream, "extra": []}
    yield state
    for d in [dp] + state["extra"]:
        d.cleanup()
    findings = [f"{d.name}: {sanitizer_report(d.log_text())}" for d in [dp] + state["extra"]
                if sanitizer_report(d.log_text())]
    if findings:
        pytest.fail("sanitizer findings:\n" + "\n".join(findings), pytrace=False)


def ok(r, *codes):
    assert r.status_code in (codes or (200, 201, 204)), (r.request.method, r.request.url,
                                                       r.status_code, r.text)
    return r.json() if r.text else None


def default_cp_id(cp):
    cps = ok(cp.admin.get("/v2/control-planes", params={"filter[name][eq]": "default"}))
    return cps["data"][0]["id"]


def cp_lookups(cp):
    """Realm lookups the CP answered (its status_listen /metrics)."""
    body = requests.get(cp.status_url + "/metrics", timeout=10).text
    m = re.search(r"^tollgate_realm_lookups_total (\d+)", body, re.M)
    assert m, "no tollgate_realm_lookups_total in the CP's /metrics"
    return int(m.group(1))


def upstream_header(r, name):
    """A request header as the upstream received it (the echo lists [name, value] pairs)."""
    for k, v in r.json()["headers"]:
        if k.lower() == name.lower():
            return v
    return None


def wait_guarded(dp, path, timeout=15):
    """Until the route asks for a key (route and key-auth plugin arrived)."""
    wait_for(lambda: dp.get(path).status_code == 401, timeout, interval=0.05,
             what=f"{dp.name} to guard {path} with key-auth")


def get(dp, path, key=None):
    return dp.get(path, headers={"apikey": key} if key is not None else {})


# ---------------------------------------------------------------- seed 003


def test_seed_003_realm_key_then_cp_key(world):
    cp, dp, up = world["cp"], world["dp"], world["up"]
    world["cp_id"] = default_cp_id(cp)
    realm = ok(cp.admin.post("/v1/realms", json={"name": "prod",
                                                 "allowed_control_planes": [world["cp_id"]]}))
    consumer = ok(cp.admin.post(f"/v1/realms/{realm['id']}/consumers", json={"username": "Ariel"}))
    key = ok(cp.admin.post(f"/v1/realms/{realm['id']}/consumers/{consumer['id']}/keys",
                           json={"type": "new"}))
    assert key["secret"]
    svc = ok(cp.admin.post("/services", json={"name": "example-service", "url": up.url}))
    ok(cp.admin.post(f"/services/{svc['id']}/routes", json={"name": "example-route",
                                                           "paths": ["/anything"]}))
    ok(cp.admin.post(f"/services/{svc['id']}/plugins", json={
        "name": "key-auth",
        "config": {"key_names": ["apikey"],
                   "identity_realms": [{"id": realm["id"], "scope": "realm", "region": "us"},
                                       {"id": None, "scope": "cp"}]}}))
    cpc = ok(cp.admin.post("/consumers", json={"username": "local"}))
    ok(cp.admin.post(f"/consumers/{cpc['id']}/key-auth", json={"key": "local-key"}))
    wait_guarded(dp, "/anything")

    r = get(dp, "/anything", key["secret"])
    assert r.status_code == 200, r.text
    assert upstream_header(r, "X-Consumer-Username") == "Ariel"
    assert upstream_header(r, "X-Consumer-ID") == consumer["id"]
    assert upstream_header(r, "X-Credential-Identifier") == key["id"]

    r = get(dp, "/anything", "another_key")
    assert r.status_code == 401 and r.json()["message"] == "Unauthorized"
    assert r.headers["WWW-Authenticate"] == "Key"

    r = get(dp, "/anything", "local-key")  # not in the realm: found through the cp entry
    assert r.status_code == 200 and upstream_header(r, "X-Consumer-Username") == "local"
    world.update(realm=realm, consumer=consumer, key=key, svc=svc, cp_consumer=cpc)
