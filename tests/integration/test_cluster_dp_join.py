"""`tollgate dp join` (DESIGN.md §6). Mostly the data plane's side against a fake join server
(harness/cluster.py), so it is tested on its own: the signed cluster-info, the CA pin, the CSR
over TLS verified against the received CA, the files it writes, and every way it must refuse
cleanly (exit 1, a clear message, nothing written). The last test joins a real control plane's
cluster listener end to end.
"""
import json
import os
import socket
import stat
import subprocess
import threading

import pytest

from harness import cluster
from harness.procs import LOOPBACK, free_port

TOKEN = "abcdef.0123456789abcdef"

needs_crypto = pytest.mark.skipif(not cluster.HAVE_CRYPTOGRAPHY,
                                  reason="python3-cryptography is not installed")


@pytest.fixture
def prefix(workdir, request):
    path = os.path.join(workdir, f"dp-join-{request.node.name}"[:80].replace("/", "_"))
    os.makedirs(path, exist_ok=True)
    return path


def join(tollgate_bin, prefix, *args):
    return cluster.run_dp_join(tollgate_bin, prefix, *args)


def cluster_dir(prefix):
    return os.path.join(prefix, "cluster")


def assert_refused(out, message, prefix):
    assert out.returncode == 1, (out.stdout, out.stderr)
    assert message in out.stderr, out.stderr
    assert "Segmentation" not in out.stderr and "Sanitizer" not in out.stderr
    assert not os.path.exists(os.path.join(cluster_dir(prefix), "cluster.json"))
    assert not os.path.exists(os.path.join(cluster_dir(prefix), "dp.key"))


# ------------------------------------------------------------------------------ refused locally


@pytest.mark.parametrize("token", ["abcdef0123456789abcdef", "ABCDEF.0123456789abcdef",
                                   "abcdef.0123456789abcde", "abcdef.0123456789abcdef0",
                                   "abc-ef.0123456789abcdef", ""])
def test_malformed_token_is_refused_before_any_traffic(tollgate_bin, prefix, token):
    # a listener that would see any connection attempt
    sock = socket.socket()
    sock.bind((LOOPBACK, 0))
    sock.listen(8)
    try:
        out = join(tollgate_bin, prefix, f"{LOOPBACK}:{sock.getsockname()[1]}", "--token", token)
        assert_refused(out, "token is malformed" if token else "token", prefix)
        sock.setblocking(False)
        with pytest.raises(BlockingIOError):
            sock.accept()
    finally:
        sock.close()


@pytest.mark.parametrize("args, message", [
    ([], "HOST:PORT and --token are required"),
    ([f"{LOOPBACK}:8005"], "HOST:PORT and --token are required"),
    (["--token", TOKEN], "HOST:PORT and --token are required"),
    (["localhost", "--token", TOKEN], "is not HOST:PORT"),
    (["localhost:0", "--token", TOKEN], "is not HOST:PORT"),
    (["localhost:99999", "--token", TOKEN], "is not HOST:PORT"),
    ([f"{LOOPBACK}:8005", "--token", TOKEN, "--ca-hash", "md5:abc"], "--ca-hash must be sha256:"),
    ([f"{LOOPBACK}:8005", "--token", TOKEN, "--ca-hash", "sha256:" + "g" * 64],
     "--ca-hash must be"),
    ([f"{LOOPBACK}:8005", "--token", TOKEN, "--bogus"], "unexpected argument"),
])
def test_bad_arguments(tollgate_bin, prefix, args, message):
    assert_refused(join(tollgate_bin, prefix, *args), message, prefix)


def test_unreachable_control_plane(tollgate_bin, prefix):
    out = join(tollgate_bin, prefix, f"{LOOPBACK}:{free_port()}", "--token", TOKEN)
    assert_refused(out, f"cannot reach the control plane at {LOOPBACK}:", prefix)


def test_not_a_tls_server(tollgate_bin, prefix):
    """Something that accepts and closes (not our CP): a clean failure, not a hang."""
    sock = socket.socket()
    sock.bind((LOOPBACK, 0))
    sock.listen(8)

    def close_each():
        for _ in range(2):
            try:
                conn, _ = sock.accept()
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
                conn.close()
            except OSError:
                return
    t = threading.Thread(target=close_each, daemon=True)
    t.start()
    try:
        out = join(tollgate_bin, prefix, f"{LOOPBACK}:{sock.getsockname()[1]}", "--token", TOKEN)
        assert_refused(out, "cannot reach the control plane", prefix)
    finally:
        sock.close()


# ------------------------------------------------------------------------------ against a fake CP


@needs_crypto
def test_join_writes_credentials(tollgate_bin, workdir, prefix):
    with cluster.FakeJoinServer(workdir, TOKEN) as cp:
        out = join(tollgate_bin, prefix, cp.address, "--token", TOKEN, "--ca-hash", cp.ca.hash)
        assert out.returncode == 0, out.stderr
        assert cp.node_id in out.stdout and cp.cp_id in out.stdout
        assert cp.paths() == ["/v1/join/cluster-info", "/v1/join/csr"]
        post = cp.requests[1]
        assert json.loads(post[3])["hostname"] == socket.gethostname()

    d = cluster_dir(prefix)
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(os.path.join(d, "dp.key")).st_mode) == 0o600
    assert sorted(os.listdir(d)) == ["ca.crt", "cluster.json", "dp.crt", "dp.key"]  # no temp files
    with open(os.path.join(d, "ca.crt")) as f:
        assert f.read() == cp.ca.pem
    with open(os.path.join(d, "cluster.json")) as f:
        record = json.load(f)
    assert record == {"node_id": cp.node_id, "control_plane_id": cp.cp_id,
                      "endpoints": [cp.address, "10.9.8.7:8005"], "server_name": LOOPBACK}
    # the certificate is for the key that never left the node
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    with open(os.path.join(d, "dp.crt"), "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    with open(os.path.join(d, "dp.key"), "rb") as f:
        key = serialization.load_pem_private_key(f.read(), None)
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()
    assert b"PRIVATE" not in cp.requests[1][3]

    # joining again does nothing and says so (no traffic: the fake server is gone)
    again = join(tollgate_bin, prefix, cp.address, "--token", TOKEN)
    assert again.returncode == 0, again.stderr
    assert "already enrolled" in again.stdout and cp.node_id in again.stdout


@needs_crypto
def test_join_without_pin_warns(tollgate_bin, workdir, prefix):
    with cluster.FakeJoinServer(workdir, TOKEN) as cp:
        out = join(tollgate_bin, prefix, cp.address, "--token", TOKEN)
    assert out.returncode == 0, out.stderr
    assert "--ca-hash" in out.stderr and cp.ca.hash in out.stderr
    assert os.path.exists(os.path.join(cluster_dir(prefix), "cluster.json"))


@needs_crypto
def test_ca_hash_mismatch(tollgate_bin, workdir, prefix):
    other = cluster.FakeCa()
    with cluster.FakeJoinServer(workdir, TOKEN) as cp:
        out = join(tollgate_bin, prefix, cp.address, "--token", TOKEN, "--ca-hash", other.hash)
        assert_refused(out, "CA hash mismatch", prefix)
        assert cp.ca.hash in out.stderr and other.hash in out.stderr
        assert cp.paths() == ["/v1/join/cluster-info"]  # the token was never sent


@needs_crypto
def test_forged_cluster_info_is_refused(tollgate_bin, workdir, prefix):
    """A man in the middle without the token: whatever CA it substitutes, it cannot sign."""
    with cluster.FakeJoinServer(workdir, TOKEN, sign_token="zzzzzz.zzzzzzzzzzzzzzzz") as cp:
        out = join(tollgate_bin, prefix, cp.address, "--token", TOKEN)
        assert_refused(out, "not signed with this token", prefix)
        assert cp.paths() == ["/v1/join/cluster-info"]


@needs_crypto
def test_server_certificate_must_match_the_ca_and_host(tollgate_bin, workdir, prefix):
    """The CSR (which carries the token) only goes to a server the received CA vouches for."""
    with cluster.FakeJoinServer(workdir, TOKEN, server_names=("cp.elsewhere.test",)) as cp:
        out = join(tollgate_bin, prefix, cp.address, "--token", TOKEN)
        assert_refused(out, "certificate", prefix)
        assert cp.paths() == ["/v1/join/cluster-info"]
    # a cluster-info naming another CA than the one the server's certificate chains to
    with cluster.FakeJoinServer(workdir, TOKEN, info_ca=cluster.FakeCa()) as cp:
        out = join(tollgate_bin, prefix, cp.address, "--token", TOKEN)
        assert_refused(out, "refused", prefix)
        assert cp.paths() == ["/v1/join/cluster-info"]


@needs_crypto
@pytest.mark.parametrize("where, status, message", [
    ("info", 401, "refused the token"),
    ("info", 503, "answered 503"),
    ("csr", 401, "refused the token"),
    ("csr", 400, "answered 400: refused by the fake server"),
])
def test_control_plane_refusals(tollgate_bin, workdir, prefix, where, status, message):
    kw = {"info_status": status} if where == "info" else {"csr_status": status}
    with cluster.FakeJoinServer(workdir, TOKEN, **kw) as cp:
        out = join(tollgate_bin, prefix, cp.address, "--token", TOKEN)
    assert_refused(out, message, prefix)


def test_broken_enrolment_is_reported(tollgate_bin, prefix):
    os.makedirs(cluster_dir(prefix), exist_ok=True)
    with open(os.path.join(cluster_dir(prefix), "cluster.json"), "w") as f:
        f.write("{not json")
    out = join(tollgate_bin, prefix, f"{LOOPBACK}:{free_port()}", "--token", TOKEN)
    assert out.returncode == 1
    assert "not a valid enrolment record" in out.stderr and "to join again" in out.stderr


# ------------------------------------------------------------------------------ against a real CP


def serial_of(cert_path):
    out = subprocess.run(["openssl", "x509", "-noout", "-serial", "-in", cert_path],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip().split("=", 1)[1].lower()


def test_join_a_real_control_plane(tollgate_bin, cp, admin, prefix):
    created = admin.post("/clustering/join-tokens", json={"uses": 1, "description": "e2e"})
    assert created.status_code == 201, created.text
    created = created.json()
    address, token, ca_hash = created["join_command"].split()[3:8:2]
    assert address == cp.cluster_address

    out = join(tollgate_bin, prefix, address, "--token", token, "--ca-hash", ca_hash)
    assert out.returncode == 0, out.stderr
    d = cluster_dir(prefix)
    with open(os.path.join(d, "cluster.json")) as f:
        record = json.load(f)
    assert record["control_plane_id"] == created["control_plane_id"]
    assert cp.cluster_address in record["endpoints"]
    assert record["server_name"] == LOOPBACK

    dp = admin.get(f"/clustering/data-planes/{record['node_id']}")
    assert dp.status_code == 200, dp.text
    dp = dp.json()
    assert dp["hostname"] == socket.gethostname()
    assert dp["token_id"] == token[:6] and dp["revoked_at"] is None
    assert dp["cert_serial"] == serial_of(os.path.join(d, "dp.crt")).lstrip("0")
    assert admin.get(f"/clustering/join-tokens/{token[:6]}").json()["uses_left"] == 0

    # the token is used up: a second node cannot join with it
    other = prefix + "-second"
    assert_refused(join(tollgate_bin, other, address, "--token", token), "refused the token", other)
    # a pin that is not this cluster's CA
    token2 = admin.post("/clustering/join-tokens", json={}).json()["token"]
    assert_refused(join(tollgate_bin, other, address, "--token", token2, "--ca-hash",
                        "sha256:" + "0" * 64), "CA hash mismatch", other)
    # a well-formed token the CP does not know
    assert_refused(join(tollgate_bin, other, address, "--token", "zzzzzz.zzzzzzzzzzzzzzzz"),
                   "refused the token", other)
