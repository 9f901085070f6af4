"""The config digest kept by every write (sync-protocol rule 5), with real processes.

The control plane keeps its config digest in PostgreSQL, adding each write's contribution in the
change-log statement (O(1) per change), and records the digest of every version. Deltas carry
it and heartbeats compare it at every version, not only at snapshot versions. Asserted here:

- after every kind of write (insert, update, upsert, cascading delete, credential TTL, group
  commit of concurrent writes) the kept digest equals every data plane's, which each computes
  from its own store, and no resync was needed;
- a row changed in PostgreSQL behind the change log's back is found by the next snapshot (the
  data plane that receives it hashes it and refuses the kept digest; the control plane then
  recomputes the digest from the rows), the kept digest is repaired, and the heartbeats bring
  the data planes that were current by deltas back to the database's content, at the same
  version;
- a database whose digests are not known (as after upgrading from before migration 005) gets
  them computed at start.
"""
import contextlib
import os
import tempfile
import threading
import uuid

import pytest

from dp_helpers import upstream  # noqa: F401 (fixture)
from harness.dp import cluster_status, enroll_dp
from harness.procs import wait_for

CP_ENV = {"TOLLGATE_CLUSTER_HEARTBEAT_MS": "500"}


@pytest.fixture(scope="module")
def cluster(cp_factory, tollgate_bin, workdir, upstream, pg_server):
    cp = cp_factory(env=CP_ENV, start=False)
    cp.env["TOLLGATE_CLUSTER_ADVERTISE"] = cp.cluster_address
    cp.start()
    state = {"cp": cp, "dps": [], "bin": tollgate_bin, "workdir": workdir, "up": upstream,
             "pg": pg_server}
    for _ in range(2):
        add_dp(state)
    yield state
    for dp in state["dps"]:
        dp.cleanup()


def add_dp(state):
    n = len(state["dps"]) + 1
    prefix = tempfile.mkdtemp(prefix=f"digest-dp{n}-", dir=state["workdir"])
    dp = enroll_dp(state["cp"], state["bin"], prefix, os.path.join(state["workdir"], "logs"),
                   f"digest-dp{n}")
    state["dps"].append(dp.start())
    return dp


def sql(cluster, statement, *args):
    pg, cp = cluster["pg"], cluster["cp"]
    with contextlib.closing(pg.connect(cp.database)) as conn, conn.cursor() as cur:
        cur.execute(statement, args)
        return cur.fetchall() if cur.description else None


def status(cp):
    r = cp.admin.get("/clustering/status")
    assert r.status_code == 200, r.text
    return r.json()


def kept(cp):
    (mine,) = [c for c in status(cp)["control_planes"] if c["name"] == "default"]
    return mine["config_version"], mine["config_digest"]


def write(cp, method, path, expect=(200, 201, 204), **body):
    r = cp.admin.request(method, path, json=body if body else None)
    assert r.status_code in expect, (method, path, r.status_code, r.text)
    return r.json() if r.text else None


def dp_state(dp):
    st = dp.status("/status").json()
    return st["cluster"]["applied_version"], st["configuration_hash"]


def converged(cluster, timeout=30):
    """Waits until every data plane serves the latest version; returns (version, digest) with
    the digest every data plane and the control plane agree on."""
    cp = cluster["cp"]

    def same():
        version, digest = kept(cp)
        seen = {dp_state(dp) for dp in cluster["dps"]}
        return (version, digest) if seen == {(version, digest)} else None
    try:
        return wait_for(same, timeout, interval=0.1, what="every data plane at the kept digest")
    except TimeoutError:
        pytest.fail(f"not converged: control plane {kept(cp)}, data planes "
                    f"{[dp_state(dp) for dp in cluster['dps']]}", pytrace=False)


def versions_digests(cluster):
    return sql(cluster, "SELECT version, digest IS NOT NULL FROM config_versions v"
                        " JOIN control_planes cp ON cp.id = v.cp_id WHERE cp.name = 'default'"
                        " ORDER BY version")


@pytest.mark.asan  # the DAO's hashing and the change-log arithmetic under ASan too
def test_every_kind_of_write_keeps_the_digest_every_data_plane_computes(cluster):
    cp, up = cluster["cp"], cluster["up"]
    resyncs = status(cp)["pushes"]["resyncs"]
    version, digest = converged(cluster)
    assert digest == "0" * 64 and version == 0  # the empty config

    write(cp, "POST", "/services", name="dg", url=up.url, retries=3)
    write(cp, "POST", "/services/dg/routes", name="dg-route", paths=["/dg"])
    write(cp, "POST", "/consumers", username="ann")
    write(cp, "POST", "/consumers/ann/key-auth", key="ann-key-1")
    write(cp, "POST", "/consumers/ann/key-auth", key="ann-key-2", ttl=3600)
    write(cp, "POST", "/consumers/ann/plugins", name="rate-limiting",
          config={"minute": 10, "policy": "local"})
    write(cp, "POST", "/routes/dg-route/plugins", name="key-auth")
    first = converged(cluster)
    assert first[1] != "0" * 64

    write(cp, "PATCH", "/services/dg", retries=7)                  # update
    write(cp, "PUT", "/consumers/ann", custom_id="ann-1")          # upsert of an existing one
    write(cp, "PUT", "/consumers/bob", custom_id="bob-1")          # upsert of a new one
    write(cp, "POST", "/consumers/bob/key-auth", key="bob-key")
    write(cp, "PATCH", "/services/dg", retries=3)                  # back to the first document
    converged(cluster)

    # a cascade: the consumer's credentials and plugin go with it, each hashed out
    write(cp, "DELETE", "/consumers/ann")
    write(cp, "DELETE", "/consumers/bob")
    write(cp, "PUT", "/consumers/ann", tags=["again"])
    write(cp, "PUT", "/consumers/bob", tags=["again"])
    write(cp, "DELETE", "/consumers/ann")
    write(cp, "DELETE", "/consumers/bob")
    write(cp, "DELETE", "/routes/dg-route")
    write(cp, "DELETE", "/services/dg")
    version, digest = converged(cluster)
    assert digest == "0" * 64, "everything deleted: the empty config's digest again"

    # group commit: concurrent writes share transactions, each still its own version
    errors = []

    def writer(i):
        try:
            for j in range(10):
                r = cp.admin.post("/consumers", json={"username": f"c{i}-{j}"})
                if r.status_code != 201:
                    errors.append(r.text)
                r = cp.admin.post(f"/consumers/c{i}-{j}/key-auth", json={"key": f"k{i}-{j}"})
                if r.status_code != 201:
                    errors.append(r.text)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))
    threads = [threading.Thread(target=writer, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    version, digest = converged(cluster)
    rows = versions_digests(cluster)
    assert rows and all(known for _, known in rows), "every version records its digest"
    assert status(cp)["pushes"]["resyncs"] == resyncs, "no data plane needed a resync"

    # a new data plane gets a snapshot, whose digest the control plane recomputes: the same
    add_dp(cluster)
    assert converged(cluster) == (version, digest)
    assert "differs from the one recomputed" not in cp.log_text()


@pytest.mark.asan  # the DAO's hashing and the change-log arithmetic under ASan too
def test_a_row_changed_behind_the_change_log_is_found_and_the_data_planes_follow(cluster):
    cp = cluster["cp"]
    version, before = converged(cluster)
    # as an operator's hand-made UPDATE would: no change-log row, no version, no NOTIFY
    target = sql(cluster, "SELECT id::text FROM consumers ORDER BY id LIMIT 1")[0][0]
    sql(cluster, "UPDATE consumers SET doc = jsonb_set(doc, '{custom_id}', '\"by-hand\"')"
                 " WHERE id = %s", target)
    # the next snapshot recomputes the digest from the rows: one is built once per version,
    # so restart the control plane (dropping the one it shares) and add a data plane
    cp.stop()
    cp.start()
    resyncs = 0
    add_dp(cluster)
    after_version, after = converged(cluster, timeout=60)
    assert after_version == version, "nothing was written: the same version"
    assert after != before
    r = cluster["dps"][0].status("/status").json()
    assert r["configuration_hash"] == after
    # the snapshot announced the kept digest; the new data plane hashed what it received,
    # refused it, and got one whose digest was recomputed from the rows
    assert "does not match its kept digest" in cp.log_text()
    assert "differs from the one recomputed" in cp.log_text()
    # the data planes that were current by deltas were told by the heartbeats and resynced
    assert status(cp)["pushes"]["resyncs"] >= resyncs + len(cluster["dps"]) - 1
    # the kept digest was repaired: the next write goes by delta and needs no resync
    resyncs = status(cp)["pushes"]["resyncs"]
    deltas = [cluster_status(dp)["deltas_applied"] for dp in cluster["dps"]]
    write(cp, "POST", "/consumers", username=f"after-{uuid.uuid4().hex[:6]}")
    converged(cluster)
    assert status(cp)["pushes"]["resyncs"] == resyncs
    assert [cluster_status(dp)["deltas_applied"] for dp in cluster["dps"]] == \
        [d + 1 for d in deltas]


@pytest.mark.asan  # the DAO's hashing and the change-log arithmetic under ASan too
def test_a_wrong_kept_digest_is_caught_by_the_next_delta_and_repaired(cluster):
    """The kept digest itself corrupted (by hand, here): the next delta carries the wrong
    value, every data plane that applies it finds its own digest differs and NACKs, and the
    control plane resyncs them, finds the kept digest wrong when it verifies, and repairs it."""
    cp = cluster["cp"]
    converged(cluster)
    nacks = sum(cluster_status(dp)["nacks_sent"] for dp in cluster["dps"])
    sql(cluster, "UPDATE control_planes SET config_digest = 12345")
    write(cp, "POST", "/consumers", username=f"wrong-{uuid.uuid4().hex[:6]}")
    version, digest = converged(cluster, timeout=60)
    assert digest != "0" * 64
    assert sum(cluster_status(dp)["nacks_sent"] for dp in cluster["dps"]) > nacks, \
        "the data planes said the delta's digest was not theirs"
    rows = sql(cluster, "SELECT config_digest IS NOT NULL FROM control_planes"
                        " WHERE name = 'default'")
    assert rows == [(True,)]
    # repaired: the next write is a plain delta again, no NACK
    nacks = sum(cluster_status(dp)["nacks_sent"] for dp in cluster["dps"])
    write(cp, "POST", "/consumers", username=f"right-{uuid.uuid4().hex[:6]}")
    assert converged(cluster)[0] == version + 1
    assert sum(cluster_status(dp)["nacks_sent"] for dp in cluster["dps"]) == nacks


@pytest.mark.asan  # the DAO's hashing and the change-log arithmetic under ASan too
def test_unknown_digests_are_computed_at_start(cluster):
    cp = cluster["cp"]
    version, digest = converged(cluster)
    cp.stop()
    # a database from before migration 005: no digest anywhere
    sql(cluster, "UPDATE control_planes SET config_digest = NULL")
    sql(cluster, "UPDATE config_versions SET digest = NULL")
    cp.start()
    wait_for(lambda: kept(cp) == (version, digest), 30, interval=0.2,
             what="the control plane to compute its digest at start")
    assert "computed the config digest of 1 control plane" in cp.log_text()
    write(cp, "POST", "/consumers", username="after-restart")
    version2, digest2 = converged(cluster)
    assert version2 == version + 1 and digest2 != digest


def test_a_snapshot_that_fails_while_streamed_is_dropped_and_sent_again(cluster):
    """A snapshot is streamed as it is read; its build failing part way (here: its PostgreSQL
    backend terminated) must close the sessions that got part of it, and the data plane must
    end with a whole snapshot, not a half one."""
    cp = cluster["cp"]
    # enough rows that the build takes a while: inserted behind the change log, then the
    # digest made unknown so the control plane recomputes it (as after a bulk load)
    sql(cluster, """
        WITH cp AS (SELECT id FROM control_planes WHERE name = 'default'),
        c AS (INSERT INTO consumers (cp_id, id, username, created_at, doc)
              SELECT cp.id, u.id, 'bulk-' || u.g, 1, jsonb_build_object('id', u.id, 'username',
                     'bulk-' || u.g, 'custom_id', null, 'tags', null, 'created_at', 1)
              FROM cp, (SELECT g, gen_random_uuid() AS id FROM generate_series(1, 80000) g) u
              RETURNING cp_id, id)
        INSERT INTO keyauth_credentials (cp_id, id, consumer_id, key_digest, key_enc,
                                         created_at, doc)
        SELECT k.cp_id, k.kid, k.id, sha256(convert_to(k.kid::text, 'UTF8')), '\\x00', 1,
               jsonb_build_object('id', k.kid, 'consumer', jsonb_build_object('id', k.id),
                                  'tags', null, 'created_at', 1)
        FROM (SELECT cp_id, id, gen_random_uuid() AS kid FROM c) k""")
    sql(cluster, "UPDATE control_planes SET config_digest = NULL")
    write(cp, "POST", "/consumers", username="after-bulk")
    wait_for(lambda: kept(cp)[1], 120, interval=0.2, what="the digest recomputed")
    version = kept(cp)[0]
    # restart so that no built snapshot is cached, then a new data plane needs one
    cp.stop()
    cp.start()
    dp = add_dp(cluster)

    def building():
        rows = sql(cluster, "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                            " AND query LIKE 'SELECT id::text, doc::text%%ORDER BY%%'"
                            " AND state <> 'idle'")
        return rows[0][0] if rows else None
    pid = wait_for(building, 60, interval=0.005, what="the snapshot build to start")
    sql(cluster, "SELECT pg_terminate_backend(%s)", pid)
    wait_for(lambda: "cannot build a snapshot" in cp.log_text(), 30,
             what="the control plane to notice the failed build")
    # the data plane that had part of it gets a whole one after reconnecting
    wait_for(lambda: dp_state(dp)[0] == version, 180, interval=0.2,
             what="the new data plane to apply a whole snapshot")
    converged(cluster, timeout=120)
    assert "could not be completed" in dp.log_text()
    # leave the module's config small again
    sql(cluster, "DELETE FROM keyauth_credentials WHERE created_at = 1")
    sql(cluster, "DELETE FROM consumers WHERE username LIKE 'bulk-%%'")
    sql(cluster, "UPDATE control_planes SET config_digest = NULL")
    write(cp, "POST", "/consumers", username="after-cleanup")
    wait_for(lambda: kept(cp)[1], 60, interval=0.2, what="the digest recomputed")
