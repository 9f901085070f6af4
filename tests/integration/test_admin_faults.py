"""Faults around the Admin API: PostgreSQL going away and coming back, dropped connections, a
stalled database, and SIGTERM. Acknowledged (2xx) writes must never be lost, writes refused
during an outage must not appear later, the CP must answer with JSON errors (503/500) rather
than hang or die, and it must recover by itself.

pg_server is session-scoped and shared: every test that stops it starts it again (finally)."""
import contextlib
import json
import signal
import threading
import time
import uuid

import pytest
import requests

from admin_state import (assert_changelog_contiguous, assert_cp_alive, changelog, connect,
                         json_body, list_all, port_of, status)
from harness.cp import AdminClient
from harness.procs import wait_for

OUTAGE_STATUSES = (503, 500)


@pytest.fixture
def pg_restored(pg_server):
    """Yields the shared PostgreSQL; whatever the test does, it is running again afterwards."""
    try:
        yield pg_server
    finally:
        if not pg_server.running():
            pg_server.start()


def assert_outage_error(resp, what):
    assert resp.status_code in OUTAGE_STATUSES, \
        f"{what} during the outage: expected 503 (or 500), got {resp.status_code} " \
        f"{resp.text[:300]!r}"
    body = json_body(resp)
    assert isinstance(body, dict) and isinstance(body.get("message"), str), body
    if resp.status_code == 503:
        assert body == {"message": "Service unavailable"}, body
    else:
        assert body == {"message": "An unexpected error occurred"}, body


class Writer(threading.Thread):
    """Creates consumers `<prefix>-<n>` until stopped; records every outcome."""

    def __init__(self, base_url, prefix):
        super().__init__(daemon=True)
        self.client = AdminClient(base_url, timeout=30)
        self.prefix = prefix
        self.stop_flag = threading.Event()
        self.results = []  # (username, status or exception text, t_start, t_end, body)

    def run(self):
        n = 0
        while not self.stop_flag.is_set():
            n += 1
            name = f"{self.prefix}-{n}"
            t0 = time.monotonic()
            try:
                r = self.client.post("/consumers", json={"username": name})
                self.results.append((name, r.status_code, t0, time.monotonic(), r.text))
                if r.status_code >= 500:
                    time.sleep(0.05)  # do not spin during the outage
            except requests.RequestException as e:
                self.results.append((name, f"exception: {e}", t0, time.monotonic(), ""))
                time.sleep(0.05)
        self.client.close()


def wait_recovered(admin, timeout=90):
    """Polls with writes until one is acknowledged; returns (acked names, refused names).
    Every answer meanwhile must be a JSON 503/500."""
    acked, refused = [], []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        name = f"recovery-{uuid.uuid4().hex[:8]}"
        try:
            r = admin.post("/consumers", json={"username": name}, timeout=30)
        except requests.RequestException as e:
            raise AssertionError(f"CP did not answer while recovering: {e}") from None
        if r.status_code == 201:
            acked.append(name)
            return acked, refused
        assert_outage_error(r, "POST /consumers while PostgreSQL restarts")
        refused.append(name)
        time.sleep(0.25)
    raise AssertionError(f"CP did not recover within {timeout}s after PostgreSQL came back")


def settle(base_url, timeout=60):
    """Waits until rounds of concurrent reads all succeed and /status reports the database
    reachable (tolerates connections that died with the old server being replaced)."""
    deadline = time.monotonic() + timeout
    while True:
        failures = hammer(base_url, reads=48, writes=2)
        with contextlib.closing(AdminClient(base_url)) as c:
            reachable = c.get("/status").json()["database"]["reachable"]
        if not failures and reachable:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"reads still failing {timeout}s after recovery: {failures[:3]}")
        time.sleep(0.5)


def consumers_by_name(admin):
    return {c["username"]: c for c in list_all(admin, "/consumers")}


def assert_changelog_matches_consumers(pg_server, database, admin):
    """Only consumer creations happened: one version per existing consumer, each version's
    single change is that consumer's upsert, and /status agrees."""
    n = assert_changelog_contiguous(pg_server, database)
    _, changes, _ = changelog(pg_server, database)
    consumers = list_all(admin, "/consumers")
    ids = {c["id"] for c in consumers}
    changed = [(t, i, op) for _, _, t, i, op in changes]
    assert len(changed) == n, f"{len(changed)} changes for {n} versions"
    assert all(t == "consumers" and op == "upsert" for t, _, op in changed), changed[:5]
    assert {i for _, i, _ in changed} == ids, \
        f"change log ids != consumer ids: {len({i for _, i, _ in changed} ^ ids)} differ"
    assert n == len(consumers), f"{n} versions but {len(consumers)} consumers"
    assert status(admin)["configuration"]["config_version"] == n
    return n


# ----------------------------------------------------------------------------- outage

def test_postgres_outage_and_recovery(cp, admin, pg_restored):
    pg = pg_restored
    pid = cp.pid
    baseline = []
    for i in range(20):
        r = admin.post("/consumers", json={"username": f"before-{i}"})
        assert r.status_code == 201, r.text
        baseline.append(f"before-{i}")

    writers = [Writer(cp.admin_url, f"w{k}") for k in range(3)]
    for w in writers:
        w.start()
    try:
        wait_for(lambda: all(len(w.results) >= 5 for w in writers), 60, what="writers running")
        pg.stop()
        t_down = time.monotonic()

        # The CP answers promptly, with JSON errors, and /status tells the database is down.
        during_refused = []
        for i, (method, path, body) in enumerate([
                ("POST", "/consumers", {"username": "during-0"}),
                ("GET", "/consumers", None),
                ("GET", "/consumers/before-0", None),
                ("PUT", "/consumers/during-1", {}),
                ("PATCH", "/consumers/before-1", {"custom_id": "during"}),
                ("DELETE", "/consumers/before-2", None),
                ("POST", "/consumers/before-3/key-auth", {"key": "during-key"}),
                ("POST", "/services", {"name": "during-svc", "host": "example.com"}),
                ("GET", "/key-auths", None),
                ("POST", "/consumers", {"username": "during-2"})]):
            t0 = time.monotonic()
            r = admin.request(method, path, json=body, timeout=30)
            assert time.monotonic() - t0 < 20, f"{method} {path} took {time.monotonic() - t0:.1f}s"
            assert_outage_error(r, f"{method} {path}")
        during_refused += ["during-0", "during-1", "during-2"]

        s = status(admin)
        assert s["database"]["reachable"] is False, s
        st = requests.get(f"{cp.status_url}/status", timeout=15)
        assert st.status_code == 200 and st.json()["database"]["reachable"] is False, st.text
        ready = requests.get(f"{cp.status_url}/status/ready", timeout=15)
        assert ready.status_code == 503, ready.text

        # Let the writers run into the outage for a moment.
        time.sleep(1.5)
        assert cp.running() and cp.pid == pid, "the CP died during the outage"

        t_up = time.monotonic()
        pg.start()
        recovered, refused_while_restarting = wait_recovered(admin)
        assert cp.running() and cp.pid == pid, "the CP was restarted or died"

        # Let every writer get some writes through after the recovery.
        t_rec = time.monotonic()
        wait_for(lambda: all(any(code == 201 and t0 > t_rec for _, code, t0, _, _ in w.results)
                             for w in writers), 60, what="writers succeeding after recovery")
    finally:
        for w in writers:
            w.stop_flag.set()
        for w in writers:
            w.join(60)

    settle(cp.admin_url)
    assert_cp_alive(cp, admin)
    present = consumers_by_name(admin)

    acked = set(baseline) | set(recovered)
    refused = set(during_refused) | set(refused_while_restarting)
    outage_codes = {}
    for w in writers:
        for name, code, t0, t1, text in w.results:
            if code in (201,):
                acked.add(name)
                continue
            assert isinstance(code, int), f"{name}: {code}"  # the CP always answered
            assert code in OUTAGE_STATUSES, f"{name}: unexpected {code} {text[:200]}"
            body = json.loads(text)
            assert "message" in body, text
            outage_codes[code] = outage_codes.get(code, 0) + 1
            # Requests sent once PostgreSQL was fully down and answered before it came back
            # were refused before reaching a commit: they must not exist.
            if t0 > t_down and t1 < t_up:
                refused.add(name)
    assert outage_codes, "no writer request failed during the outage (did it happen?)"

    lost = sorted(acked - set(present))
    assert not lost, f"{len(lost)} acknowledged writes lost: {lost[:10]}"
    ghosts = sorted(refused & set(present))
    assert not ghosts, f"{len(ghosts)} writes refused during the outage exist: {ghosts[:10]}"
    for name in ("during-svc",):
        assert admin.get("/services?size=1000").json()["data"] == [], name
    assert present["before-1"]["custom_id"] is None
    assert "before-2" in present
    assert list_all(admin, "/key-auths") == []

    assert_changelog_matches_consumers(pg, cp.database, admin)


def test_no_errors_once_postgres_is_back(cp, admin, pg_restored):
    """After PostgreSQL restarts and the CP has answered successfully again, no client sees an
    error caused by a connection that died with the old server (stale pooled connections are
    replaced, reads are not failed)."""
    pg = pg_restored
    # Make sure every worker holds a live connection to the current server first.
    hammer(cp.admin_url, reads=80, writes=0)
    pg.stop()
    r = admin.get("/consumers")
    assert_outage_error(r, "GET /consumers")
    pg.start()
    wait_recovered(admin)
    failures = hammer(cp.admin_url, reads=200, writes=16)
    assert not failures, f"{summary(failures)} after PostgreSQL restarted and the CP had " \
                         f"already acknowledged a write again; first: {failures[0]}"
    assert_changelog_contiguous(pg, cp.database)


def summary(failures):
    counts = {}
    for method, code, _ in failures:
        counts[(method, code)] = counts.get((method, code), 0) + 1
    return ", ".join(f"{n} x {m} -> {c}" for (m, c), n in sorted(counts.items()))


def hammer(base_url, reads, writes, threads=8):
    """Runs GET /consumers and POST /consumers from several threads; returns failures."""
    failures, lock = [], threading.Lock()

    def work(k):
        client = AdminClient(base_url, timeout=30)
        try:
            for i in range(k, reads, threads):
                r = client.get("/consumers", params={"size": 5})
                if r.status_code != 200:
                    with lock:
                        failures.append(("GET", r.status_code, r.text[:200]))
            for i in range(k, writes, threads):
                r = client.post("/consumers", json={"username": f"h-{uuid.uuid4().hex}"})
                if r.status_code != 201:
                    with lock:
                        failures.append(("POST", r.status_code, r.text[:200]))
        finally:
            client.close()

    ts = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    return failures


def test_terminated_database_sessions_are_replaced(cp, admin, pg_server):
    """PostgreSQL drops the CP's sessions (pg_terminate_backend, as a failover or an idle
    timeout would): the CP reconnects without failing client requests, and loses nothing."""
    hammer(cp.admin_url, reads=80, writes=0)
    before = {c["id"] for c in list_all(admin, "/consumers")}
    with contextlib.closing(pg_server.connect("postgres")) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()", (cp.database,))
        killed = cur.fetchone()[0]
    assert killed >= 1
    failures = hammer(cp.admin_url, reads=120, writes=16)
    assert_cp_alive(cp, admin)
    assert not failures, f"{summary(failures)} after the CP's sessions were terminated; " \
                         f"first: {failures[0]}"
    after = {c["id"] for c in list_all(admin, "/consumers")}
    assert before <= after and len(after) == len(before) + 16
    assert_changelog_contiguous(pg_server, cp.database)


def test_stalled_database_does_not_block_reads(cp, admin, pg_server):
    """A write waiting on a row lock in PostgreSQL holds only the write path: reads and
    /status keep answering, and the write completes once the lock is released."""
    conn = pg_server.connect(cp.database)
    conn.autocommit = False
    result = {}
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT config_version FROM control_planes FOR UPDATE")
        v0 = None

        def write():
            c = AdminClient(cp.admin_url, timeout=120)
            try:
                result["r"] = c.post("/consumers", json={"username": "after-the-lock"})
            except requests.RequestException as e:
                result["r"] = e
            finally:
                c.close()

        t = threading.Thread(target=write, daemon=True)
        t.start()
        time.sleep(1.0)
        assert "r" not in result, f"the write did not wait for the lock: {result}"
        for _ in range(10):
            t0 = time.monotonic()
            assert admin.get("/consumers", params={"size": 5}, timeout=30).status_code == 200
            v0 = status(admin)["configuration"]["config_version"]
            assert time.monotonic() - t0 < 10, "reads were held up by a blocked write"
    finally:
        conn.rollback()
        conn.close()
    t.join(60)
    r = result.get("r")
    assert isinstance(r, requests.Response), f"write failed: {r!r}"
    assert r.status_code == 201, r.text
    assert status(admin)["configuration"]["config_version"] == v0 + 1
    assert_changelog_contiguous(pg_server, cp.database)


# ----------------------------------------------------------------------------- SIGTERM

def stop_timed(cp, timeout=30):
    t0 = time.monotonic()
    rc = cp.stop(signal.SIGTERM, timeout=timeout)
    return rc, time.monotonic() - t0


def test_sigterm_exits_zero_promptly(cp_factory):
    node = cp_factory(name="faults-sigterm-idle")
    assert node.admin.post("/consumers", json={"username": "x"}).status_code == 201
    rc, took = stop_timed(node)
    assert rc == 0, f"exit code {rc} after SIGTERM"
    assert took < 10, f"took {took:.1f}s to exit after SIGTERM"


def test_sigterm_with_open_and_stalled_connections(cp_factory):
    """Idle keep-alive connections and clients stuck mid-request do not hold up shutdown."""
    node = cp_factory(name="faults-sigterm-conns")
    port = port_of(node.admin_url)
    socks = []
    try:
        s = connect(port)
        s.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"200" in s.recv(65536).split(b"\r\n")[0]
        socks.append(s)  # idle keep-alive
        s = connect(port)
        s.sendall(b"POST /consumers HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 1000\r\n\r\n{\"username\"")
        socks.append(s)  # stalled body
        s = connect(port)
        s.sendall(b"GET /consumers HTTP/1.1\r\nHost: x\r\n")
        socks.append(s)  # stalled head
        socks.append(connect(port))  # connected, nothing sent
        time.sleep(0.3)
        rc, took = stop_timed(node)
        assert rc == 0, f"exit code {rc} after SIGTERM"
        assert took < 10, f"took {took:.1f}s to exit after SIGTERM with open connections"
    finally:
        for s in socks:
            s.close()


def test_sigterm_under_write_load_loses_no_acknowledged_write(cp_factory, pg_server):
    node = cp_factory(name="faults-sigterm-load")
    writers = [Writer(node.admin_url, f"load{k}") for k in range(4)]
    for w in writers:
        w.start()
    try:
        wait_for(lambda: all(len(w.results) >= 20 for w in writers), 60, what="writers running")
        rc, took = stop_timed(node)
    finally:
        for w in writers:
            w.stop_flag.set()
        for w in writers:
            w.join(60)
    assert rc == 0, f"exit code {rc} after SIGTERM under load"
    assert took < 15, f"took {took:.1f}s to exit after SIGTERM under load"

    acked = {name for w in writers for name, code, *_ in w.results if code == 201}
    odd = [(name, code) for w in writers for name, code, *_ in w.results
           if isinstance(code, int) and code not in (201, 503, 500)]
    assert not odd, f"unexpected answers during shutdown: {odd[:5]}"
    assert len(acked) >= 80

    again = cp_factory(database=node.database, name="faults-sigterm-load-2",
                       env=node.keyring_env())
    present = consumers_by_name(again.admin)
    lost = sorted(acked - set(present))
    assert not lost, f"{len(lost)} acknowledged writes lost across SIGTERM: {lost[:10]}"
    assert_changelog_matches_consumers(pg_server, node.database, again.admin)
    rc, _ = stop_timed(again)
    assert rc == 0


def test_sigterm_while_postgres_is_down(cp_factory, pg_restored):
    node = cp_factory(name="faults-sigterm-nodb")
    assert node.admin.post("/consumers", json={"username": "x"}).status_code == 201
    pg_restored.stop()
    try:
        r = node.admin.get("/consumers", timeout=30)
        assert_outage_error(r, "GET /consumers")
        rc, took = stop_timed(node)
        assert rc == 0, f"exit code {rc} after SIGTERM with PostgreSQL down"
        assert took < 15, f"took {took:.1f}s to exit after SIGTERM with PostgreSQL down"
    finally:
        pg_restored.start()


def test_module_cp_still_healthy_at_the_end(cp, admin, pg_server):
    """After all the restarts above the module's CP is healthy again by itself."""
    settle(cp.admin_url)
    assert_cp_alive(cp, admin)
    assert_changelog_contiguous(pg_server, cp.database)
    r = admin.post("/consumers", json={"username": f"last-{uuid.uuid4().hex[:6]}"})
    assert r.status_code == 201, r.text
