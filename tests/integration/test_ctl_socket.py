"""The local control socket (DESIGN.md §1, §3): `tollgate status`, `tollgate dp reload`, and the
socket itself — ipc://<prefix>/tollgate.sock, nng req/rep, owner-only, one process per prefix.

Malformed requests are sent with a minimal SP (nng) req0 client written here: the 8-byte
handshake, then one message framed as type 1 + 64-bit length + request id + body.
"""
import json
import os
import signal
import socket
import stat
import struct
import subprocess
import tempfile
import time

import pytest

from dp_helpers import dp_factory, upstream, write_yaml  # noqa: F401 (fixtures)
from harness.cp import clean_env
from harness.dp import DpProcess
from harness.procs import LOOPBACK, wait_for

SOCK = "tollgate.sock"

# Bad requests and odd clients reach C code (and nng) here: also run under ASan/UBSan.
pytestmark = pytest.mark.asan


# ---------------------------------------------------------------------------------- helpers

def run(binary, prefix, *args, timeout=60):
    """`tollgate <args>` with TOLLGATE_PREFIX=prefix; the CompletedProcess."""
    env = clean_env()
    env["TOLLGATE_PREFIX"] = str(prefix)
    return subprocess.run([str(binary), *map(str, args)], env=env, cwd=str(prefix),
                          capture_output=True, text=True, timeout=timeout)


def status_json(binary, prefix):
    out = run(binary, prefix, "status", "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def recv_exact(sock, n):
    data = b""
    while len(data) < n:
        got = sock.recv(n - len(data))
        if not got:
            raise ConnectionError(f"closed after {len(data)} of {n} bytes")
        data += got
    return data


def sp_request(path, payload, timeout=15):
    """One raw req0 exchange with the socket at `path`; the reply's JSON."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(b"\0SP\0\0\x30\0\0")  # we are a req0 peer
        assert recv_exact(s, 8)[:4] == b"\0SP\0"
        body = b"\x80\0\0\x07" + payload
        s.sendall(b"\x01" + struct.pack(">Q", len(body)) + body)
        head = recv_exact(s, 9)
        data = recv_exact(s, struct.unpack(">Q", head[1:])[0])
        assert data[:4] == b"\x80\0\0\x07"  # our request id comes back
        return json.loads(data[4:])


def config(up_port, paths=("/one",), extra=""):
    routes = "\n".join(f"  - name: r{i}\n    paths: [{p}]" for i, p in enumerate(paths))
    return f"""_format_version: "3.0"
services:
- name: svc
  url: http://127.0.0.1:{up_port}
  routes:
{routes}
consumers:
- username: alice
  keyauth_credentials:
  - key: alice-key
{extra}"""


def http_status(dp):
    return dp.status("/status").json()


# ---------------------------------------------------------------------------------- data plane

@pytest.fixture(scope="module")
def dp(dp_factory, upstream):
    return dp_factory(config(upstream.port, ("/one", "/two")), name="ctl-dp")


def test_dp_status_reports_the_running_data_plane(tollgate_bin, dp):
    st = status_json(tollgate_bin, dp.prefix)
    http = http_status(dp)
    assert st["role"] == "data_plane"
    assert st["pid"] == dp.process.pid
    assert st["prefix"] == os.path.realpath(dp.prefix)
    assert st["mode"] == "standalone" and st["declarative_config"] == dp.config_path
    assert st["node_id"] is None and st["control_plane"] is None
    # the same figures GET /status reports
    assert st["configuration"] == {"loaded": True, "version": http["config_version"],
                                   "hash": http["configuration_hash"]}
    assert st["workers"] == http["workers"] == 2
    assert st["store"]["services"] == 1 and st["store"]["routes"] == 2
    assert st["store"]["consumers"] == 1 and st["store"]["keyauth_credentials"] == 1
    assert st["store"]["plugins"] == 0 and st["store"]["data_bytes"] > 0
    assert st["store"]["changed_consumers"] == 0  # loaded whole from a file: nothing changed
    assert st["generation"] == {"services": 1, "routes": 2, "plugins": 0}
    before = st["server"]["total_requests"]
    assert dp.get("/one/x").status_code == 200
    assert status_json(tollgate_bin, dp.prefix)["server"]["total_requests"] == before + 1

    human = run(tollgate_bin, dp.prefix, "status")
    assert human.returncode == 0, human.stderr
    assert f"Tollgate data plane (pid {dp.process.pid}" in human.stdout
    assert f"version {http['config_version']}, hash {http['configuration_hash'][:16]}" \
        in human.stdout
    assert "control plane:   none (standalone)" in human.stdout
    assert "1 services, 2 routes, 0 plugins, 1 consumers, 1 key-auth credentials" in human.stdout


def test_status_with_a_config_file(tollgate_bin, dp, workdir):
    """`-c FILE` before or after the command: the prefix comes from the file."""
    conf = os.path.join(workdir, "ctl-status.conf")
    with open(conf, "w") as f:
        f.write(f"prefix = {dp.prefix}\n")
    env = clean_env()
    for argv in (["-c", conf, "status", "--json"], ["status", "-c", conf, "--json"]):
        out = subprocess.run([tollgate_bin, *argv], env=env, cwd=workdir, capture_output=True,
                             text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["pid"] == dp.process.pid


def test_dp_reload_good_unchanged_and_bad_file(tollgate_bin, dp_factory, upstream):
    d = dp_factory(config(upstream.port, ("/one",)), name="ctl-reload")
    v1 = d.config_version()
    assert d.get("/one/x").status_code == 200 and d.get("/two/x").status_code == 404

    out = run(tollgate_bin, d.prefix, "dp", "reload")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"{d.config_path} is unchanged: still serving configuration " \
                                 f"version {v1}"

    write_yaml(d.config_path, config(upstream.port, ("/one", "/two")))
    out = run(tollgate_bin, d.prefix, "dp", "reload")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"loaded {d.config_path}: now serving configuration version " \
                                 f"{v1 + 1} (was {v1})"
    # the reply comes after the new configuration is served, not before
    assert d.config_version() == v1 + 1
    assert d.get("/two/x").status_code == 200

    # an invalid file: refused with entity and field named, exit 1, the old config stays
    write_yaml(d.config_path, config(upstream.port, ("/one", "two-without-slash")))
    out = run(tollgate_bin, d.prefix, "dp", "reload")
    assert out.returncode == 1, out.stdout
    assert "reload refused" in out.stderr
    assert "routes[1] (r1): paths[0]" in out.stderr, out.stderr
    assert f"keeps serving configuration version {v1 + 1}" in out.stderr
    assert d.config_version() == v1 + 1
    assert d.get("/two/x").status_code == 200

    # several errors: every one is printed
    write_yaml(d.config_path, config(upstream.port, ("/one",)).replace(
        "- name: svc", "- name: svc\n  colour: blue\n  retries: many"))
    out = run(tollgate_bin, d.prefix, "dp", "reload")
    assert out.returncode == 1
    assert "colour" in out.stderr and "retries" in out.stderr, out.stderr
    st = status_json(tollgate_bin, d.prefix)
    assert st["reloads"] == {"ok": 2, "failed": 2}
    assert st["configuration"]["version"] == v1 + 1


def test_reload_of_a_data_plane_without_declarative_config(tollgate_bin, dp_factory):
    d = dp_factory(None, name="ctl-nodecl")
    out = run(tollgate_bin, d.prefix, "dp", "reload")
    assert out.returncode == 1
    assert "nothing to reload" in out.stderr and "declarative_config" in out.stderr


def test_socket_is_owner_only(dp):
    st = os.lstat(os.path.join(dp.prefix, SOCK))
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == os.getuid()


def test_second_process_on_the_same_prefix_is_refused(tollgate_bin, dp, workdir):
    other = DpProcess(tollgate_bin, dp.prefix, os.path.join(workdir, "logs"),
                      name="ctl-second", declarative=dp.config_path)
    other.process.start()
    try:
        rc = other.process.proc.wait(30)
    finally:
        other.stop()
    assert rc != 0
    log = other.log_text()
    assert f"another Tollgate data plane (pid {dp.process.pid}) is already running" in log, log
    # the first one keeps its socket and answers
    assert os.path.exists(os.path.join(dp.prefix, SOCK))
    assert status_json(tollgate_bin, dp.prefix)["pid"] == dp.process.pid
    assert dp.get("/one/x").status_code == 200


def stale_socket(path):
    """A socket file nobody listens on, as a killed process leaves behind."""
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    s.close()


def test_stale_socket_is_replaced(tollgate_bin, dp_factory, upstream, workdir):
    prefix = tempfile.mkdtemp(prefix="ctl-stale-", dir=workdir)
    stale_socket(os.path.join(prefix, SOCK))
    out = run(tollgate_bin, prefix, "status")
    assert out.returncode == 1
    assert f"no Tollgate running with prefix {prefix}" in out.stderr
    assert "left over from a process that is gone" in out.stderr

    d = dp_factory(config(upstream.port), name="ctl-stale", prefix=prefix)
    assert "replacing the stale control socket" in d.log_text()
    assert status_json(tollgate_bin, prefix)["pid"] == d.process.pid
    assert stat.S_IMODE(os.lstat(os.path.join(prefix, SOCK)).st_mode) == 0o600


def test_killed_process_leaves_a_socket_the_next_one_replaces(tollgate_bin, dp_factory,
                                                               upstream):
    d = dp_factory(config(upstream.port), name="ctl-killed")
    d.stop(signal.SIGKILL)
    assert os.path.exists(os.path.join(d.prefix, SOCK))  # SIGKILL: no clean-up
    d.start()
    assert status_json(tollgate_bin, d.prefix)["pid"] == d.process.pid
    # a clean stop removes the socket
    assert d.stop() == 0
    assert not os.path.exists(os.path.join(d.prefix, SOCK))


def test_nothing_listening(tollgate_bin, workdir):
    prefix = tempfile.mkdtemp(prefix="ctl-empty-", dir=workdir)
    for args in (["status"], ["status", "--json"], ["dp", "reload"]):
        out = run(tollgate_bin, prefix, *args, timeout=30)
        assert out.returncode == 1
        assert out.stdout == ""
        assert out.stderr.strip() == f"tollgate: no Tollgate running with prefix {prefix} " \
                                     f"(no control socket {os.path.realpath(prefix)}/{SOCK})"


def test_other_users_are_refused(tollgate_bin, dp):
    if os.getuid() != 0:
        pytest.skip("needs root to run the client as another user")
    env = clean_env()
    env["TOLLGATE_PREFIX"] = dp.prefix
    mode = os.stat(dp.prefix).st_mode
    os.chmod(dp.prefix, 0o755)  # let `nobody` reach the socket file itself
    try:
        out = subprocess.run([tollgate_bin, "status"], env=env, cwd="/", capture_output=True,
                             text=True, timeout=30, user="nobody")
    finally:
        os.chmod(dp.prefix, stat.S_IMODE(mode))
    assert out.returncode == 1
    assert "permission denied on the control socket" in out.stderr, out.stderr
    assert "run this command as that user" in out.stderr
    assert status_json(tollgate_bin, dp.prefix)["pid"] == dp.process.pid


def test_bad_arguments(tollgate_bin, dp):
    out = run(tollgate_bin, dp.prefix, "status", "--bogus")
    assert out.returncode == 1 and "usage: tollgate status" in out.stderr
    out = run(tollgate_bin, dp.prefix, "dp", "reload", "now")
    assert out.returncode == 1 and "usage: tollgate dp reload" in out.stderr


@pytest.mark.parametrize("payload, message", [
    (b"\xff\x00garbage{", "malformed request"),
    (b"", "malformed request"),
    (b"[1, 2]", "a request is a JSON object"),
    (b'"status"', "a request is a JSON object"),
    (b'{"cmd": "status"}', 'the request has no "command" string (known: status, reload)'),
    (b'{"command": 7}', 'the request has no "command" string'),
    (b'{"command": "shutdown"}', "unknown command 'shutdown' (known: status, reload)"),
    (b'{"command": "status", "command": "reload"}', "malformed request: duplicate object key"),
    (b'{"command": "' + b"x" * (200 * 1024) + b'"}', "request too large"),
], ids=["binary", "empty", "array", "string", "no-command", "command-not-string", "unknown",
        "duplicate-key", "200KiB"])
def test_malformed_requests_get_an_error_reply(tollgate_bin, dp, payload, message):
    reply = sp_request(os.path.join(dp.prefix, SOCK), payload)
    assert reply["ok"] is False
    assert message in reply["message"], reply
    assert dp.running()
    assert status_json(tollgate_bin, dp.prefix)["pid"] == dp.process.pid


def test_oversized_message_drops_the_connection_not_the_process(tollgate_bin, dp):
    """Beyond 4 MiB nng refuses to read the message at all: the connection closes."""
    with pytest.raises((ConnectionError, OSError)):
        sp_request(os.path.join(dp.prefix, SOCK), b" " * (8 * 1024 * 1024))
    assert dp.running()
    assert status_json(tollgate_bin, dp.prefix)["pid"] == dp.process.pid


def test_clients_that_hang_up_early_do_not_wedge_the_socket(tollgate_bin, dp):
    """nng 1.5 stops serving a listener when a peer disconnects mid-handshake; the watchdog
    re-opens the socket, so the process can be asked again within seconds."""
    path = os.path.join(dp.prefix, SOCK)
    for data in (b"", b"GET / HTTP/1.1\r\n\r\n", b"\0SP\0"):
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(path)
            if data:
                s.sendall(data)

    def answers():
        out = run(tollgate_bin, dp.prefix, "status", "--json", "--timeout", "2")
        return out.returncode == 0 and json.loads(out.stdout)["pid"] == dp.process.pid
    wait_for(answers, 30, interval=0.5, what="the control socket to answer again")
    assert dp.running()
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600


def test_removed_socket_file_comes_back(tollgate_bin, dp):
    os.unlink(os.path.join(dp.prefix, SOCK))
    wait_for(lambda: os.path.exists(os.path.join(dp.prefix, SOCK)), 30,
             what="the control socket to be re-created")
    assert status_json(tollgate_bin, dp.prefix)["pid"] == dp.process.pid


# ---------------------------------------------------------------------------------- control plane

@pytest.fixture(scope="module")
def enrolled(tollgate_bin, cp, workdir):
    """A data plane enrolled in `cp` with `cp token create` + `dp join`, running and synced."""
    out = cp.run_cli("cp", "token", "create", "--uses", "1")
    assert out.returncode == 0, out.stderr
    token = out.stdout.split()[0]
    prefix = tempfile.mkdtemp(prefix="ctl-enrolled-", dir=workdir)
    env = clean_env()
    env["TOLLGATE_PREFIX"] = prefix
    out = subprocess.run([tollgate_bin, "dp", "join", cp.cluster_address, "--token", token],
                         env=env, cwd=prefix, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    with open(os.path.join(prefix, "cluster", "cluster.json")) as f:
        node_id = json.load(f)["node_id"]
    d = DpProcess(tollgate_bin, prefix, os.path.join(workdir, "logs"), name="ctl-enrolled",
                  workers=1)
    d.node_id = node_id
    d.start()
    wait_for(lambda: (http_status(d).get("cluster") or {}).get("connected"), 60,
             what="the data plane to connect to the control plane")
    yield d
    d.cleanup()


def test_cp_status_reports_versions_and_data_planes(tollgate_bin, cp, admin, enrolled):
    created = admin.post("/services", json={"name": "ctl-svc", "url": "http://127.0.0.1:9"})
    assert created.status_code == 201, created.text
    version = admin.get("/status").json()["configuration"]["config_version"]
    wait_for(lambda: enrolled.config_version() == version, 60,
             what=f"the data plane to apply version {version}")

    def dp_record():
        st = status_json(tollgate_bin, cp.prefix)
        rec = [d for d in st["data_planes"] if d["id"] == enrolled.node_id]
        return (st, rec[0]) if rec and rec[0]["config_version"] == version else None
    st, rec = wait_for(dp_record, 60, what="the CP to record the data plane's version")
    assert st["role"] == "control_plane" and st["pid"] == cp.pid
    assert st["prefix"] == os.path.realpath(cp.prefix)
    assert st["database"] == {"reachable": True}
    assert st["server"]["total_requests"] >= 2
    default = [c for c in st["control_planes"] if c["name"] == "default"]
    assert default and default[0]["config_version"] == version
    assert default[0]["id"] == st["control_plane_id"]
    # the record GET /clustering/data-planes/{id} gives
    api = admin.get(f"/clustering/data-planes/{enrolled.node_id}").json()
    for key in ("control_plane_id", "hostname", "config_hash", "sync_status", "cp_node"):
        assert rec[key] == api[key], key
    assert rec["sync_status"] == "normal", rec
    assert rec["lag_versions"] == 0
    assert abs(rec["last_seen"] - time.time()) < 120
    assert rec["cp_node"] == st["node_id"]

    human = run(tollgate_bin, cp.prefix, "status")
    assert human.returncode == 0, human.stderr
    assert f"Tollgate control plane (pid {cp.pid}" in human.stdout
    assert "database:        reachable" in human.stdout
    assert f"config version {version}" in human.stdout
    assert enrolled.node_id in human.stdout


def test_enrolled_dp_status(tollgate_bin, cp, enrolled):
    st = status_json(tollgate_bin, enrolled.prefix)
    assert st["mode"] == "control_plane" and st["declarative_config"] is None
    assert st["node_id"] == enrolled.node_id
    assert st["control_plane_id"] is not None
    assert st["control_plane"]["connected"] is True
    assert st["control_plane"]["endpoint"] == cp.cluster_address
    assert st["configuration"]["version"] == enrolled.config_version()
    human = run(tollgate_bin, enrolled.prefix, "status").stdout
    assert f"node id:         {enrolled.node_id}" in human
    assert f"control plane:   connected to {cp.cluster_address}" in human


def test_second_cp_on_the_same_prefix_is_refused(tollgate_bin, cp, workdir):
    env = dict(cp.env)
    for key in ("TOLLGATE_ADMIN_LISTEN", "TOLLGATE_STATUS_LISTEN", "TOLLGATE_CLUSTER_LISTEN"):
        env[key] = f"{LOOPBACK}:0"
    out = subprocess.run([tollgate_bin, "cp", "start"], env=env, cwd=cp.prefix,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert f"another Tollgate control plane (pid {cp.pid}) is already running" in out.stderr
    assert status_json(tollgate_bin, cp.prefix)["pid"] == cp.pid


def test_cp_status_with_postgresql_down(tollgate_bin, cp, pg_server):
    """The node still answers, with what it knows of itself."""
    pg_server.stop()
    try:
        st = status_json(tollgate_bin, cp.prefix)
        assert st["role"] == "control_plane" and st["pid"] == cp.pid
        assert st["database"] == {"reachable": False}
        assert st["data_planes"] == []
        human = run(tollgate_bin, cp.prefix, "status")
        assert "database:        UNREACHABLE" in human.stdout
    finally:
        pg_server.start()
    wait_for(lambda: status_json(tollgate_bin, cp.prefix)["database"]["reachable"], 60,
             what="the control plane to see PostgreSQL again")
