"""A Tollgate control plane (`tollgate cp start`) on free loopback ports, and an Admin API client.

Configuration is passed the way an operator would: TOLLGATE_* environment variables. The
process runs in its prefix directory (so no stray ./tollgate.conf is picked up) and its
stderr goes to <workdir>/logs/<name>.log.
"""
import os
import signal
import subprocess
from urllib.parse import urlsplit

import requests

from .procs import LOOPBACK, ManagedProcess, free_port, kill_processes_under, tail, wait_for


def clean_env():
    """The runner's environment without anything that could point a process elsewhere."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TOLLGATE_", "PG")) and k.lower() not in
           ("http_proxy", "https_proxy", "all_proxy", "no_proxy")}
    # Sanitizer builds: report, and fail the run, on the first finding.
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:halt_on_error=1:abort_on_error=0")
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
    # leaks inside libnng at exit are nng's own (tests/lsan.supp says why)
    supp = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "lsan.supp")
    env.setdefault("LSAN_OPTIONS", f"suppressions={os.path.normpath(supp)}")
    return env


class AdminClient:
    """requests.Session-like helper bound to one base URL; methods take a path."""

    def __init__(self, base_url, token=None, verify=False, timeout=15):
        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()
        self.session.trust_env = False  # no proxies, no .netrc: talk to 127.0.0.1 only
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        self.verify = verify
        self.timeout = timeout

    def url(self, path):
        if path.startswith(("http://", "https://")):
            if urlsplit(path).hostname != LOOPBACK:
                raise ValueError(f"refusing to send test traffic to {path}")
            return path
        return f"{self.base_url}/{path.lstrip('/')}"

    def request(self, method, path, **kw):
        kw.setdefault("timeout", self.timeout)
        kw.setdefault("verify", self.verify)
        return self.session.request(method, self.url(path), **kw)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, **kw):
        return self.request("POST", path, **kw)

    def put(self, path, **kw):
        return self.request("PUT", path, **kw)

    def patch(self, path, **kw):
        return self.request("PATCH", path, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)

    def options(self, path, **kw):
        return self.request("OPTIONS", path, **kw)

    def head(self, path, **kw):
        return self.request("HEAD", path, **kw)

    def close(self):
        self.session.close()


class CpProcess:
    """One `tollgate cp start`. pg=None runs the embedded PostgreSQL (no pg_host)."""

    def __init__(self, binary, prefix, log_dir, name="cp", pg=None, database=None, env=None):
        self.binary = str(binary)
        self.prefix = str(prefix)
        self.name = name
        self.embedded = pg is None
        self.admin_port, self.admin_ssl_port = free_port(), free_port()
        self.status_port, self.cluster_port = free_port(), free_port()
        self.admin_url = f"http://{LOOPBACK}:{self.admin_port}"
        self.admin_https_url = f"https://{LOOPBACK}:{self.admin_ssl_port}"
        self.status_url = f"http://{LOOPBACK}:{self.status_port}"
        self.cluster_address = f"{LOOPBACK}:{self.cluster_port}"
        self.env = clean_env()
        self.env.update({
            "TOLLGATE_PREFIX": self.prefix,
            "TOLLGATE_LOG_LEVEL": "info",
            "TOLLGATE_ADMIN_LISTEN":
                f"{LOOPBACK}:{self.admin_port}, {LOOPBACK}:{self.admin_ssl_port} ssl",
            "TOLLGATE_STATUS_LISTEN": f"{LOOPBACK}:{self.status_port}",
            "TOLLGATE_CLUSTER_LISTEN": self.cluster_address,
        })
        if pg is not None:
            self.database = database
            self.env.update({
                "TOLLGATE_PG_HOST": pg.host,
                "TOLLGATE_PG_PORT": str(pg.port),
                "TOLLGATE_PG_USER": pg.user,
                "TOLLGATE_PG_DATABASE": database,
            })
        self.env.update(env or {})
        os.makedirs(self.prefix, exist_ok=True)
        self.process = ManagedProcess(name, [self.binary, "cp", "start"],
                                      os.path.join(log_dir, f"{name}.log"), env=self.env,
                                      cwd=self.prefix)
        self.admin = AdminClient(self.admin_url)

    @property
    def log_path(self):
        return self.process.log_path

    @property
    def pid(self):
        return self.process.pid

    def running(self):
        return self.process.running()

    def start(self, timeout=None):
        """Starts the CP and waits until GET <admin>/status answers 200 (bounded)."""
        if timeout is None:
            timeout = 180 if self.embedded else 60  # first embedded start runs initdb
        self.process.start()

        def ready():
            if not self.process.running():
                raise RuntimeError(f"{self.name} exited with {self.process.stop()} during "
                                   f"start-up:\n{tail(self.log_path, 40)}")
            try:
                return self.admin.get("/status", timeout=2).status_code == 200
            except requests.RequestException:
                return False
        try:
            wait_for(ready, timeout, interval=0.2, what=f"{self.admin_url}/status")
        except TimeoutError as e:
            self.stop(signal.SIGKILL)
            raise RuntimeError(f"{e}; {self.name} log:\n{tail(self.log_path, 40)}") from None
        return self

    def stop(self, sig=signal.SIGTERM, timeout=60):
        """Signals the CP and waits for it to exit; returns the exit code."""
        return self.process.stop(sig, timeout)

    def cleanup(self):
        """Fixture teardown: stop the CP and anything it left running under its prefix."""
        self.stop()
        self.admin.close()
        return kill_processes_under(self.prefix)

    def keyring_env(self):
        """The environment another CP node of this cluster needs: the same keyring key (every
        node sharing a database must have it, or the cluster CA and keys stay sealed)."""
        with open(os.path.join(self.prefix, "keyring.key")) as f:
            return {"TOLLGATE_KEYRING_KEY": f.read().strip()}

    def run_cli(self, *args, input=None, timeout=60, env=None):
        """Runs `tollgate <args>` with this CP's configuration; returns the CompletedProcess."""
        full_env = dict(self.env, **(env or {}))
        return subprocess.run([self.binary, *map(str, args)], input=input, env=full_env,
                              cwd=self.prefix, capture_output=True, text=True, timeout=timeout)

    def admin_client(self, https=False, token=None):
        """A separate client, e.g. for the HTTPS listener with an admin token."""
        return AdminClient(self.admin_https_url if https else self.admin_url, token=token)

    def log_text(self):
        return self.process.log_text()
