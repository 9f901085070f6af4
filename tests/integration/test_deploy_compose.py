"""deploy/docker-compose.yml for real: the images are built locally (deploy/build-images.sh; no
registry), the cluster comes up under a unique compose project name with every published port
on a free 127.0.0.1 port, and seed 004's key-auth + rate-limiting flow is configured through
CP1's Admin API and checked through every data plane. Then the failures an operator meets: a
CP stops (DPs move to the other and still get changes), a DP restarts with no CP reachable
(it serves from its volume), a DP is cut off from the cluster network while changes are made
(it catches up by delta). `docker compose down -v` must leave nothing behind, and runs even
when a test fails (fixture finalizer).

The compose tests of this module run in order on one cluster. Only 127.0.0.1-published ports
are used to talk to containers. They are skipped when no Docker engine (or compose) is
reachable; the first tests (the CP's `cluster_bootstrap_token`, which the compose file relies on)
need no Docker and always run.

Time (this 2-core machine): the very first run debootstraps the base image (~1.5 min) and
builds the others (~8 min: package downloads and the compile). Later runs reuse Docker's layer
cache: a few seconds, or ~2 min when a source file changed and the binary is recompiled. With
the images cached the whole module takes ~2.5 min.
"""
import os
import time

import pytest
import requests

from admin_helpers import expect, wait_until
from harness import docker
from harness.cluster import run_dp_join
from harness.cp import AdminClient

DPS = ("dp1", "dp2", "dp3")
SERVICES = ("postgres", "cp1", "cp2", *DPS, "echo")
ROUTE = "/key-auth-route"
KEY1, KEY2, KEY3 = "123456", "987654", "555555"
IMAGE_TAG = os.environ.get("TOLLGATE_TEST_IMAGE_TAG", "it")


BOOTSTRAP_DESCRIPTION = "bootstrap token (cluster_bootstrap_token)"


# ------------------------------------------------------ cluster_bootstrap_token (no Docker)

def join_tokens(admin):
    return {t["id"]: t for t in expect(admin.get("/clustering/join-tokens"), 200)["data"]}


def test_bootstrap_token_from_the_environment_enrols_dps(cp_factory, tollgate_bin, workdir):
    token = docker.random_token()
    cp = cp_factory(env={"TOLLGATE_CLUSTER_BOOTSTRAP_TOKEN": token,
                         "TOLLGATE_CLUSTER_BOOTSTRAP_TOKEN_TTL": "90m"})
    record = join_tokens(cp.admin)[token[:6]]
    assert record["description"] == BOOTSTRAP_DESCRIPTION and record["uses_left"] is None
    assert abs(record["expires_at"] - (time.time() + 5400)) < 120, record
    assert token[7:] not in cp.log_text(), "the secret must never be logged"
    # Unlimited uses: several DPs enrol with the same token.
    for n in range(2):
        prefix = os.path.join(workdir, f"bootstrap-dp{n}-{token[:6]}")
        res = run_dp_join(tollgate_bin, prefix, cp.cluster_address, "--token", token)
        assert res.returncode == 0, res.stderr
        assert os.path.exists(os.path.join(prefix, "cluster", "cluster.json"))
    dps = expect(cp.admin.get("/clustering/data-planes"), 200)["data"]
    assert [d["token_id"] for d in dps] == [token[:6]] * 2
    # A restart keeps the same token valid; a changed value rotates it.
    cp.stop()
    cp.start()
    assert token[:6] in join_tokens(cp.admin)
    manual = cp.run_cli("cp", "token", "create")
    assert manual.returncode == 0, manual.stderr
    cp.stop()
    rotated = docker.random_token()
    cp.env["TOLLGATE_CLUSTER_BOOTSTRAP_TOKEN"] = rotated
    cp.start()
    tokens = join_tokens(cp.admin)
    assert token[:6] not in tokens and tokens[rotated[:6]]["description"] == BOOTSTRAP_DESCRIPTION
    assert len(tokens) == 2, "a token made with `cp token create` is not a bootstrap token"
    res = run_dp_join(tollgate_bin, os.path.join(workdir, f"bootstrap-old-{token[:6]}"),
                      cp.cluster_address, "--token", token)
    assert res.returncode != 0, "the rotated-out token must no longer enrol"
    # Unset: nothing changes (the last bootstrap token stays until it expires or is revoked).
    cp.stop()
    del cp.env["TOLLGATE_CLUSTER_BOOTSTRAP_TOKEN"]
    cp.start()
    assert rotated[:6] in join_tokens(cp.admin)


@pytest.mark.parametrize("env, message", [
    ({"TOLLGATE_CLUSTER_BOOTSTRAP_TOKEN": "abcdef.0123456789ABCDEF"},
     "cluster_bootstrap_token is not a join token"),
    ({"TOLLGATE_CLUSTER_BOOTSTRAP_TOKEN": "short.secret"},
     "cluster_bootstrap_token is not a join token"),
    ({"TOLLGATE_CLUSTER_BOOTSTRAP_TOKEN": "abcdef.0123456789abcdef",
      "TOLLGATE_CLUSTER_BOOTSTRAP_TOKEN_TTL": "400d"}, "cluster_bootstrap_token_ttl must be"),
    ({"TOLLGATE_CLUSTER_BOOTSTRAP_TOKEN": "abcdef.0123456789abcdef",
      "TOLLGATE_CLUSTER_BOOTSTRAP_TOKEN_TTL": "soon"}, "cluster_bootstrap_token_ttl must be"),
])
def test_bad_bootstrap_token_stops_the_cp_with_a_clear_error(cp_factory, env, message):
    cp = cp_factory(env=env, start=False)
    with pytest.raises(RuntimeError, match="exited"):
        cp.start(timeout=60)
    log = cp.log_text()
    assert message in log, log[-2000:]
    assert "0123456789" not in log, "the token's value must never be logged"


def test_bootstrap_token_never_takes_over_a_hand_made_token(cp_factory):
    cp = cp_factory()
    made = cp.run_cli("cp", "token", "create")
    assert made.returncode == 0, made.stderr
    manual_id = join_tokens(cp.admin).popitem()[0]
    cp.stop()
    cp.env["TOLLGATE_CLUSTER_BOOTSTRAP_TOKEN"] = f"{manual_id}.{'x' * 16}"
    with pytest.raises(RuntimeError, match="exited"):
        cp.start(timeout=60)
    assert f"the id '{manual_id}' is taken by a join token" in cp.log_text()
    del cp.env["TOLLGATE_CLUSTER_BOOTSTRAP_TOKEN"]
    cp.start()
    assert join_tokens(cp.admin)[manual_id]["description"] != BOOTSTRAP_DESCRIPTION


# ------------------------------------------------------------------ the compose cluster

def _problem():
    why = docker.engine_problem()
    if why:
        return why
    if os.geteuid() != 0 and docker._run(["docker", "image", "inspect", "tollgate/debian:12"],
                                         check=False).returncode != 0:
        return "the base image tollgate/debian:12 is missing and debootstrap needs root"
    return None


@pytest.fixture(scope="module")
def cluster(request, workdir):
    why = _problem()
    if why:
        pytest.skip(f"deploy compose test skipped: {why}")
    docker.build_images(IMAGE_TAG)
    project = docker.ComposeProject(workdir, IMAGE_TAG)
    # Registered before `up`, so a cluster that fails half-way is removed as well.
    request.addfinalizer(project.down)
    try:
        project.up()
        for service in SERVICES:
            project.follow_logs(service)
        project.wait_healthy(SERVICES)
    except Exception as e:
        pytest.fail(f"the compose cluster did not come up: {e}\n{project.logs()}", pytrace=False)
    return project


class ServiceAdmin(AdminClient):
    """The Admin API of a compose service: its host port is looked up again after the
    container was stopped, started or re-networked (Docker picks a new free port then)."""

    def __init__(self, cluster, service):
        super().__init__(cluster.url(service, 8001))
        self.cluster, self.service = cluster, service

    def url(self, path):
        self.base_url = self.cluster.url(self.service, 8001)
        return super().url(path)


@pytest.fixture(scope="module")
def cp1(cluster):
    client = ServiceAdmin(cluster, "cp1")
    yield client
    client.close()


@pytest.fixture(scope="module")
def cp2(cluster):
    client = ServiceAdmin(cluster, "cp2")
    yield client
    client.close()


def proxy(cluster, dp, path="/get", key=None, timeout=10):
    headers = {"apikey": key} if key else {}
    session = requests.Session()
    session.trust_env = False  # no proxy: straight to the loopback port
    with session:
        return session.get(f"{cluster.url(dp, 8000)}{ROUTE}{path}", headers=headers,
                           timeout=timeout)


def dp_status(cluster, dp):
    return requests.get(f"{cluster.url(dp, 8100)}/status", timeout=5,
                        proxies={"http": None}).json()


def dp_ready(cluster, dp):
    try:
        return requests.get(f"{cluster.url(dp, 8100)}/status/ready", timeout=5,
                            proxies={"http": None}).status_code == 200
    except requests.RequestException:
        return False  # its port is published before the DP listens


def cp_version(admin):
    return expect(admin.get("/status"), 200)["configuration"]["config_version"]


def wait_dps_at(cluster, admin, dps=DPS, timeout=60):
    """Waits until every DP in `dps` serves the CP's current config version."""
    want = cp_version(admin)
    for dp in dps:
        try:
            wait_until(lambda: dp_status(cluster, dp)["config_version"] == want, timeout,
                       interval=0.3, what=f"{dp} at config version {want}")
        except AssertionError as e:
            raise AssertionError(f"{e}; status {dp_status(cluster, dp)}\n"
                                 f"{cluster.logs(dp, 'cp1', 'cp2')}") from None
    return want


def wait_connected(cluster, dp, endpoint="", timeout=150):
    """Waits until `dp` is welcomed by a CP (whose endpoint starts with `endpoint`). Bounded
    generously: a DP notices a CP that vanished without closing the connection after three
    silent heartbeats (30 s), then backs off up to 30 s between attempts."""
    def connected():
        c = dp_status(cluster, dp)["cluster"]
        return c["connected"] and c["endpoint"].startswith(endpoint)
    try:
        wait_until(connected, timeout, interval=0.5, what=f"{dp} connected to {endpoint or 'a CP'}")
    except AssertionError as e:
        raise AssertionError(f"{e}; status {dp_status(cluster, dp)}") from None


def data_planes(admin):
    return {d["hostname"]: d for d in expect(admin.get("/clustering/data-planes"), 200)["data"]}


def limited_after(cluster, dp, key):
    """Requests with `key` until the first 429; returns how many 200s came before it within
    one calendar minute (None when the minute changed in between, to be retried)."""
    start = int(time.time() // 60)
    for n in range(30):
        resp = proxy(cluster, dp, key=key)
        if int(time.time() // 60) != start:
            return None
        if resp.status_code == 429:
            assert resp.headers["X-RateLimit-Remaining-Minute"] == "0"
            assert int(resp.headers["Retry-After"]) >= 1
            return n
        assert resp.status_code == 200, resp.text
    raise AssertionError(f"{dp}: no 429 after 30 requests with key {key}")


def in_fresh_minute(sequence):
    """Runs sequence() inside one calendar minute (rate-limiting windows are UTC minutes);
    when it ran into the next minute, waits for the one after (fresh counters) and retries."""
    for _ in range(3):
        left = 60 - time.time() % 60
        if left < 20:
            time.sleep(left + 0.1)
        result = sequence()
        if result is not None:
            return result
        time.sleep(60 - time.time() % 60 + 0.1)
    pytest.fail("could not run the rate-limit sequence inside one minute three times")


# ------------------------------------------------------------------------------- tests

def test_cluster_is_up_hardened_and_enrolled(cluster, cp1, cp2):
    for service in SERVICES:
        info = cluster.inspect(service)
        assert info["HostConfig"]["ReadonlyRootfs"] is True, f"{service} root fs is writable"
        assert info["Config"]["User"] not in ("", "root", "0"), f"{service} runs as root"
        for port, binds in (info["HostConfig"]["PortBindings"] or {}).items():
            for b in binds:
                assert b["HostIp"] == "127.0.0.1", f"{service} {port} published on {b}"
    # The DPs enrolled themselves with the bootstrap token the CPs got by environment.
    token_id = cluster.token.split(".")[0]
    tokens = {t["id"]: t for t in expect(cp1.get("/clustering/join-tokens"), 200)["data"]}
    assert tokens[token_id]["description"] == "bootstrap token (cluster_bootstrap_token)"
    assert tokens[token_id]["uses_left"] is None
    dps = data_planes(cp1)
    assert set(dps) == set(DPS), dps
    for dp in dps.values():
        assert dp["token_id"] == token_id and dp["revoked_at"] is None, dp
    # Both CP nodes answer on their own loopback port, from one database.
    assert cp_version(cp1) == cp_version(cp2)


def test_compose_file_defaults_keep_admin_ports_on_loopback(workdir):
    """What a user gets without the test's overrides: admin and status ports on 127.0.0.1,
    proxies on every interface. (`compose config` needs no engine.)"""
    compose = docker.compose_command()
    if compose is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    env = os.path.join(workdir, "defaults.env")
    with open(env, "w") as f:
        f.write("TOLLGATE_PG_PASSWORD=p\nTOLLGATE_KEYRING_KEY=k\n"
                "TOLLGATE_BOOTSTRAP_TOKEN=abcdef.0123456789abcdef\n")
    out = docker._run([*compose, "--env-file", env, "-f", docker.COMPOSE_FILE,
                       "-p", "defaults", "config"]).stdout
    assert "127.0.0.1:8001:8001" in out and "127.0.0.1:8002:8001" in out, out
    assert "127.0.0.1:8100:8100" in out and "8444" in out, out
    # Every host port that is not a proxy is bound to loopback.
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("- ") and ":" in line and ("8001" in line or ":8100" in line):
            assert line.startswith("- 127.0.0.1:"), line


def test_seed_004_through_every_dp(cluster, cp1):
    expect(cp1.post("/services", json={"name": "httpbin-service", "host": "echo",
                                       "port": 8080}), 201)
    expect(cp1.post("/services/httpbin-service/routes",
                    json={"name": "httpbin-route", "paths": [ROUTE]}), 201)
    expect(cp1.post("/services/httpbin-service/plugins",
                    json={"name": "key-auth", "instance_name": "key-auth1"}), 201)
    for user, key, minute in (("consumer1", KEY1, 5), ("consumer2", KEY2, 8)):
        expect(cp1.post("/consumers", json={"username": user}), 201)
        expect(cp1.post(f"/consumers/{user}/key-auth", json={"key": key}), 201)
        expect(cp1.post(f"/consumers/{user}/plugins",
                        json={"name": "rate-limiting", "instance_name": f"rl-{user}",
                              "config": {"minute": minute}}), 201)
    wait_dps_at(cluster, cp1)

    for dp in DPS:
        resp = proxy(cluster, dp)
        assert resp.status_code == 401 and resp.headers["WWW-Authenticate"] == "Key", resp.text
        assert resp.json()["message"] == "No API key found in request"
        assert proxy(cluster, dp, key="12").status_code == 401
        resp = proxy(cluster, dp, key=KEY2)
        assert resp.status_code == 200, resp.text
        seen = resp.json()
        assert seen["path"] == "/get" and seen["headers"]["x-consumer-username"] == "consumer2"
        assert resp.headers["X-RateLimit-Limit-Minute"] == "8"

    def sequence():
        counts = {}
        for dp in DPS:
            n = limited_after(cluster, dp, KEY1)
            if n is None:
                return None
            counts[dp] = n
            # consumer1 is limited; consumer2 still passes on the same DP
            if proxy(cluster, dp, key=KEY2).status_code != 200:
                return None if int(time.time() % 60) < 2 else pytest.fail(f"{dp}: consumer2")
        return counts
    counts = in_fresh_minute(sequence)
    # Counters are per DP (policy local): each DP allows consumer1 its 5 requests a minute,
    # minus those the checks above already spent in this minute (none for consumer1).
    assert all(n <= 5 for n in counts.values()) and any(n == 5 for n in counts.values()), counts


def test_dps_move_to_the_other_cp_and_still_get_changes(cluster, cp1, cp2):
    cluster.stop("cp1")
    try:
        for dp in DPS:
            wait_connected(cluster, dp, "cp2:")
        expect(cp2.post("/consumers", json={"username": "consumer3"}), 201)
        expect(cp2.post("/consumers/consumer3/key-auth", json={"key": KEY3}), 201)
        wait_dps_at(cluster, cp2)
        for dp in DPS:
            resp = proxy(cluster, dp, key=KEY3)
            assert resp.status_code == 200 and \
                resp.json()["headers"]["x-consumer-username"] == "consumer3", resp.text
        assert {d["hostname"]: d["config_version"] for d in data_planes(cp2).values()} == \
            {dp: cp_version(cp2) for dp in DPS}
    finally:
        cluster.start("cp1")
        cluster.wait_healthy(["cp1"])


def test_restarted_dp_serves_from_its_volume_before_reconnecting(cluster, cp1):
    version = cp_version(cp1)
    cluster.stop("dp2")
    # No route to any CP when it starts again: whatever it serves comes from its volume.
    cluster.disconnect("dp2", "cluster")
    try:
        cluster.start("dp2", keep_networks=True)
        wait_until(lambda: dp_ready(cluster, "dp2"), 60, interval=0.3,
                   what="dp2 ready (serving its stored configuration)")
        status = dp_status(cluster, "dp2")
        assert status["config_version"] == version and not status["cluster"]["connected"], status
        for key, user in ((KEY1, "consumer1"), (KEY3, "consumer3")):
            resp = proxy(cluster, "dp2", key=key)
            assert resp.status_code in (200, 429), resp.text
        resp = proxy(cluster, "dp2", key=KEY3)
        assert resp.status_code == 200 and \
            resp.json()["headers"]["x-consumer-username"] == "consumer3"
        assert proxy(cluster, "dp2").status_code == 401
    finally:
        cluster.connect("dp2", "cluster")
    wait_connected(cluster, "dp2")


def test_disconnected_dp_catches_up_by_delta(cluster, cp1):
    wait_dps_at(cluster, cp1)
    before = dp_status(cluster, "dp3")["cluster"]
    cluster.disconnect("dp3", "cluster")
    try:
        expect(cp1.post("/consumers", json={"username": "consumer4"}), 201)
        expect(cp1.post("/consumers/consumer4/key-auth", json={"key": "444444"}), 201)
        expect(cp1.delete("/consumers/consumer3"), 204)
        wait_dps_at(cluster, cp1, dps=("dp1", "dp2"))
        assert proxy(cluster, "dp1", key="444444").status_code == 200
        # Cut off, dp3 keeps serving what it had.
        assert proxy(cluster, "dp3", key="444444").status_code == 401
        assert proxy(cluster, "dp3", key=KEY3).status_code == 200
    finally:
        cluster.connect("dp3", "cluster")
    version = wait_dps_at(cluster, cp1, dps=("dp3",), timeout=120)
    assert proxy(cluster, "dp3", key="444444").status_code == 200
    assert proxy(cluster, "dp3", key=KEY3).status_code == 401
    after = dp_status(cluster, "dp3")["cluster"]
    assert after["deltas_applied"] > before["deltas_applied"], (before, after)
    assert after["snapshots_applied"] == before["snapshots_applied"], (before, after)
    # The CP's view agrees: dp3 acknowledged the current version.
    wait_until(lambda: data_planes(cp1)["dp3"]["config_version"] == version, 30, interval=0.5,
               what="the CP records dp3 at the current version")


def test_down_leaves_nothing_behind(cluster):
    res = cluster.down()
    assert res.returncode == 0, res.stderr
    assert cluster.leftovers() == {}
