"""Docker and compose helpers for the deploy/ tests: find the engine and a compose command,
build the images (deploy/build-images.sh, cached by Docker's layer cache), and drive one compose
project with a unique name whose every published port is a free port on 127.0.0.1.

The tests only ever talk to containers through those loopback ports (ComposeProject.port
refuses anything else); `docker` and `docker compose` are used to start, stop, disconnect and
inspect containers, never to reach them.
"""
import base64
import json
import os
import secrets
import shutil
import string
import subprocess
import time
import uuid

from .procs import LOOPBACK, ManagedProcess

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
DEPLOY = os.path.join(REPO, "deploy")
COMPOSE_FILE = os.path.join(DEPLOY, "docker-compose.yml")


def _run(argv, timeout=120, check=True, env=None):
    res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {res.returncode}:\n{res.stdout[-4000:]}"
                           f"\n{res.stderr[-4000:]}")
    return res


def engine_problem():
    """None when a Docker engine answers and a compose command exists, else why not."""
    if not shutil.which("docker"):
        return "no docker CLI on PATH"
    try:
        res = _run(["docker", "info", "--format", "{{.ServerVersion}}"], timeout=20, check=False)
    except subprocess.TimeoutExpired:
        return "the Docker engine did not answer `docker info` within 20 s"
    if res.returncode != 0:
        return f"no Docker engine reachable: {res.stderr.strip()[:300]}"
    if compose_command() is None:
        return "neither `docker compose` nor `docker-compose` is installed"
    return None


def compose_command():
    """`docker compose` (v2) when the plugin exists, else docker-compose (1.27+), else None."""
    try:
        if _run(["docker", "compose", "version"], timeout=20, check=False).returncode == 0:
            return ["docker", "compose"]
    except (OSError, subprocess.TimeoutExpired):
        pass
    path = shutil.which("docker-compose")
    return [path] if path else None


def build_images(tag, timeout=3600):
    """Runs deploy/build-images.sh (the first run debootstraps the base image, ~1.5 min, then
    ~8 min of package downloads and the compile; later runs reuse every unchanged layer)."""
    env = dict(os.environ, TOLLGATE_IMAGE_TAG=tag)
    return _run([os.path.join(DEPLOY, "build-images.sh")], timeout=timeout, env=env)


def random_token():
    alphabet = string.ascii_lowercase + string.digits
    pick = lambda n: "".join(secrets.choice(alphabet) for _ in range(n))  # noqa: E731
    return f"{pick(6)}.{pick(16)}"


class ComposeProject:
    """One `docker compose -p <unique name>` of deploy/docker-compose.yml."""

    PORT_VARS = ["TOLLGATE_CP1_ADMIN_PORT", "TOLLGATE_CP1_ADMIN_SSL_PORT",
                 "TOLLGATE_CP1_STATUS_PORT", "TOLLGATE_CP2_ADMIN_PORT",
                 "TOLLGATE_CP2_ADMIN_SSL_PORT", "TOLLGATE_CP2_STATUS_PORT"] + [
        f"TOLLGATE_DP{i}_STATUS_PORT" for i in (1, 2, 3)]
    PROXY_VARS = [f"TOLLGATE_DP{i}_{p}" for i in (1, 2, 3) for p in ("PROXY", "PROXY_SSL")]

    def __init__(self, workdir, tag, compose=None):
        self.name = f"tgtest{uuid.uuid4().hex[:10]}"
        self.log_dir = os.path.join(workdir, "logs")
        self._followers = {}
        self.compose = compose or compose_command()
        self.token = random_token()
        self.env_file = os.path.join(workdir, f"{self.name}.env")
        values = {
            "TOLLGATE_IMAGE_TAG": tag,
            "TOLLGATE_PG_PASSWORD": secrets.token_urlsafe(24),
            "TOLLGATE_KEYRING_KEY": base64.b64encode(os.urandom(32)).decode(),
            "TOLLGATE_BOOTSTRAP_TOKEN": self.token,
            "TOLLGATE_LOG_LEVEL": "info",
            # two workers per DP: three DPs, two CPs and PostgreSQL share the CI machine
            "TOLLGATE_DP_WORKER_THREADS": "2",
        }
        # Empty = a free host port on 127.0.0.1; the proxy variables carry the address too.
        values.update({k: "" for k in self.PORT_VARS})
        values.update({k: f"{LOOPBACK}:" for k in self.PROXY_VARS})
        with open(self.env_file, "w") as f:
            f.write("".join(f"{k}={v}\n" for k, v in values.items()))
        os.chmod(self.env_file, 0o600)
        self._ports = {}

    # ------------------------------------------------------------ compose and docker

    def run(self, *args, timeout=300, check=True):
        argv = [*self.compose, "--env-file", self.env_file, "-f", COMPOSE_FILE,
                "-p", self.name, *args]
        return _run(argv, timeout=timeout, check=check)

    def up(self, timeout=600):
        self.run("up", "-d", timeout=timeout)

    def follow_logs(self, service):
        """Copies the container's output into <workdir>/logs/<project>-<service>.log through a
        registered ManagedProcess, so a failing test's report shows what the container logged
        during it (conftest's failure sections). Called again after a restart (`docker logs
        -f` ends with the container)."""
        old = self._followers.get(service)
        if old is not None and old.running():
            return
        argv = ["docker", "logs", "-f", "--timestamps"]
        if old is not None:
            argv += ["--since", str(int(time.time()) - 1)]
        follower = ManagedProcess(f"{service} container",
                                  [*argv, self.container(service)],
                                  os.path.join(self.log_dir, f"{self.name}-{service}.log"))
        self._followers[service] = follower.start()

    def down(self):
        """Removes containers, networks and volumes; safe to call twice."""
        for follower in self._followers.values():
            follower.stop(timeout=5)
        return self.run("down", "-v", "--remove-orphans", "--timeout", "10", timeout=300,
                        check=False)

    def container(self, service):
        out = self.run("ps", "-q", service, check=False).stdout.split()
        if not out:
            raise RuntimeError(f"service {service} has no container")
        return out[0]

    def inspect(self, service):
        return json.loads(_run(["docker", "inspect", self.container(service)]).stdout)[0]

    def health(self, service):
        """"healthy" (or "running" for a container without a health check), "starting", ..."""
        state = self.inspect(service)["State"]
        if state.get("Health"):
            return state["Health"]["Status"]
        return "healthy" if state.get("Status") == "running" else state.get("Status")

    def wait_healthy(self, services, timeout=180):
        deadline = time.monotonic() + timeout
        pending = list(services)
        while pending:
            pending = [s for s in pending if self.health(s) != "healthy"]
            if not pending:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"not healthy after {timeout}s: " + ", ".join(
                    f"{s}={self.health(s)}" for s in pending) + "\n" + self.logs(*pending))
            time.sleep(1)

    def stop(self, service):
        self.run("stop", "--timeout", "10", service)
        self._forget_ports(service)

    def start(self, service, keep_networks=False):
        """`compose start`, which also reconnects the service's networks; keep_networks=True
        starts the container as it is (`docker start`), e.g. still cut off from a network."""
        if keep_networks:
            _run(["docker", "start", self.container(service)])
        else:
            self.run("start", service)
        self._forget_ports(service)
        if service in self._followers:
            self.follow_logs(service)

    def network(self, name):
        return f"{self.name}_{name}"

    def disconnect(self, service, network):
        _run(["docker", "network", "disconnect", self.network(network), self.container(service)])
        self._forget_ports(service)

    def connect(self, service, network):
        _run(["docker", "network", "connect", self.network(network), self.container(service)])
        self._forget_ports(service)

    def _forget_ports(self, service):
        """Free host ports are chosen again whenever Docker re-publishes a container."""
        self._ports = {k: v for k, v in self._ports.items() if k[0] != service}

    def logs(self, *services, lines=80):
        res = self.run("logs", "--no-color", "--tail", str(lines), *services, check=False)
        return res.stdout + res.stderr

    def leftovers(self):
        """Containers, volumes and networks still labelled with this project."""
        label = f"label=com.docker.compose.project={self.name}"
        found = {}
        for kind, argv in (("containers", ["docker", "ps", "-aq"]),
                           ("volumes", ["docker", "volume", "ls", "-q"]),
                           ("networks", ["docker", "network", "ls", "-q"])):
            out = _run([*argv, "--filter", label]).stdout.split()
            if out:
                found[kind] = out
        return found

    # ------------------------------------------------------------ published ports

    def port(self, service, container_port):
        """The host port publishing `container_port`, which must be on 127.0.0.1."""
        key = (service, container_port)
        if key not in self._ports:
            out = self.run("port", service, str(container_port)).stdout.strip()
            host, _, port = out.rpartition(":")
            if host != LOOPBACK or not port.isdigit():
                raise AssertionError(f"{service}:{container_port} is published on '{out}', not "
                                     f"on {LOOPBACK}")
            self._ports[key] = int(port)
        return self._ports[key]

    def url(self, service, container_port):
        return f"http://{LOOPBACK}:{self.port(service, container_port)}"
