"""A whole cluster with real processes (issue 4, "Done when"): a control plane, three data planes
enrolled with `tollgate dp join` and started with `tollgate dp start`, an echo upstream, and
later a second control plane node on the same PostgreSQL.

What is asserted is what an operator would see: every data plane proxies what the Admin API
wrote; a data plane killed with SIGKILL catches up by a delta while the change log covers the gap
and by a snapshot once it was purged (the sync counters of both sides tell which); data planes
keep serving with zero errors while the control plane is dead, and start serving their stored
config at once when no control plane runs; a write through one CP node reaches a data plane
connected to another; a delta a data plane refuses leaves it serving its old config and shows as
`rejected` with the reason in GET /clustering/data-planes.

The tests build on each other's state (in file order), as an operator's session would.
"""
import json
import os
import signal
import subprocess
import tempfile
import threading
import time

import pytest
import requests

from harness.cp import clean_env
from harness.dp import cluster_status, enroll_dp, wait_applied
from harness.procs import sanitizer_report, wait_for
from harness.upstream import EchoUpstream

# Small retention so the purge happens within a test: the last KEEP versions are kept whatever
# their age (the days limit is 0), and the purge runs every second.
KEEP = 5
CP_ENV = {
    "TOLLGATE_CLUSTER_HEARTBEAT_MS": "1000",
    "TOLLGATE_CLUSTER_CHANGELOG_KEEP_VERSIONS": str(KEEP),
    "TOLLGATE_CLUSTER_CHANGELOG_KEEP_DAYS": "0",
    "TOLLGATE_CLUSTER_CHANGELOG_PURGE_INTERVAL": "1",
}


@pytest.fixture(scope="module")
def upstream():
    up = EchoUpstream().start()
    yield up
    up.stop()


@pytest.fixture(scope="module")
def cluster(cp_factory, tollgate_bin, workdir, upstream):
    cp = cp_factory(env=CP_ENV, start=False)
    cp.env["TOLLGATE_CLUSTER_ADVERTISE"] = cp.cluster_address
    cp.start()
    dps = []
    for i in range(3):
        prefix = tempfile.mkdtemp(prefix=f"e2e-dp{i + 1}-", dir=workdir)
        dp = enroll_dp(cp, tollgate_bin, prefix, os.path.join(workdir, "logs"), f"e2e-dp{i + 1}")
        dps.append(dp.start())
    state = {"cp": cp, "dps": dps, "bin": tollgate_bin, "workdir": workdir, "up": upstream}
    yield state
    for dp in dps + state.get("extra", []):
        dp.cleanup()
    assert_no_sanitizer_findings(dps + state.get("extra", []))


def assert_no_sanitizer_findings(dps):
    findings = [f"{dp.name}: {sanitizer_report(dp.log_text())}" for dp in dps
                if sanitizer_report(dp.log_text())]
    if findings:
        pytest.fail("sanitizer findings:\n" + "\n".join(findings), pytrace=False)


def latest_version(cp):
    r = cp.admin.get("/clustering/status")
    assert r.status_code == 200, r.text
    (mine,) = [c for c in r.json()["control_planes"] if c["name"] == "default"]
    return mine


def write(cp, method, path, **body):
    r = cp.admin.request(method, path, json=body)
    assert r.status_code in (200, 201, 204), (method, path, r.status_code, r.text)
    return r.json() if r.text else None


def proxied(dp, path, status=200):
    try:
        return dp.get(path, timeout=5).status_code == status
    except requests.RequestException:
        return False


def dp_record(cp, node_id):
    r = cp.admin.get(f"/clustering/data-planes/{node_id}")
    assert r.status_code == 200, r.text
    return r.json()


def wait_all_applied(cluster, dps=None):
    v = latest_version(cluster["cp"])["config_version"]
    for dp in dps or cluster["dps"]:
        wait_applied(dp, v, timeout=60)
    return v


# ---------------------------------------------------------------- propagation


@pytest.mark.asan
def test_every_data_plane_becomes_ready_and_serves_an_admin_write(cluster):
    cp, dps, up = cluster["cp"], cluster["dps"], cluster["up"]
    for dp in dps:  # a CP never written to still makes a fresh DP ready (empty config)
        wait_for(lambda: dp.status("/status/ready").status_code == 200, 30,
                 what=f"{dp.name} ready")
    svc = write(cp, "POST", "/services", name="e2e", url=up.url)
    write(cp, "POST", "/services/e2e/routes", name="e2e-route", paths=["/e2e"])
    for dp in dps:
        wait_for(lambda: proxied(dp, "/e2e/hello"), 30, what=f"{dp.name} to route /e2e")
        r = dp.get("/e2e/hello")
        assert r.json()["path"] == "/hello"
    assert svc["id"]
    wait_all_applied(cluster)
    for dp in dps:
        row = dp_record(cp, dp.node_id)
        assert row["sync_status"] == "normal", row


@pytest.mark.asan
def test_a_killed_data_plane_catches_up_by_a_delta(cluster):
    cp, dp = cluster["cp"], cluster["dps"][0]
    before = cp.admin.get("/clustering/status").json()["pushes"]
    assert dp.stop(signal.SIGKILL) == -signal.SIGKILL
    # fewer writes than the retention keeps: the log covers the gap
    write(cp, "POST", "/services/e2e/routes", name="while-away", paths=["/away"])
    write(cp, "PATCH", "/routes/while-away", strip_path=False)
    dp.start()
    wait_for(lambda: proxied(dp, "/away/x"), 30, what="the restarted DP to route /away")
    assert dp.get("/away/x").json()["path"] == "/away/x"  # strip_path=false arrived too
    wait_all_applied(cluster, [dp])
    st = cluster_status(dp)
    assert st["snapshots_applied"] == 0 and st["deltas_applied"] >= 1, st
    after = cp.admin.get("/clustering/status").json()["pushes"]
    assert after["snapshots_sent"] == before["snapshots_sent"], (before, after)
    assert after["deltas_sent"] > before["deltas_sent"]


@pytest.mark.asan
def test_a_data_plane_behind_the_purged_log_gets_a_snapshot(cluster):
    cp, dp = cluster["cp"], cluster["dps"][1]
    applied = cluster_status(dp)["applied_version"]
    assert dp.stop(signal.SIGKILL) == -signal.SIGKILL
    write(cp, "POST", "/consumers", username="purge-0")
    for i in range(1, KEEP + 3):
        write(cp, "PATCH", "/consumers/purge-0", custom_id=f"c{i}")
    # the purge timer drops every version but the last KEEP
    wait_for(lambda: latest_version(cp)["oldest_version"] > applied + 1, 30,
             what="the change log to be purged past the stopped DP's version")
    before = cp.admin.get("/clustering/status").json()["pushes"]
    dp.start()
    v = wait_all_applied(cluster, [dp])
    st = cluster_status(dp)
    assert st["snapshots_applied"] == 1 and st["applied_version"] == v, st
    after = cp.admin.get("/clustering/status").json()["pushes"]
    assert after["snapshots_sent"] == before["snapshots_sent"] + 1
    assert proxied(dp, "/e2e/again")


def consumer_seen(dp, key):
    """What key-auth told the upstream about the key's consumer: (id, username, custom_id), or
    the status when the request was not proxied."""
    r = dp.get("/ka/x", headers={"apikey": key}, timeout=5)
    if r.status_code != 200:
        return r.status_code
    h = {k.lower(): v for k, v in r.json()["headers"]}
    return (h.get("x-consumer-id"), h.get("x-consumer-username"), h.get("x-consumer-custom-id"))


def store_status(cluster, dp):
    """The store figures of `tollgate status --json` for a DP."""
    env = clean_env()
    env["TOLLGATE_PREFIX"] = dp.prefix
    out = subprocess.run([str(cluster["bin"]), "status", "--json"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["store"]


def wait_seen(cluster, key, want, dps=None):
    for dp in dps or cluster["dps"]:
        wait_for(lambda: consumer_seen(dp, key) == want, 30,
                 what=f"{dp.name} to see {want} for the key, not {consumer_seen(dp, key)}")


@pytest.mark.asan
def test_consumer_changes_reach_key_auth_through_deltas(cluster):
    """A DP's store keeps a copy of each credential's consumer beside the credential (one
    B-tree search per key) and lists the consumers deltas changed since its last snapshot: a
    rename, a custom_id change, a delete and a re-create under the same id must all reach the
    upstream's X-Consumer-* headers on every DP, also after a DP restarted from its store."""
    cp = cluster["cp"]
    write(cp, "POST", "/services/e2e/routes", name="ka-route", paths=["/ka"])
    write(cp, "POST", "/routes/ka-route/plugins", name="key-auth")
    c = write(cp, "POST", "/consumers", username="ka-user", custom_id="ka-1")
    write(cp, "POST", "/consumers/ka-user/key-auth", key="ka-secret")
    wait_seen(cluster, "ka-secret", (c["id"], "ka-user", "ka-1"))

    write(cp, "PATCH", f"/consumers/{c['id']}", username="ka-renamed", custom_id="ka-2")
    wait_seen(cluster, "ka-secret", (c["id"], "ka-renamed", "ka-2"))
    for dp in cluster["dps"]:  # the rename is what operators see listed
        assert store_status(cluster, dp)["changed_consumers"] >= 1

    dp = cluster["dps"][2]
    dp.stop(signal.SIGTERM)
    dp.start()
    wait_seen(cluster, "ka-secret", (c["id"], "ka-renamed", "ka-2"), [dp])

    write(cp, "DELETE", f"/consumers/{c['id']}")  # its key goes with it
    wait_seen(cluster, "ka-secret", 401)
    write(cp, "PUT", f"/consumers/{c['id']}", username="ka-again")
    write(cp, "POST", f"/consumers/{c['id']}/key-auth", key="ka-secret")
    wait_seen(cluster, "ka-secret", (c["id"], "ka-again", None))
    write(cp, "PATCH", f"/consumers/{c['id']}", username="ka-final")
    wait_seen(cluster, "ka-secret", (c["id"], "ka-final", None))
    wait_all_applied(cluster)


def test_cluster_status_and_metrics_describe_the_sync(cluster):
    cp = cluster["cp"]
    wait_all_applied(cluster)
    mine = latest_version(cp)
    assert mine["config_version"] >= KEEP
    assert mine["oldest_version"] <= mine["config_version"] - KEEP + 1

    def view_current():  # the hub's view (sessions, latest_seen_here) is refreshed every second
        st = cp.admin.get("/clustering/status").json()
        connected = {d["id"]: d for d in st["data_planes"]}
        ok = all(connected.get(dp.node_id, {}).get("applied_version") == mine["config_version"]
                 for dp in cluster["dps"])
        seen = [c["latest_seen_here"] for c in st["control_planes"] if c["name"] == "default"]
        return st if ok and seen == [mine["config_version"]] else None
    st = wait_for(view_current, 10, what="GET /clustering/status to show every DP current")
    assert st["node_id"] and st["connected_data_planes"] == 3
    for d in st["data_planes"]:
        assert d["lag_versions"] == 0 and d["sync_status"] == "normal", d
        assert d["deltas_sent"] + d["snapshots_sent"] >= 1 and not d["in_flight"]
    assert st["retention"]["keep_versions"] == KEEP and st["retention"]["keep_days"] == 0
    assert st["pushes"]["acks"] >= 3 and st["pushes"]["purged_versions"] >= 1
    text = requests.get(cp.status_url + "/metrics", timeout=10).text
    for series in ("tollgate_sync_commit_to_ack_seconds_bucket",
                   "tollgate_sync_push_bytes_bucket", "tollgate_sync_pushes_total{kind=\"delta\"}",
                   "tollgate_sync_pushes_total{kind=\"snapshot\"}", "tollgate_sync_nacks_total",
                   "tollgate_sync_connected_data_planes 3", "tollgate_sync_bytes_sent_total"):
        assert series in text, series


# ---------------------------------------------------------------- the control plane fails


def traffic(dps, stop, results):
    """Requests to every DP in turn until `stop` is set; appends (dp, outcome) per request."""
    s = requests.Session()
    s.trust_env = False
    while not stop.is_set():
        for dp in dps:
            try:
                r = s.get(dp.proxy_url + "/e2e/loop", timeout=5)
                results.append((dp.name, r.status_code))
            except requests.RequestException as e:
                results.append((dp.name, repr(e)))


@pytest.mark.asan
def test_data_planes_serve_every_request_while_the_control_plane_is_killed(cluster):
    cp, dps = cluster["cp"], cluster["dps"]
    stop, results = threading.Event(), []
    t = threading.Thread(target=traffic, args=(dps, stop, results))
    t.start()
    try:
        time.sleep(0.5)
        assert cp.stop(signal.SIGKILL) == -signal.SIGKILL
        wait_for(lambda: all(not cluster_status(d)["connected"] for d in dps), 30,
                 what="every DP to notice the control plane is gone")
        n = len(results)
        wait_for(lambda: len(results) >= n + 30, 30, what="traffic with the CP down")
    finally:
        stop.set()
        t.join(30)
    errors = [r for r in results if r[1] != 200]
    assert not errors and len(results) >= 30, errors[:5]


@pytest.mark.asan
def test_a_data_plane_restarted_without_control_plane_serves_its_stored_config(cluster):
    cp, dp = cluster["cp"], cluster["dps"][2]
    assert not cp.running()
    dp.stop(signal.SIGKILL)
    dp.start()
    assert dp.status("/status/ready").status_code == 200  # at once: from the store
    assert proxied(dp, "/e2e/stored")
    assert not cluster_status(dp)["connected"]


@pytest.mark.asan
def test_data_planes_reconnect_when_the_control_plane_returns(cluster):
    cp, dps = cluster["cp"], cluster["dps"]
    cp.start()
    wait_for(lambda: all(cluster_status(d)["connected"] for d in dps), 90,
             what="every DP to reconnect")
    write(cp, "POST", "/services/e2e/routes", name="after-restart", paths=["/back"])
    for dp in dps:
        wait_for(lambda: proxied(dp, "/back/x"), 30, what=f"{dp.name} to route /back")


# ---------------------------------------------------------------- two control plane nodes


def test_a_write_through_one_node_reaches_a_data_plane_of_another(cluster, cp_factory):
    cp1 = cluster["cp"]
    env = dict(CP_ENV, **cp1.keyring_env())
    cp2 = cp_factory(env=env, database=cp1.database, start=False, name="e2e-cp-node2")
    cp2.env["TOLLGATE_CLUSTER_ADVERTISE"] = cp2.cluster_address
    cp2.start()
    prefix = tempfile.mkdtemp(prefix="e2e-dp-node2-", dir=cluster["workdir"])
    dp = enroll_dp(cp1, cluster["bin"], prefix, os.path.join(cluster["workdir"], "logs"),
                   "e2e-dp-node2", via=cp2)
    cluster.setdefault("extra", []).append(dp)
    dp.start()
    wait_for(lambda: cluster_status(dp)["connected"], 30, what="the DP to connect to node 2")
    assert cluster_status(dp)["endpoint"] == cp2.cluster_address
    wait_for(lambda: proxied(dp, "/e2e/x"), 30, what="node 2's DP to get the config")
    write(cp1, "POST", "/services/e2e/routes", name="via-node1", paths=["/node1"])
    wait_for(lambda: proxied(dp, "/node1/x"), 30, what="a node-1 write on node 2's DP")
    row = dp_record(cp1, dp.node_id)
    node2 = cp2.admin.get("/clustering/status").json()["node_id"]
    assert row["cp_node"] == node2 and row["sync_status"] == "normal"
    wait_for(lambda: [d["id"] for d in cp2.admin.get("/clustering/status").json()["data_planes"]]
             == [dp.node_id], 10, what="node 2's status to list its DP")


# ---------------------------------------------------------------- a refused delta


@pytest.mark.asan
def test_a_refused_delta_keeps_the_old_config_and_shows_rejected(cluster):
    cp, dps = cluster["cp"], cluster["dps"]
    v0 = wait_all_applied(cluster)
    # accepted by the control plane's schema, refused by these data planes (no Redis client):
    # a genuine NACK, not an injected one
    plugin = write(cp, "POST", "/routes/e2e-route/plugins", name="rate-limiting",
                   config={"minute": 1, "policy": "redis", "redis": {"host": "127.0.0.1"}})
    for dp in dps:
        wait_for(lambda: dp_record(cp, dp.node_id)["sync_status"] == "rejected", 30,
                 what=f"{dp.name} to be shown as rejected")
        row = dp_record(cp, dp.node_id)
        assert "redis" in row["last_error"] and row["config_version"] == v0, row
        for _ in range(3):  # the old config: no rate limit, every request passes
            r = dp.get("/e2e/limited")
            assert r.status_code == 200 and "X-RateLimit-Limit-Minute" not in r.headers
        st = cluster_status(dp)
        assert st["applied_version"] == v0 and "redis" in st["last_nack"], st
    # fixed by the operator: the next version goes through
    write(cp, "DELETE", f"/plugins/{plugin['id']}")
    v = wait_all_applied(cluster)
    assert v > v0
    for dp in dps:
        wait_for(lambda: dp_record(cp, dp.node_id)["sync_status"] == "normal", 30,
                 what=f"{dp.name} back to normal")


# ---------------------------------------------------------------- a control plane never written


@pytest.mark.asan
def test_a_fresh_control_plane_makes_a_fresh_data_plane_ready(cp_factory, tollgate_bin, workdir):
    cp = cp_factory(env=CP_ENV, start=False, name="e2e-fresh-cp")
    cp.env["TOLLGATE_CLUSTER_ADVERTISE"] = cp.cluster_address
    cp.start()
    prefix = tempfile.mkdtemp(prefix="e2e-fresh-dp-", dir=workdir)
    dp = enroll_dp(cp, tollgate_bin, prefix, os.path.join(workdir, "logs"), "e2e-fresh-dp")
    try:
        dp.start()
        assert latest_version(cp)["config_version"] == 0
        wait_for(lambda: dp.status("/status/ready").status_code == 200, 30,
                 what="a DP of an empty control plane to be ready")
        r = dp.get("/anything")
        assert r.status_code == 404 and r.json()["message"] == "no Route matched with those values"
        dp.stop(signal.SIGKILL)  # and a restart does not ask for the same snapshot again
        before = cp.admin.get("/clustering/status").json()["pushes"]["snapshots_sent"]
        dp.start()
        wait_for(lambda: cluster_status(dp)["connected"], 30, what="reconnect")
        assert dp.status("/status/ready").status_code == 200
        time.sleep(1)
        assert cp.admin.get("/clustering/status").json()["pushes"]["snapshots_sent"] == before
    finally:
        dp.cleanup()
    assert_no_sanitizer_findings([dp])
