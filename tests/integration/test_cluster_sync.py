"""The control plane's sync server, spoken to by a scripted data plane (harness/sync_peer.py):
enrolment with `tollgate dp join`, live deltas, catch-up by delta and by snapshot, ACK/NACK
bookkeeping (digest resync, store failures retried with back-off), and the ways a data plane can
be wrong or hostile. Each refusal also checks that a second, healthy data plane connected all
along (`bystander`) keeps receiving deltas."""
import hashlib
import json
import os
import subprocess
import tempfile
import time

import pytest

from harness.procs import wait_for
from harness.sync_peer import Closed, HealthyPeer, SyncPeer, messages

pb = messages()


@pytest.fixture(scope="module")
def ccp(cp_factory):
    cp = cp_factory(env={"TOLLGATE_CLUSTER_HEARTBEAT_MS": "500"}, start=False)
    cp.env["TOLLGATE_CLUSTER_ADVERTISE"] = cp.cluster_address
    cp.process.env = cp.env
    return cp.start()


def new_token(ccp, **body):
    r = ccp.admin.post("/clustering/join-tokens", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def join(ccp, token, extra=(), workdir=None):
    prefix = tempfile.mkdtemp(prefix="dp-", dir=workdir)
    os.chmod(prefix, 0o755)
    r = ccp.run_cli("dp", "join", ccp.cluster_address, "--token", token, *extra,
                    env={"TOLLGATE_PREFIX": prefix})
    return prefix, r


@pytest.fixture(scope="module")
def enrolled(ccp, tmp_path_factory):
    tok = new_token(ccp, uses=5)
    prefix, r = join(ccp, tok["token"], workdir=str(tmp_path_factory.mktemp("dps")))
    assert r.returncode == 0, r.stderr
    d = os.path.join(prefix, "cluster")
    with open(os.path.join(d, "cluster.json")) as f:
        info = json.load(f)
    return {"dir": d, **info}


@pytest.fixture(scope="module")
def bystander(ccp, tmp_path_factory):
    """Another enrolled data plane, connected for the whole module and acknowledging everything."""
    tok = new_token(ccp, uses=1)
    prefix, r = join(ccp, tok["token"], workdir=str(tmp_path_factory.mktemp("bystander")))
    assert r.returncode == 0, r.stderr
    d = os.path.join(prefix, "cluster")
    with open(os.path.join(d, "cluster.json")) as f:
        dp = {"dir": d, **json.load(f)}
    peer = HealthyPeer(lambda: connect(ccp, dp),
                       dict(protocol_version=1, tollgate_version="0.1.0", hostname="bystander",
                            node_id=dp["node_id"]))
    peer.start()
    assert peer.welcomed.wait(15), peer.error
    yield peer
    peer.stop()


def latest(ccp):
    (mine,) = [c for c in ccp.admin.get("/clustering/status").json()["control_planes"]
               if c["name"] == "default"]
    return mine["config_version"]


def assert_undisturbed(ccp, bystander):
    """A write still reaches the healthy data plane, still connected since the module began."""
    r = ccp.admin.post("/consumers", json={"username": f"undisturbed-{time.monotonic_ns()}"})
    assert r.status_code == 201, r.text
    v = latest(ccp)
    assert bystander.wait_acked(v), (bystander.error, bystander.acked, v)
    assert bystander.error is None and bystander.is_alive()


def connect(ccp, dp, **kw):
    host, port = ccp.cluster_address.split(":")
    d = dp["dir"]
    return SyncPeer(host, int(port), os.path.join(d, "dp.crt"), os.path.join(d, "dp.key"),
                    os.path.join(d, "ca.crt"), dp["server_name"], **kw)


def hello(peer, dp, have=0, cp_id=None, node_id=None, version="0.1.0", digest=""):
    peer.send(hello=pb.Hello(protocol_version=1, tollgate_version=version, hostname="pytest",
                             have_version=have, config_digest=digest,
                             control_plane_id=cp_id if cp_id is not None else dp["control_plane_id"],
                             node_id=node_id if node_id is not None else dp["node_id"]))
    env = peer.recv()
    return env


def drain_to_latest(peer, welcome):
    """Accepts whatever catch-up comes after Welcome; returns the version acknowledged."""
    version = welcome.welcome.latest_version
    applied = None
    while applied != version:
        env = peer.recv()
        kind = env.WhichOneof("body")
        if kind == "delta":
            peer.send(ack=pb.Ack(nonce=env.delta.nonce, applied_version=env.delta.to_version))
            applied = env.delta.to_version
        elif kind == "snapshot_end":
            peer.send(ack=pb.Ack(nonce=env.snapshot_end.nonce, applied_version=env.snapshot_end.version,
                                 config_digest=env.snapshot_end.config_digest))
            applied = env.snapshot_end.version
        version = max(version, applied or 0)
    return applied


def data_plane(ccp, node_id):
    r = ccp.admin.get(f"/clustering/data-planes/{node_id}")
    assert r.status_code == 200, r.text
    return r.json()


def test_join_writes_credentials_and_records_the_data_plane(ccp, enrolled):
    assert os.stat(os.path.join(enrolled["dir"], "dp.key")).st_mode & 0o777 == 0o600
    assert enrolled["endpoints"] == [ccp.cluster_address]
    row = data_plane(ccp, enrolled["node_id"])
    assert row["control_plane_id"] == enrolled["control_plane_id"]
    assert row["revoked_at"] is None


@pytest.mark.asan
def test_write_reaches_the_data_plane_as_a_delta_within_a_second(ccp, enrolled):
    peer = connect(ccp, enrolled)
    try:
        w = hello(peer, enrolled)
        assert w.WhichOneof("body") == "welcome"
        if w.welcome.latest_version:
            drain_to_latest(peer, w)
        t0 = time.monotonic()
        svc = ccp.admin.post("/services", json={"name": "sync-svc", "url": "http://127.0.0.1:9/"}).json()
        env = peer.recv()
        assert time.monotonic() - t0 < 1.0
        assert env.WhichOneof("body") == "delta"
        (change,) = env.delta.changes
        assert (change.type, change.id, change.op) == ("services", svc["id"], pb.OP_UPSERT)
        assert change.entity.service.host == "127.0.0.1"
        peer.send(ack=pb.Ack(nonce=env.delta.nonce, applied_version=env.delta.to_version))

        c = ccp.admin.post("/consumers", json={"username": "sync-user"}).json()
        env = peer.recv()
        peer.send(ack=pb.Ack(nonce=env.delta.nonce, applied_version=env.delta.to_version))
        ccp.admin.post(f"/consumers/{c['id']}/key-auth", json={"key": "sync-secret"})
        env = peer.recv()
        (change,) = env.delta.changes
        cred = change.entity.keyauth_credential
        assert cred.key_digest == hashlib.sha256(b"sync-secret").digest()
        assert b"sync-secret" not in env.SerializeToString()
        peer.send(ack=pb.Ack(nonce=env.delta.nonce, applied_version=env.delta.to_version))
        time.sleep(0.8)
        row = data_plane(ccp, enrolled["node_id"])
        assert row["config_version"] == env.delta.to_version
        assert row["sync_status"] == "normal"
    finally:
        peer.close()


@pytest.mark.asan
def test_reconnect_catches_up_by_one_merged_delta(ccp, enrolled):
    peer = connect(ccp, enrolled)
    w = hello(peer, enrolled)
    have = drain_to_latest(peer, w) if w.welcome.latest_version else 0
    peer.close()
    # while it is away: three writes touching the same consumer
    c = ccp.admin.post("/consumers", json={"username": "away"}).json()
    ccp.admin.patch(f"/consumers/{c['id']}", json={"custom_id": "x1"})
    ccp.admin.patch(f"/consumers/{c['id']}", json={"custom_id": "x2"})
    peer = connect(ccp, enrolled)
    try:
        w = hello(peer, enrolled, have=have)
        env = peer.recv()
        assert env.WhichOneof("body") == "delta"
        assert env.delta.from_version == have
        assert env.delta.to_version == w.welcome.latest_version == have + 3
        (change,) = env.delta.changes  # merged: the last state of the consumer only
        assert change.entity.consumer.custom_id == "x2"
    finally:
        peer.close()


def test_a_foreign_history_gets_a_snapshot_with_its_digest(ccp, enrolled):
    peer = connect(ccp, enrolled)
    try:
        w = hello(peer, enrolled, have=5, cp_id="00000000-0000-0000-0000-000000000000")
        begin = peer.recv()
        assert begin.WhichOneof("body") == "snapshot_begin"
        assert begin.snapshot_begin.version == w.welcome.latest_version
        # streamed as it is read: the entity count is not known when SnapshotBegin goes out
        assert not begin.snapshot_begin.HasField("entity_count")
        n = chunks = 0
        while True:
            env = peer.recv()
            if env.WhichOneof("body") == "snapshot_end":
                break
            assert env.snapshot_chunk.nonce == begin.snapshot_begin.nonce
            assert env.snapshot_chunk.seq == chunks
            chunks += 1
            n += len(env.snapshot_chunk.entities)
        assert n >= 4
        assert env.snapshot_end.chunks == chunks
        assert env.snapshot_end.version == begin.snapshot_begin.version
        assert len(env.snapshot_end.config_digest) == 64
    finally:
        peer.close()


@pytest.mark.asan
def test_a_nack_is_recorded_and_not_retried(ccp, enrolled):
    peer = connect(ccp, enrolled)
    try:
        w = hello(peer, enrolled)
        have = drain_to_latest(peer, w) if w.welcome.latest_version else 0
        ccp.admin.post("/consumers", json={"username": "refused-one"})
        env = peer.recv()
        peer.send(nack=pb.Nack(nonce=env.delta.nonce, kept_version=have, code=pb.NACK_INVALID,
                               entity_type="consumers", entity_id=env.delta.changes[0].id,
                               message="refused by the test"))
        time.sleep(1.2)
        row = data_plane(ccp, enrolled["node_id"])
        assert row["sync_status"] == "rejected"
        assert "refused by the test" in row["last_error"]
        # heartbeats come, the same version does not
        env = peer.recv(skip_heartbeats=False)
        assert env.WhichOneof("body") == "heartbeat"
    finally:
        peer.close()


def test_a_version_gap_nack_falls_back_to_a_snapshot(ccp, enrolled):
    peer = connect(ccp, enrolled)
    try:
        w = hello(peer, enrolled)
        have = drain_to_latest(peer, w) if w.welcome.latest_version else 0
        ccp.admin.post("/consumers", json={"username": "gap-one"})
        env = peer.recv()
        peer.send(nack=pb.Nack(nonce=env.delta.nonce, kept_version=have - 1,
                               code=pb.NACK_VERSION_GAP, message="gap"))
        assert peer.recv().WhichOneof("body") == "snapshot_begin"
    finally:
        peer.close()


def recv_beating(peer, version, timeout=10):
    """The next message other than a heartbeat, heartbeating meanwhile (a live data plane)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if peer.readable(0.2):
            env = peer.recv(skip_heartbeats=False)
            if env.WhichOneof("body") != "heartbeat":
                return env
        else:
            peer.send(heartbeat=pb.Heartbeat(version=version))
    raise AssertionError(f"nothing but heartbeats for {timeout}s")


def receive_snapshot(peer):
    """Reads a whole snapshot; returns its SnapshotEnd."""
    while True:
        env = peer.recv()
        if env.WhichOneof("body") == "snapshot_end":
            return env.snapshot_end


@pytest.mark.asan
def test_digest_mismatch_has_one_resync_path_and_does_not_loop(ccp, enrolled):
    peer = connect(ccp, enrolled)
    try:
        # a foreign history gets a snapshot: the control plane now knows the digest of latest
        w = hello(peer, enrolled, have=3, cp_id="00000000-0000-0000-0000-000000000000")
        v = w.welcome.latest_version
        assert peer.recv().WhichOneof("body") == "snapshot_begin"
        end = receive_snapshot(peer)
        peer.send(ack=pb.Ack(nonce=end.nonce, applied_version=v, config_digest=end.config_digest))
        # the DP saw a different digest in a CP heartbeat: NACK_DIGEST with nonce 0 -> snapshot
        peer.send(nack=pb.Nack(nonce=0, kept_version=v, code=pb.NACK_DIGEST, message="differs"))
        assert peer.recv().WhichOneof("body") == "snapshot_begin"
        end = receive_snapshot(peer)
        # ... which does not repair it: recorded as rejected, no third snapshot however often
        # either side notices (the DP's heartbeats carry the wrong digest too)
        peer.send(ack=pb.Ack(nonce=end.nonce, applied_version=v, config_digest="ab" * 32))
        for _ in range(3):
            peer.send(heartbeat=pb.Heartbeat(version=v, config_digest="ab" * 32))
            peer.send(nack=pb.Nack(nonce=0, kept_version=v, code=pb.NACK_DIGEST, message="x"))
        got = peer.recv_for(2, beat_every=0.3, version=v)
        kinds = [e.WhichOneof("body") for e in got if not isinstance(e, Closed)]
        assert "snapshot_begin" not in kinds and not any(isinstance(e, Closed) for e in got)
        row = data_plane(ccp, enrolled["node_id"])
        assert row["sync_status"] == "rejected" and "digest" in row["last_error"], row
    finally:
        peer.close()


def test_a_data_plane_heartbeat_with_another_digest_triggers_the_same_resync(ccp, enrolled):
    peer = connect(ccp, enrolled)
    try:
        w = hello(peer, enrolled, have=3, cp_id="00000000-0000-0000-0000-000000000000")
        v = w.welcome.latest_version
        end = receive_snapshot(peer)
        peer.send(ack=pb.Ack(nonce=end.nonce, applied_version=v, config_digest=end.config_digest))
        peer.send(heartbeat=pb.Heartbeat(version=v, config_digest="cd" * 32))
        assert peer.recv().WhichOneof("body") == "snapshot_begin"
        end = receive_snapshot(peer)
        peer.send(ack=pb.Ack(nonce=end.nonce, applied_version=v, config_digest=end.config_digest))
        time.sleep(1.2)
        assert data_plane(ccp, enrolled["node_id"])["sync_status"] == "normal"
    finally:
        peer.close()


@pytest.mark.asan
def test_a_store_failure_is_retried_with_back_off(ccp, enrolled):
    peer = connect(ccp, enrolled)
    try:
        w = hello(peer, enrolled)
        have = drain_to_latest(peer, w) if w.welcome.latest_version else 0
        ccp.admin.post("/consumers", json={"username": "store-full"})
        sent = []
        for attempt in range(3):
            env = recv_beating(peer, have)
            assert env.WhichOneof("body") == "delta", env
            sent.append(time.monotonic())
            peer.send(nack=pb.Nack(nonce=env.delta.nonce, kept_version=have, code=pb.NACK_STORE,
                                   message="MDB_MAP_FULL: the disk is full"))
            if attempt == 0:
                def shown():
                    row = data_plane(ccp, enrolled["node_id"])
                    return row["sync_status"] == "rejected" and "retry 1" in row["last_error"]
                wait_for(shown, 5, what="the store failure in the data plane's record")
        # 0.5 s then 1 s between attempts: back-off, not a tight loop
        assert sent[1] - sent[0] >= 0.45 and sent[2] - sent[1] >= 0.95, sent
        env = recv_beating(peer, have)
        peer.send(ack=pb.Ack(nonce=env.delta.nonce, applied_version=env.delta.to_version))
        wait_for(lambda: data_plane(ccp, enrolled["node_id"])["sync_status"] == "normal", 5,
                 what="normal again once stored")
    finally:
        peer.close()


# ---------------------------------------------------------------- refusals


def test_no_client_certificate_cannot_sync(ccp, enrolled):
    host, port = ccp.cluster_address.split(":")
    with pytest.raises(Closed):
        SyncPeer(host, int(port), ca=os.path.join(enrolled["dir"], "ca.crt"),
                 server_name=enrolled["server_name"])


def test_a_certificate_from_another_ca_cannot_sync(ccp, enrolled, tmp_path, bystander):
    key, crt = tmp_path / "k.pem", tmp_path / "c.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", key, "-out", crt, "-days", "1", "-subj",
                    f"/CN={enrolled['node_id']}/OU={enrolled['control_plane_id']}/O=tollgate-dp"],
                   check=True, capture_output=True)
    host, port = ccp.cluster_address.split(":")
    with pytest.raises((Closed, OSError)):
        p = SyncPeer(host, int(port), str(crt), str(key), os.path.join(enrolled["dir"], "ca.crt"),
                     enrolled["server_name"])
        p.send(hello=pb.Hello(protocol_version=1, tollgate_version="0.1.0"))
        p.recv()
    assert_undisturbed(ccp, bystander)


@pytest.mark.asan
def test_claiming_another_node_id_is_refused(ccp, enrolled, bystander):
    peer = connect(ccp, enrolled)
    try:
        env = hello(peer, enrolled, node_id="11111111-1111-1111-1111-111111111111")
        assert env.WhichOneof("body") == "error"
        assert env.error.code == pb.ERROR_IDENTITY
        assert "certificate" in env.error.message
    finally:
        peer.close()
    assert_undisturbed(ccp, bystander)


def test_a_newer_minor_version_is_refused_as_incompatible(ccp, enrolled):
    peer = connect(ccp, enrolled)
    try:
        env = hello(peer, enrolled, version="0.9.0")
        assert env.error.code == pb.ERROR_INCOMPATIBLE
    finally:
        peer.close()


TRUNCATED_HELLO = pb.Envelope(hello=pb.Hello(protocol_version=1, tollgate_version="0.1.0",
                                             hostname="truncated")).SerializeToString()[:-4]


@pytest.mark.asan
@pytest.mark.parametrize("frame", [b"\xff\xff\xff", b"", b"\x0a\x05hello", TRUNCATED_HELLO],
                         ids=["garbage", "empty", "not-hello", "truncated"])
def test_garbage_or_a_first_message_other_than_hello_gets_an_error(ccp, enrolled, frame,
                                                                    bystander):
    peer = connect(ccp, enrolled)
    try:
        peer.send_raw(frame)
        env = peer.recv()
        assert env.WhichOneof("body") == "error"
        assert env.error.code == pb.ERROR_PROTOCOL
        assert env.error.message in ("malformed frame", "expected Hello first")
        with pytest.raises(Closed):
            peer.recv()
    finally:
        peer.close()
    assert_undisturbed(ccp, bystander)


@pytest.mark.asan
def test_an_oversize_frame_closes_the_connection(ccp, enrolled, bystander):
    peer = connect(ccp, enrolled, timeout=30)
    try:
        w = hello(peer, enrolled)
        assert w.WhichOneof("body") == "welcome"
        try:  # the control plane may close while the frame is still being written
            peer.send_raw(b"\x00" * ((16 << 20) + 1))
        except OSError:
            pass
        with pytest.raises((Closed, OSError)) as e:
            while True:
                peer.recv()
        if isinstance(e.value, Closed) and e.value.code is not None:
            assert e.value.code == 1009 and "16 MiB" in e.value.reason
    finally:
        peer.close()
    assert "above 16777216 bytes" in ccp.log_text()
    assert_undisturbed(ccp, bystander)


@pytest.mark.asan
def test_a_data_plane_that_never_acks_is_disconnected(ccp, enrolled, bystander):
    peer = connect(ccp, enrolled)
    try:
        w = hello(peer, enrolled)
        have = drain_to_latest(peer, w) if w.welcome.latest_version else 0
        ccp.admin.post("/consumers", json={"username": "never-acked"})
        assert peer.recv().WhichOneof("body") == "delta"
        # alive (heartbeats) but silent on the push: cut off after 6 heartbeat intervals (3 s)
        got = peer.recv_for(10, beat_every=0.3, version=have)
        errors = [e for e in got if not isinstance(e, Closed) and e.WhichOneof("body") == "error"]
        assert errors and "no acknowledgement" in errors[0].error.message, got
        assert isinstance(got[-1], Closed)
    finally:
        peer.close()
    assert_undisturbed(ccp, bystander)


@pytest.mark.asan
def test_a_heartbeat_flood_is_disconnected(ccp, enrolled, bystander):
    peer = connect(ccp, enrolled)
    try:
        w = hello(peer, enrolled)
        have = drain_to_latest(peer, w) if w.welcome.latest_version else 0
        for _ in range(50):
            peer.send(heartbeat=pb.Heartbeat(version=have))
        got = peer.recv_for(5)
        errors = [e for e in got if not isinstance(e, Closed) and e.WhichOneof("body") == "error"]
        assert errors and "heartbeat flood" in errors[0].error.message, got
        assert errors[0].error.code == pb.ERROR_PROTOCOL
        assert isinstance(got[-1], Closed)
    finally:
        peer.close()
    assert_undisturbed(ccp, bystander)


def test_join_refuses_bad_tokens_and_a_wrong_ca_hash(ccp, tmp_path):
    _, r = join(ccp, "not-a-token", workdir=str(tmp_path))
    assert r.returncode != 0 and "token" in r.stderr
    _, r = join(ccp, "abcdef.0123456789abcdef", workdir=str(tmp_path))
    assert r.returncode != 0
    used = new_token(ccp, uses=1)
    _, r = join(ccp, used["token"], workdir=str(tmp_path))
    assert r.returncode == 0, r.stderr
    prefix, r = join(ccp, used["token"], workdir=str(tmp_path))
    assert r.returncode != 0
    assert not os.path.exists(os.path.join(prefix, "cluster", "dp.crt"))
    tok = new_token(ccp)
    prefix, r = join(ccp, tok["token"], ["--ca-hash", "sha256:" + "0" * 64], workdir=str(tmp_path))
    assert r.returncode != 0 and "hash" in r.stderr.lower()
    assert not os.path.exists(os.path.join(prefix, "cluster", "dp.crt"))


@pytest.mark.asan
def test_a_revoked_data_plane_is_cut_off_and_refused(ccp, tmp_path, bystander):
    tok = new_token(ccp)
    prefix, r = join(ccp, tok["token"], workdir=str(tmp_path))
    assert r.returncode == 0, r.stderr
    d = os.path.join(prefix, "cluster")
    with open(os.path.join(d, "cluster.json")) as f:
        dp = {"dir": d, **json.load(f)}
    peer = connect(ccp, dp)
    try:
        w = hello(peer, dp)
        assert w.WhichOneof("body") == "welcome"
        assert ccp.admin.delete(f"/clustering/data-planes/{dp['node_id']}").status_code == 204
        while True:
            env = peer.recv()
            if env.WhichOneof("body") == "error":
                break
        assert env.error.code == pb.ERROR_REVOKED
    finally:
        peer.close()
    peer = connect(ccp, dp)
    try:
        env = hello(peer, dp)
        assert env.WhichOneof("body") == "error" and env.error.code == pb.ERROR_REVOKED
    finally:
        peer.close()
    assert_undisturbed(ccp, bystander)
