"""scripts/demo.sh, the README's first command, end to end but cheaply: `--no-install
--no-build` against $TOLLGATE_BIN, every listener moved to a free port (its TOLLGATE_DEMO_*
knobs), state in a temporary prefix. It must start the whole cluster (control plane with its
embedded PostgreSQL, a data plane enrolled with a join token, the demo upstream), proxy a request
through the data plane, and on Ctrl-C (SIGINT) stop everything it started.
"""
import json
import os
import signal
import socket
import subprocess
import tempfile

import pytest
import requests

from harness import procs
from harness.cp import clean_env
from harness.pg import pg_bindir
from harness.procs import LOOPBACK, free_port, tail, wait_for

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO = os.path.join(REPO, "scripts", "demo.sh")
KNOBS = ("ADMIN_PORT", "ADMIN_SSL_PORT", "CLUSTER_PORT", "CP_STATUS_PORT", "PROXY_PORT",
         "PROXY_SSL_PORT", "DP_STATUS_PORT", "UPSTREAM_PORT")


def demo_env(tollgate_bin, prefix, ports):
    env = clean_env()
    env.update({"TOLLGATE_PREFIX": prefix, "TOLLGATE_BIN": tollgate_bin})
    env.update({f"TOLLGATE_DEMO_{k}": str(v) for k, v in ports.items()})
    return env


def refused(port):
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex((LOOPBACK, port)) != 0


@pytest.fixture
def prefix(workdir):
    path = tempfile.mkdtemp(prefix="demo-", dir=workdir)
    os.chmod(path, 0o711)  # the embedded PostgreSQL runs as an unprivileged user
    yield path
    procs.kill_processes_under(path)


def test_demo_runs_a_cluster_and_stops_it_on_ctrl_c(tollgate_bin, prefix, workdir):
    if pg_bindir() is None:
        pytest.skip("no PostgreSQL server binaries (install the postgresql package)")
    ports = {k: free_port() for k in KNOBS}
    log_path = os.path.join(workdir, "logs", "demo.log")
    with open(log_path, "ab") as log:
        demo = subprocess.Popen(["bash", DEMO, "--no-install", "--no-build"], cwd=REPO,
                                env=demo_env(tollgate_bin, prefix, ports), stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def running():
            if demo.poll() is not None:
                raise RuntimeError(f"demo.sh exited with {demo.returncode}:\n"
                                   f"{tail(log_path, 60)}")
            with open(log_path, errors="replace") as f:
                return "Tollgate is running" in f.read()
        wait_for(running, 300, interval=0.5, what="demo.sh to say the cluster is running")
        text = open(log_path, errors="replace").read()
        admin = f"http://localhost:{ports['ADMIN_PORT']}"
        proxy = f"http://localhost:{ports['PROXY_PORT']}"
        upstream = f"http://127.0.0.1:{ports['UPSTREAM_PORT']}"
        # the tutorials' commands are printed with this run's addresses
        assert f"--data name=example_service --data url={upstream}/anything" in text
        assert f"curl -i {proxy}/mock/request" in text

        s = requests.Session()
        s.trust_env = False
        r = s.post(f"{admin}/services", data={"name": "example_service",
                                             "url": f"{upstream}/anything"}, timeout=30)
        assert r.status_code == 201, r.text
        r = s.post(f"{admin}/services/example_service/routes",
                   data={"name": "mocking", "paths[]": "/mock"}, timeout=30)
        assert r.status_code == 201, r.text

        def proxied():
            r = s.get(f"{proxy}/mock/request?x=1", timeout=10)
            return r if r.status_code == 200 else None
        r = wait_for(proxied, 60, interval=0.2, what="the data plane to route /mock")
        doc = r.json()  # the demo upstream's httpbin-like echo
        assert doc["method"] == "GET" and doc["args"] == {"x": "1"}
        assert doc["url"].endswith("/anything/request?x=1")
        assert "X-Tollgate-Request-Id" in doc["headers"]
        assert r.headers["Via"].startswith("1.1 tollgate/")

        st = subprocess.run([tollgate_bin, "status", "--json"], capture_output=True, text=True,
                            env=dict(clean_env(), TOLLGATE_PREFIX=os.path.join(prefix, "dp1")),
                            timeout=30)
        assert st.returncode == 0, st.stderr
        st = json.loads(st.stdout)
        assert st["control_plane"]["connected"] is True
        assert st["control_plane"]["endpoint"] == f"127.0.0.1:{ports['CLUSTER_PORT']}"

        demo.send_signal(signal.SIGINT)  # what Ctrl-C does to the script
        assert demo.wait(120) == 0, tail(log_path, 40)
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
    text = open(log_path, errors="replace").read()
    for what in ("the data plane", "the control plane", "the demo upstream"):
        assert f"stopped {what}" in text
    assert "did not stop" not in text
    # nothing left: no process under the prefix (tollgate, postgres), no listener, no socket
    assert procs.processes_under(prefix) == []
    for port in ports.values():
        assert refused(port), port
    assert not os.path.exists(os.path.join(prefix, "tollgate.sock"))
    assert not os.path.exists(os.path.join(prefix, "dp1", "tollgate.sock"))


def test_demo_names_the_knob_of_a_taken_port(tollgate_bin, prefix):
    ports = {k: free_port() for k in KNOBS}
    with socket.socket() as taken:
        taken.bind((LOOPBACK, ports["PROXY_PORT"]))
        taken.listen()
        out = subprocess.run(["bash", DEMO, "--no-install", "--no-build"], cwd=REPO,
                             env=demo_env(tollgate_bin, prefix, ports), capture_output=True,
                             text=True, timeout=60)
    assert out.returncode == 1
    assert f"port {ports['PROXY_PORT']} is already in use" in out.stderr
    assert "TOLLGATE_DEMO_PROXY_PORT=<port>" in out.stderr
    assert procs.processes_under(prefix) == []


def test_demo_rejects_unknown_options(tollgate_bin, prefix):
    out = subprocess.run(["bash", DEMO, "--frobnicate"], cwd=REPO, capture_output=True,
                         text=True, timeout=30, env=clean_env())
    assert out.returncode == 2 and "unknown option '--frobnicate'" in out.stderr
