"""A Tollgate data plane (`tollgate dp start`) on free loopback ports, and raw HTTP helpers.

Configured as an operator would: TOLLGATE_* environment variables. The process runs in its
prefix directory and logs (including the JSON access log, on stderr) to <logs>/<name>.log.
With `declarative` it runs standalone (DB-less); write a new file and call reload() to make it
re-read it (SIGHUP).
"""
import os
import signal
import socket
import ssl

import requests

from .cp import clean_env
from .procs import LOOPBACK, ManagedProcess, free_port, tail, wait_for


class DpProcess:
    def __init__(self, binary, prefix, log_dir, name="dp", declarative=None, workers=2, env=None):
        self.binary = str(binary)
        self.prefix = str(prefix)
        self.name = name
        self.declarative = declarative
        self.proxy_port, self.proxy_ssl_port, self.status_port = free_port(), free_port(), free_port()
        self.proxy_url = f"http://{LOOPBACK}:{self.proxy_port}"
        self.proxy_https_url = f"https://{LOOPBACK}:{self.proxy_ssl_port}"
        self.status_url = f"http://{LOOPBACK}:{self.status_port}"
        self.env = clean_env()
        self.env.update({
            "TOLLGATE_PREFIX": self.prefix,
            "TOLLGATE_LOG_LEVEL": "info",
            "TOLLGATE_PROXY_LISTEN":
                f"{LOOPBACK}:{self.proxy_port}, {LOOPBACK}:{self.proxy_ssl_port} ssl",
            "TOLLGATE_STATUS_LISTEN": f"{LOOPBACK}:{self.status_port}",
            "TOLLGATE_WORKER_THREADS": str(workers),
        })
        if declarative:
            self.env["TOLLGATE_DECLARATIVE_CONFIG"] = str(declarative)
        self.env.update(env or {})
        os.makedirs(self.prefix, exist_ok=True)
        self.process = ManagedProcess(name, [self.binary, "dp", "start"],
                                      os.path.join(log_dir, f"{name}.log"), env=self.env,
                                      cwd=self.prefix)
        self.session = requests.Session()
        self.session.trust_env = False

    @property
    def log_path(self):
        return self.process.log_path

    def log_text(self):
        return self.process.log_text()

    def running(self):
        return self.process.running()

    def start(self, timeout=30):
        """Starts the DP and waits until GET /status answers (bounded)."""
        self.process.start()

        def up():
            if not self.process.running():
                raise RuntimeError(f"{self.name} exited with {self.process.stop()} during "
                                   f"start-up:\n{tail(self.log_path, 40)}")
            try:
                return self.status("/status").status_code == 200
            except requests.RequestException:
                return False
        wait_for(up, timeout, interval=0.1, what=f"{self.status_url}/status")
        return self

    def stop(self, sig=signal.SIGTERM, timeout=30):
        return self.process.stop(sig, timeout)

    def reload(self, expect_version=None, timeout=10):
        """SIGHUP; with expect_version, waits until /status reports it."""
        os.kill(self.process.pid, signal.SIGHUP)
        if expect_version is not None:
            wait_for(lambda: self.config_version() == expect_version, timeout,
                     what=f"config version {expect_version}")

    def config_version(self):
        return self.status("/status").json()["config_version"]

    def status(self, path):
        return self.session.get(self.status_url + path, timeout=10)

    def request(self, method, path, https=False, **kw):
        kw.setdefault("timeout", 30)
        kw.setdefault("allow_redirects", False)
        if https:
            kw.setdefault("verify", False)
        base = self.proxy_https_url if https else self.proxy_url
        return self.session.request(method, base + path, **kw)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def raw(self, data, timeout=10, read_until_close=True):
        """Sends raw bytes to the proxy port and returns what came back (until close)."""
        return raw_exchange(LOOPBACK, self.proxy_port, data, timeout, read_until_close)

    def cleanup(self):
        self.stop()
        self.session.close()


def raw_exchange(host, port, data, timeout=10, read_until_close=True, tls=False):
    """One connection: send `data`, read until the peer closes (or timeout). Returns bytes."""
    sock = socket.create_connection((host, port), timeout=timeout)
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        sock = ctx.wrap_socket(sock)
    try:
        sock.sendall(data)
        chunks = []
        while read_until_close:
            try:
                got = sock.recv(65536)
            except socket.timeout:
                break
            if not got:
                break
            chunks.append(got)
        return b"".join(chunks)
    finally:
        sock.close()


def read_response(sock, buf=b""):
    """Reads one Content-Length or chunked response from a socket: (status, headers, body, rest)."""
    while b"\r\n\r\n" not in buf:
        got = sock.recv(65536)
        if not got:
            raise ConnectionError(f"closed before a complete head: {buf!r}")
        buf += got
    head, buf = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, v = line.split(":", 1)
        headers[k.strip().lower()] = v.strip()
    if "content-length" in headers:
        n = int(headers["content-length"])
        while len(buf) < n:
            got = sock.recv(65536)
            if not got:
                raise ConnectionError("closed inside the body")
            buf += got
        return status, headers, buf[:n], buf[n:]
    body = b""
    if headers.get("transfer-encoding") == "chunked":
        while True:
            while b"\r\n" not in buf:
                buf += sock.recv(65536)
            line, buf = buf.split(b"\r\n", 1)
            size = int(line, 16)
            while len(buf) < size + 2:
                buf += sock.recv(65536)
            body, buf = body + buf[:size], buf[size + 2:]
            if size == 0:
                return status, headers, body, buf
    return status, headers, body, buf


# ---------------------------------------------------------------- data planes of a cluster

def enroll_dp(cp, binary, prefix, log_dir, name, env=None, workers=1, via=None):
    """A DpProcess enrolled in `cp`'s cluster by a real `tollgate dp join` (not started).

    A one-use join token comes from the Admin API of `cp`; `via` (another CpProcess of the same
    cluster) is the node the DP joins through, so its enrolment lists that node's address.
    .node_id is the identity the control plane gave it."""
    import json
    import subprocess

    token = cp.admin.post("/clustering/join-tokens", json={"uses": 1})
    if token.status_code != 201:
        raise RuntimeError(f"cannot create a join token: {token.status_code} {token.text}")
    node = via or cp
    os.makedirs(prefix, exist_ok=True)
    join_env = clean_env()
    join_env.update({"TOLLGATE_PREFIX": str(prefix), "TOLLGATE_LOG_LEVEL": "info"})
    out = subprocess.run([str(binary), "dp", "join", node.cluster_address, "--token",
                          token.json()["token"]], env=join_env, cwd=prefix, capture_output=True,
                         text=True, timeout=60)
    if out.returncode != 0:
        raise RuntimeError(f"dp join failed ({out.returncode}): {out.stderr}")
    dp = DpProcess(binary, prefix, log_dir, name=name, workers=workers, env=env)
    with open(os.path.join(prefix, "cluster", "cluster.json")) as f:
        dp.node_id = json.load(f)["node_id"]
    return dp


def cluster_status(dp):
    """The `cluster` object of a data plane's GET /status (sync counters, applied version)."""
    return dp.status("/status").json()["cluster"]


def wait_applied(dp, version, timeout=30):
    """Waits until the data plane has applied `version` (or a later one)."""
    return wait_for(lambda: cluster_status(dp)["applied_version"] >= version, timeout,
                    interval=0.05, what=f"{dp.name} to apply config version {version}")
