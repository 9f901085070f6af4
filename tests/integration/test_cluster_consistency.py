"""Consistency check of the cluster sync (issue 4, "Done when"): 10 000 random Admin API writes
spread over two control plane nodes on one PostgreSQL, while three data planes are killed
(SIGKILL), stopped (SIGTERM), cut off, black-holed and left without their control plane node
at random. At the end every data plane must have applied the control plane's latest version
with the same config digest as the control plane computes from PostgreSQL, and proxy a sample
of requests the way the final configuration says.

How the pieces fit:
- The writes come from harness/workload.py: four writer threads, each owning its entities, so
  the expected final configuration is known exactly (Model) whatever the interleaving.
- Each CP node is reached by the data planes through a relay of its own (harness/relay.py):
  the nodes advertise the relay's address and the data planes are configured with both relays
  (cluster_control_plane), so the test can break the network between them without root.
- The test's own thread does one random fault at a time: SIGKILL or SIGTERM a data plane and
  start it again; cut or black-hole one data plane's connection; make one node unreachable; kill
  (SIGKILL or SIGTERM) the node a data plane is connected to and start it again. Writes to a
  node are drained before it is killed, so no write's outcome is left unknown.
- The CP's digest: the CP computes the config digest when it builds a snapshot, from
  PostgreSQL in one REPEATABLE READ transaction (docs/architecture.md, "Config digest"). The
  test asks each CP node for a snapshot with a scripted peer (harness/sync_peer.py) enrolled
  for that purpose, after reading the data planes' digests (so the request cannot repair a
  divergence before it is seen), and compares the snapshot's entities with the Admin API's
  lists and the model.

Set TOLLGATE_CONSISTENCY_SEED to replay a run (the seed is printed; the writes and the choice
of faults follow from it, their timing does not) and TOLLGATE_CONSISTENCY_WRITES to change the
number of writes.
"""
import os
import random
import signal
import tempfile
import threading
import time

import pytest
import requests

from harness.dp import cluster_status, enroll_dp
from harness.procs import wait_for
from harness.relay import Relay
from harness.sync_peer import SyncPeer, messages
from harness.upstream import EchoUpstream
from harness.workload import AdminPool, Model, Writer

WRITES = int(os.environ.get("TOLLGATE_CONSISTENCY_WRITES", "10000"))
WRITERS = 4
N_DPS = 3
HEARTBEAT_MS = 500  # a black-holed connection is noticed after 3 intervals
CP_ENV = {"TOLLGATE_CLUSTER_HEARTBEAT_MS": str(HEARTBEAT_MS),
          "TOLLGATE_LOG_LEVEL": "notice"}
SAMPLE_ROUTES = 60  # routes checked on every data plane


@pytest.fixture(scope="module")
def seed():
    value = int(os.environ.get("TOLLGATE_CONSISTENCY_SEED")
                or random.SystemRandom().randrange(1 << 32))
    print(f"\nconsistency seed: {value} (TOLLGATE_CONSISTENCY_SEED={value} replays it)")
    return value


@pytest.fixture(scope="module")
def upstream():
    up = EchoUpstream().start()
    yield up
    up.stop()


@pytest.fixture(scope="module")
def cluster(cp_factory, tollgate_bin, workdir):
    """Two CP nodes on one database, a relay in front of each, three enrolled data planes."""
    cp1 = cp_factory(env=CP_ENV, start=False, name="consistency-cp1")
    relays = [Relay("127.0.0.1", cp1.cluster_port, "relay-cp1").start()]
    cp1.env["TOLLGATE_CLUSTER_ADVERTISE"] = relays[0].address
    cp1.start()
    cp2 = cp_factory(env=dict(CP_ENV, **cp1.keyring_env()), database=cp1.database, start=False,
                     name="consistency-cp2")
    relays.append(Relay("127.0.0.1", cp2.cluster_port, "relay-cp2").start())
    cp2.env["TOLLGATE_CLUSTER_ADVERTISE"] = relays[1].address
    cp2.start()
    cps = [cp1, cp2]
    logs = os.path.join(workdir, "logs")
    # Both relays are configured on every data plane, as an operator would list every CP
    # node: a node's endpoint list (sent at join and in Welcome) is read once at its start,
    # so a data plane enrolled through node 1 would otherwise never learn node 2.
    endpoints = ", ".join(r.address for r in relays)
    dps = []
    for i in range(N_DPS):
        prefix = tempfile.mkdtemp(prefix=f"consistency-dp{i + 1}-", dir=workdir)
        dp = enroll_dp(cp1, tollgate_bin, prefix, logs, f"consistency-dp{i + 1}",
                       env={"TOLLGATE_CLUSTER_CONTROL_PLANE": endpoints,
                            "TOLLGATE_LOG_LEVEL": "notice"}, via=cps[i % 2])
        dps.append(dp.start())
    # an identity for the scripted peer that asks the CP nodes for their snapshot at the end
    auditor = tempfile.mkdtemp(prefix="consistency-auditor-", dir=workdir)
    r = cp1.run_cli("dp", "join", cp1.cluster_address, "--token",
                    cp1.admin.post("/clustering/join-tokens", json={"uses": 1}).json()["token"],
                    env={"TOLLGATE_PREFIX": auditor})
    assert r.returncode == 0, r.stderr
    state = {"cps": cps, "relays": relays, "dps": dps, "auditor": os.path.join(auditor, "cluster")}
    yield state
    for dp in dps:
        dp.cleanup()
    for relay in relays:
        relay.stop()


# ---------------------------------------------------------------- faults


class Chaos:
    """One random fault at a time until stopped; .events records what was done."""

    def __init__(self, seed, cluster, pool):
        self.rng = random.Random(f"{seed}/chaos")
        self.cps, self.relays, self.dps = cluster["cps"], cluster["relays"], cluster["dps"]
        self.pool = pool
        self.events = []
        self.error = None

    def node_of(self, dp):
        """Index of the CP node `dp` is connected to (through its relay), or None."""
        try:
            st = cluster_status(dp)
        except (requests.RequestException, ValueError):
            return None
        for i, relay in enumerate(self.relays):
            if st.get("connected") and st.get("endpoint") == relay.address:
                return i
        return None

    def pause(self, lo, hi):
        time.sleep(self.rng.uniform(lo, hi))

    def restart_dp(self, dp, sig):
        dp.stop(sig)
        self.pause(0, 1.0)
        dp.start()

    def restart_cp(self, i, sig):
        self.pool.drain(i)
        try:
            self.cps[i].stop(sig)
            self.pause(0.3, 2.0)
            self.cps[i].start()
        finally:
            self.pool.restore(i)

    def one(self):
        kind = self.rng.choice(["dp-kill", "dp-term", "cut", "stall", "unreachable",
                                "cp-kill", "cp-term"])
        dp = self.rng.choice(self.dps)
        if kind == "dp-kill":
            self.restart_dp(dp, signal.SIGKILL)
        elif kind == "dp-term":
            self.restart_dp(dp, signal.SIGTERM)
        elif kind == "cut":
            n = sum(r.cut([dp.process.pid]) for r in self.relays)
            kind += f" ({n} connection)"
        elif kind == "stall":
            secs = self.rng.uniform(1.0, 3.0)
            n = sum(r.stall([dp.process.pid], secs) for r in self.relays)
            time.sleep(secs)
            kind += f" ({n} connection, {secs:.1f} s)"
        elif kind == "unreachable":
            i = self.node_of(dp)
            i = self.rng.randrange(2) if i is None else i
            secs = self.rng.uniform(1.0, 3.0)
            self.relays[i].refuse(secs)
            time.sleep(secs)
            kind += f" (node {i + 1}, {secs:.1f} s)"
            dp = None
        else:  # the node this data plane is connected to dies
            i = self.node_of(dp)
            i = self.rng.randrange(2) if i is None else i
            self.restart_cp(i, signal.SIGKILL if kind == "cp-kill" else signal.SIGTERM)
            kind += f" (node {i + 1})"
            dp = None
        self.events.append(f"{time.strftime('%H:%M:%S')} {kind}" + (f" {dp.name}" if dp else ""))

    def run(self, done):
        """Faults until done() is true (checked between faults)."""
        try:
            while not done():
                self.pause(0.2, 1.0)
                if not done():
                    self.one()
        except Exception as e:  # noqa: BLE001 - reported by the test after the writes
            self.error = e


# ---------------------------------------------------------------- the CP's view


def admin_get(cp, path):
    """GET on a fresh connection: a node restarted by the chaos leaves pooled ones dead."""
    client = cp.admin_client()
    try:
        return client.get(path)
    finally:
        client.close()


def latest(cp):
    r = admin_get(cp, "/clustering/status")
    assert r.status_code == 200, r.text
    (mine,) = [c for c in r.json()["control_planes"] if c["name"] == "default"]
    return mine["config_version"]


def snapshot_of(cp, auditor):
    """(version, digest, {type: {ids}}) of a snapshot the CP node builds for a peer that says
    it holds another control plane's history (so a snapshot is the only answer)."""
    pb = messages()
    import json
    with open(os.path.join(auditor, "cluster.json")) as f:
        me = json.load(f)
    host, port = cp.cluster_address.split(":")
    peer = SyncPeer(host, int(port), os.path.join(auditor, "dp.crt"),
                    os.path.join(auditor, "dp.key"), os.path.join(auditor, "ca.crt"),
                    me["server_name"], timeout=60)
    try:
        peer.send(hello=pb.Hello(protocol_version=1, tollgate_version="0.1.0", hostname="auditor",
                                 have_version=1, node_id=me["node_id"],
                                 control_plane_id="00000000-0000-0000-0000-000000000000"))
        assert peer.recv().WhichOneof("body") == "welcome"
        begin = peer.recv()
        assert begin.WhichOneof("body") == "snapshot_begin", begin
        ids, chunks = {}, 0
        while True:
            env = peer.recv()
            if env.WhichOneof("body") == "snapshot_end":
                break
            chunks += 1
            for ch in env.snapshot_chunk.entities:
                ids.setdefault(ch.type, set()).add(ch.id)
        # streamed as it is read: SnapshotEnd, not SnapshotBegin, knows how much was sent
        assert env.snapshot_end.chunks == chunks
        assert env.snapshot_end.version == begin.snapshot_begin.version
        return env.snapshot_end.version, env.snapshot_end.config_digest, ids
    finally:
        peer.close()


def admin_ids(cp):
    """Every entity id the Admin API lists, by sync type."""
    out = {}
    for typ, path in (("services", "/services"), ("routes", "/routes"),
                      ("consumers", "/consumers"), ("plugins", "/plugins"),
                      ("keyauth_credentials", "/key-auths")):
        ids, nxt = set(), f"{path}?size=1000"
        while nxt:
            r = admin_get(cp, nxt)
            assert r.status_code == 200, r.text
            ids |= {e["id"] for e in r.json()["data"]}
            nxt = r.json().get("next")
        out[typ] = ids
    return out


# ---------------------------------------------------------------- proxied requests


def proxied_checks(model, rng):
    """[(route, key, expected)] for a sample of routes: without a key, with a live key, with
    a deleted key (routes without key-auth: without a key only)."""
    checks = []
    live = sorted(c["key"] for c in model.creds.values())
    dead = sorted(model.deleted_keys)
    routes = sorted(r for r, v in model.routes.items() if v["service"] in model.services)
    for route in rng.sample(routes, min(SAMPLE_ROUTES, len(routes))):
        keys = [None]
        if model.key_auth(route):
            keys += [rng.choice(live)] if live else []
            keys += [rng.choice(dead)] if dead else []
        for key in keys:
            checks.append((route, key, model.expected(route, key)))
    return checks


def run_check(dp, model, route, key, want):
    headers = {}
    if key is not None:
        headers[model.key_auth(route)["config"]["key_names"][0]] = key
    r = dp.get(model.routes[route]["path"] + "/x", headers=headers, timeout=10)
    got = {"status": r.status_code}
    if r.status_code == 401:
        got["message"] = r.json().get("message")
    elif r.status_code == 200:
        echo = r.json()
        up = {k.lower(): v for k, v in echo["headers"]}
        got.update(consumer=up.get("x-consumer-username"), path=echo["path"],
                   limit=int(r.headers["X-RateLimit-Limit-Minute"])
                   if "X-RateLimit-Limit-Minute" in r.headers else None)
    else:
        got["body"] = r.text[:200]
    return got


# ---------------------------------------------------------------- the test


def test_random_writes_over_two_nodes_with_faults_end_consistent(cluster, upstream, seed):
    cps, dps, relays = cluster["cps"], cluster["dps"], cluster["relays"]
    pool = AdminPool(cps)
    lock, issued = threading.Lock(), [0]

    def budget():  # the writers stop once WRITES writes have been started
        with lock:
            issued[0] += 1
            return issued[0] <= WRITES

    writers = [Writer(i, seed, pool, upstream.url, budget) for i in range(WRITERS)]
    chaos = Chaos(seed, cluster, pool)
    stop = threading.Event()
    threads = [threading.Thread(target=w.run, args=(stop,), name=f"writer-{w.t}") for w in writers]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    # The faults run on this thread: a child process gets its parent-death signal when the
    # thread that started it ends (harness/procs.py), so restarts must not come from a thread
    # that ends before the test does.
    try:
        chaos.run(lambda: not any(t.is_alive() for t in threads))
    finally:
        stop.set()
        for t in threads:
            t.join(120)
    t_writes = time.monotonic() - t0

    failures = [f for w in writers for f in w.failures]
    ok = sum(w.ok for w in writers)
    refused = sum(w.refused for w in writers)
    ops = {}
    for w in writers:
        for k, v in w.counts.items():
            ops[k] = ops.get(k, 0) + v
    print(f"writes: {ok} answered 2xx, {refused} refused as expected, "
          f"{sum(w.retried for w in writers)} retried after a connection error, "
          f"{t_writes:.1f} s; operations {ops}")
    print(f"faults ({len(chaos.events)}):\n  " + "\n  ".join(chaos.events))
    assert chaos.error is None, f"a fault could not be carried out: {chaos.error!r}"
    assert not failures, f"{len(failures)} writes got an unexpected answer:\n" + \
        "\n".join(failures[:20])
    assert ok + refused >= WRITES, (ok, refused)

    # heal everything; every process up
    for relay in relays:
        relay.heal()
    for cp in cps:
        if not cp.running():
            cp.start()
    for dp in dps:
        if not dp.running():
            dp.start()

    versions = {latest(cp) for cp in cps}
    assert len(versions) == 1, f"the CP nodes disagree on the latest version: {versions}"
    (version,) = versions

    def converged():
        out = []
        for dp in dps:
            st = dp.status("/status").json()
            if not st["cluster"]["connected"] or st["cluster"]["applied_version"] != version:
                return None
            out.append(st)
        return out
    try:
        statuses = wait_for(converged, 120, interval=0.2,
                            what=f"every data plane to apply version {version}")
    except TimeoutError:
        pytest.fail("not converged: " + "; ".join(
            f"{dp.name}: {cluster_status(dp)}" for dp in dps), pytrace=False)
    digests = {dp.name: st["configuration_hash"] for dp, st in zip(dps, statuses)}
    for dp, st in zip(dps, statuses):
        assert st["config_version"] == version, (dp.name, st)

    # the CP's record of each data plane (updated by ACKs and heartbeats)
    def recorded():
        rows = {d["id"]: d for d in admin_get(cps[0], "/clustering/data-planes").json()["data"]}
        return all(rows[dp.node_id]["config_version"] == version
                   and rows[dp.node_id]["config_digest"] == digests[dp.name]
                   and rows[dp.node_id]["sync_status"] == "normal" for dp in dps) and rows
    try:
        wait_for(recorded, 30, interval=0.2, what="the CP to record every DP's version")
    except TimeoutError:
        rows = admin_get(cps[0], "/clustering/data-planes").json()["data"]
        pytest.fail(f"CP records: {rows}", pytrace=False)

    # the CP's own digest, from a snapshot each node builds from PostgreSQL
    listed = admin_ids(cps[0])
    model = Model(writers)
    for i, cp in enumerate(cps):
        v, digest, ids = snapshot_of(cp, cluster["auditor"])
        assert v == version, (f"node {i + 1}", v, version)
        assert set(digests.values()) == {digest}, \
            f"config digests differ from node {i + 1}'s snapshot {digest}: {digests}"
        for typ in listed:
            assert ids.get(typ, set()) == listed[typ], \
                f"node {i + 1}'s snapshot and the Admin API differ in {typ}"
    # the digest the writes kept in PostgreSQL (rule 5: O(1) per change), as each node reads it
    for i, cp in enumerate(cps):
        r = admin_get(cp, "/clustering/status")
        (mine,) = [c for c in r.json()["control_planes"] if c["name"] == "default"]
        assert mine["config_digest"] == digest, \
            f"node {i + 1}: kept digest {mine['config_digest']}, recomputed {digest}"
    for typ, expect in model.ids().items():
        assert listed[typ] == expect, (f"the Admin API's {typ} differ from the model: "
                                       f"{len(listed[typ] - expect)} unexpected, "
                                       f"{len(expect - listed[typ])} missing")

    # proxied requests behave per the final configuration, on every data plane
    checks = proxied_checks(model, random.Random(f"{seed}/sample"))
    wrong = []
    for dp in dps:
        for route, key, want in checks:
            got = run_check(dp, model, route, key, want)
            if got != want:
                wrong.append(f"{dp.name} {route} key={key}: expected {want}, got {got}")
    assert len(checks) >= 20, f"too few routes to sample ({len(checks)} checks)"
    assert not wrong, f"{len(wrong)} of {len(checks) * len(dps)} proxied requests wrong:\n" + \
        "\n".join(wrong[:20])
    # A divergence the sync repaired by itself during the run is still a divergence: the CP
    # logs each digest mismatch it resynced (counters restart with the node, logs do not).
    repaired = [line for cp in cps for line in cp.log_text().splitlines()
                if "config digest differs" in line]
    assert not repaired, "data planes diverged during the run (resynced):\n" + \
        "\n".join(repaired[:10])
    counters = [cluster_status(dp) for dp in dps]
    print("data planes: " + "; ".join(
        f"{dp.name} deltas {c['deltas_applied']} snapshots {c['snapshots_applied']} "
        f"nacks {c['nacks_sent']} (since its last start)" for dp, c in zip(dps, counters)))
    kinds = {e.split()[1] for e in chaos.events}
    print(f"converged at version {version} with digest {digests[dps[0].name]}; "
          f"{len(checks) * len(dps)} proxied requests as expected; fault kinds {sorted(kinds)}")
