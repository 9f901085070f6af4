"""Concurrent Admin API writes (group commit, docs/architecture.md "The change log"): every
acknowledged write is one version, versions are 1..N without gaps, each version's changes
name the entity that write touched, a client's sequential writes get increasing versions,
and unique constraints hold under races (exactly one winner, the rest 409)."""
import threading
import time
import uuid

import pytest
import requests

from admin_state import (assert_changelog_contiguous, assert_cp_alive, assert_kong_error,
                         changelog, list_all, status)
from harness.cp import AdminClient

THREADS = 8


def run_threads(n, target):
    """Runs target(k) in n threads (each gets its own index); re-raises the first error."""
    errors = []

    def wrap(k):
        try:
            target(k)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append((k, e))

    ts = [threading.Thread(target=wrap, args=(k,), daemon=True) for k in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(600)
        assert not t.is_alive(), "a client thread did not finish in 600s"
    if errors:
        k, e = errors[0]
        raise AssertionError(f"thread {k} failed ({len(errors)} threads failed): {e!r}") from e


def versions_after(pg_server, database, base):
    """{version: [(entity_type, entity_id, op), ...]} for versions > base."""
    _, changes, _ = changelog(pg_server, database)
    out = {}
    for v, _, t, i, op in changes:
        if v > base:
            out.setdefault(v, []).append((t, i, op))
    return out


def session_client(cp):
    return AdminClient(cp.admin_url, timeout=120)


# ----------------------------------------------------------------------------- bulk load

CONSUMERS = 10_000


def test_bulk_consumers_and_keys_from_eight_threads(cp, admin, pg_server):
    base = assert_changelog_contiguous(pg_server, cp.database)
    base_consumers = len(list_all(admin, "/consumers"))
    base_keys = len(list_all(admin, "/key-auths"))
    per_thread = CONSUMERS // THREADS
    acks = [[] for _ in range(THREADS)]  # per thread, in order: (type, id, extra)
    bad = []

    def work(k):
        c = session_client(cp)
        try:
            for i in range(per_thread):
                name = f"bulk-{k}-{i}"
                r = c.post("/consumers", json={"username": name, "tags": [f"t{k}"]})
                if r.status_code != 201:
                    bad.append(("POST /consumers", name, r.status_code, r.text[:200]))
                    continue
                consumer = r.json()
                acks[k].append(("consumers", consumer["id"], name))
                key = f"key-{k}-{i}"
                if i % 2:
                    r = c.post(f"/consumers/{consumer['id']}/key-auth", json={"key": key})
                else:
                    r = c.post("/key-auths", json={"consumer": {"id": consumer["id"]},
                                                   "key": key})
                if r.status_code != 201:
                    bad.append(("POST key-auth", key, r.status_code, r.text[:200]))
                    continue
                cred = r.json()
                assert cred["consumer"]["id"] == consumer["id"] and cred["key"] == key, cred
                acks[k].append(("keyauth_credentials", cred["id"], consumer["id"]))
        finally:
            c.close()

    t0 = time.monotonic()
    run_threads(THREADS, work)
    took = time.monotonic() - t0
    assert not bad, f"{len(bad)} writes not acknowledged with 201; first: {bad[:3]}"
    acked = [a for thread in acks for a in thread]
    assert len(acked) == 2 * CONSUMERS
    print(f"\n{len(acked)} writes from {THREADS} threads in {took:.1f}s "
          f"({len(acked) / took:.0f}/s)")

    # The change log: 1..N without gaps, N = setup + acknowledged writes, one version each.
    n = assert_changelog_contiguous(pg_server, cp.database)
    assert n == base + len(acked), f"{n} versions, expected {base} + {len(acked)}"
    changes = versions_after(pg_server, cp.database, base)
    assert sorted(changes) == list(range(base + 1, n + 1))
    version_of = {}
    for v, rows in changes.items():
        assert len(rows) == 1, f"version {v} has {len(rows)} changes: {rows}"
        t, i, op = rows[0]
        assert op == "upsert", (v, rows)
        assert i not in version_of, f"entity {i} written by two versions"
        version_of[i] = (v, t)
    for t, i, _ in acked:
        assert i in version_of, f"acknowledged {t} {i} has no version"
        assert version_of[i][1] == t, f"{i}: change log says {version_of[i][1]}, wrote {t}"
    assert len(version_of) == len(acked)

    # A client's sequential writes are ordered: later acknowledgement, later version.
    for k, thread in enumerate(acks):
        vs = [version_of[i][0] for _, i, _ in thread]
        assert vs == sorted(vs) and len(set(vs)) == len(vs), f"thread {k}: versions out of order"

    assert status(admin)["configuration"]["config_version"] == n

    # Paging returns exactly the consumers and keys (go-kong's size=1000, and the default).
    consumers = list_all(admin, "/consumers")
    ids = [c["id"] for c in consumers]
    assert len(ids) == len(set(ids)), "paging returned a consumer twice"
    assert len(ids) == base_consumers + CONSUMERS
    assert {i for t, i, _ in acked if t == "consumers"} <= set(ids)
    default_paged = list_all(admin, "/consumers", size=100)
    assert sorted(c["id"] for c in default_paged) == sorted(ids)

    keys = list_all(admin, "/key-auths")
    assert len(keys) == base_keys + CONSUMERS
    assert len({k["id"] for k in keys}) == len(keys)
    owner = {i: extra for t, i, extra in acked if t == "keyauth_credentials"}
    for k in keys:
        if k["id"] in owner:
            assert k["consumer"]["id"] == owner[k["id"]], k
    tagged = list_all(admin, "/consumers?tags=t3")
    assert len(tagged) == per_thread
    assert_cp_alive(cp, admin)


# ----------------------------------------------------------------------------- races

def race(cp, n, request):
    """n threads, released together by a barrier, each sending request(client, k)."""
    barrier = threading.Barrier(n)
    results = [None] * n
    clients = [session_client(cp) for _ in range(n)]
    for c in clients:  # connect first so that the race is about the requests
        assert c.get("/status").status_code == 200

    def work(k):
        barrier.wait(60)
        results[k] = request(clients[k], k)

    try:
        run_threads(n, work)
    finally:
        for c in clients:
            c.close()
    return results


@pytest.mark.parametrize("rnd", range(10))
def test_same_username_from_eight_threads(cp, admin, pg_server, rnd):
    name = f"same-{rnd}"
    base = assert_changelog_contiguous(pg_server, cp.database)
    results = race(cp, THREADS, lambda c, k: c.post("/consumers", json={"username": name,
                                                                        "tags": [f"k{k}"]}))
    codes = sorted(r.status_code for r in results)
    assert codes == [201] + [409] * (THREADS - 1), codes
    winner = next(r.json() for r in results if r.status_code == 201)
    for r in results:
        if r.status_code == 409:
            assert_kong_error(r, 409, code=5, name="unique constraint violation",
                              message=f"UNIQUE violation detected on '{{username=\"{name}\"}}'",
                              fields={"username": name})
    n = assert_changelog_contiguous(pg_server, cp.database)
    assert n == base + 1, f"{n - base} versions for one successful create"
    assert versions_after(pg_server, cp.database, base) == \
        {n: [("consumers", winner["id"], "upsert")]}
    same = [c for c in list_all(admin, "/consumers") if c["username"] == name]
    assert [c["id"] for c in same] == [winner["id"]]
    assert status(admin)["configuration"]["config_version"] == n


def test_same_key_from_eight_threads(cp, admin, pg_server):
    owners = []
    for k in range(THREADS):
        r = admin.post("/consumers", json={"username": f"key-race-{k}"})
        assert r.status_code == 201, r.text
        owners.append(r.json()["id"])
    base = assert_changelog_contiguous(pg_server, cp.database)
    results = race(cp, THREADS, lambda c, k: c.post(
        "/key-auths", json={"consumer": {"id": owners[k]}, "key": "contested-key"}))
    codes = sorted(r.status_code for r in results)
    assert codes == [201] + [409] * (THREADS - 1), codes
    for r in results:
        if r.status_code == 409:
            assert_kong_error(r, 409, code=5,
                              message="UNIQUE violation detected on '{key=\"contested-key\"}'")
    n = assert_changelog_contiguous(pg_server, cp.database)
    assert n == base + 1
    assert len([k for k in list_all(admin, "/key-auths") if k["key"] == "contested-key"]) == 1


def test_same_plugin_scope_from_eight_threads(cp, admin, pg_server):
    r = admin.post("/services", json={"name": "race-svc", "host": "example.com"})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    base = assert_changelog_contiguous(pg_server, cp.database)
    results = race(cp, THREADS, lambda c, k: c.post("/services/race-svc/plugins",
                                                    json={"name": "key-auth"}))
    codes = sorted(r.status_code for r in results)
    assert codes == [201] + [409] * (THREADS - 1), codes
    message = ("UNIQUE violation detected on "
               f"'{{consumer=null,name=\"key-auth\",route=null,service={{id=\"{sid}\"}}}}'")
    for r in results:
        if r.status_code == 409:
            assert_kong_error(r, 409, code=5, message=message)
    assert assert_changelog_contiguous(pg_server, cp.database) == base + 1


def test_failures_inside_concurrent_batches_do_not_leak(cp, admin, pg_server):
    """Good writes, unique violations, FK violations and schema errors interleaved from 8
    threads: each good write is committed once, each failed one leaves no trace."""
    r = admin.post("/consumers", json={"username": "dup-target"})
    assert r.status_code == 201, r.text
    base = assert_changelog_contiguous(pg_server, cp.database)
    base_ids = {c["id"] for c in list_all(admin, "/consumers")}
    good, bad = [[] for _ in range(THREADS)], []
    missing = str(uuid.uuid4())

    def work(k):
        c = session_client(cp)
        try:
            for i in range(150):
                kind = i % 4
                if kind == 0:
                    r = c.post("/consumers", json={"username": f"mix-{k}-{i}"})
                    ok = r.status_code == 201
                    if ok:
                        good[k].append(r.json()["id"])
                elif kind == 1:
                    r = c.post("/consumers", json={"username": "dup-target"})
                    ok = r.status_code == 409 and r.json().get("code") == 5
                elif kind == 2:
                    r = c.post("/key-auths", json={"consumer": {"id": missing},
                                                   "key": f"orphan-{k}-{i}"})
                    ok = r.status_code == 400 and r.json().get("code") == 4
                else:
                    r = c.post("/services", json={"name": f"bad-{k}-{i}", "port": 70000,
                                                  "host": "example.com"})
                    ok = r.status_code == 400 and r.json().get("code") == 2
                if not ok:
                    bad.append((k, i, kind, r.status_code, r.text[:200]))
        finally:
            c.close()

    run_threads(THREADS, work)
    assert not bad, f"{len(bad)} unexpected answers; first: {bad[:3]}"
    acked = [i for thread in good for i in thread]
    n = assert_changelog_contiguous(pg_server, cp.database)
    assert n == base + len(acked), f"{n - base} versions for {len(acked)} good writes"
    changes = versions_after(pg_server, cp.database, base)
    assert sorted(i for rows in changes.values() for _, i, _ in rows) == sorted(acked)
    assert all(len(rows) == 1 and rows[0][0] == "consumers" for rows in changes.values())
    for k, thread in enumerate(good):
        vs = [v for i in thread for v, rows in changes.items() if rows[0][1] == i]
        assert vs == sorted(vs), f"thread {k}: versions out of order"
    ids = {c["id"] for c in list_all(admin, "/consumers")}
    assert ids == base_ids | set(acked)
    assert not [s for s in list_all(admin, "/services") if s["name"].startswith("bad-")]
    assert not [k for k in list_all(admin, "/key-auths") if k["key"].startswith("orphan-")]
    assert status(admin)["configuration"]["config_version"] == n


def test_deletes_racing_with_child_creates(cp, admin, pg_server):
    """Half the threads delete consumers while the other half add keys to them. Keys may be
    refused (404/400 code 4) but never orphaned; every change is in the log."""
    targets = []
    for i in range(120):
        r = admin.post("/consumers", json={"username": f"victim-{i}"})
        assert r.status_code == 201, r.text
        targets.append(r.json()["id"])
    base = assert_changelog_contiguous(pg_server, cp.database)
    deleted, created, bad = [], [], []

    def work(k):
        c = session_client(cp)
        try:
            if k % 2 == 0:  # deleters: each consumer once, spread over the deleters
                for j, cid in enumerate(targets):
                    if j % (THREADS // 2) == k // 2:
                        r = c.delete(f"/consumers/{cid}")
                        if r.status_code == 204:
                            deleted.append(cid)
                        else:
                            bad.append(("DELETE", cid, r.status_code, r.text[:200]))
            else:  # key creators: every consumer, a few keys each
                for j, cid in enumerate(targets):
                    for m in range(2):
                        key = f"vk-{k}-{j}-{m}"
                        if m:
                            r = c.post(f"/consumers/{cid}/key-auth", json={"key": key})
                        else:
                            r = c.post("/key-auths", json={"consumer": {"id": cid}, "key": key})
                        if r.status_code == 201:
                            created.append((r.json()["id"], cid))
                        elif r.status_code == 404 and r.json() == {"message": "Not found"}:
                            pass
                        elif r.status_code == 400 and r.json().get("code") == 4:
                            pass
                        else:
                            bad.append(("POST key", cid, r.status_code, r.text[:200]))
        finally:
            c.close()

    run_threads(THREADS, work)
    assert not bad, f"{len(bad)} unexpected answers; first: {bad[:3]}"
    assert sorted(deleted) == sorted(targets)
    assert_cp_alive(cp, admin)
    assert not any(c["username"].startswith("victim-") for c in list_all(admin, "/consumers"))
    remaining = [k for k in list_all(admin, "/key-auths") if k["key"].startswith("vk-")]
    assert remaining == [], f"{len(remaining)} keys outlived their consumer: {remaining[:3]}"

    n = assert_changelog_contiguous(pg_server, cp.database)
    assert n == base + len(deleted) + len(created), \
        f"{n - base} versions for {len(deleted)} deletes + {len(created)} key creates"
    changes = versions_after(pg_server, cp.database, base)
    upserted = {i: v for v, rows in changes.items() for t, i, op in rows if op == "upsert"}
    removed = {i: v for v, rows in changes.items() for t, i, op in rows if op == "delete"}
    for kid, _ in created:
        assert kid in upserted, f"key {kid} acknowledged without an upsert in the log"
        assert kid in removed and removed[kid] > upserted[kid], \
            f"key {kid} vanished with its consumer but the log has no later delete for it"
    for cid in targets:
        assert cid in removed, f"consumer {cid} deleted without a delete change"
    assert status(admin)["configuration"]["config_version"] == n


def test_concurrent_readers_see_consistent_pages_during_writes(cp, admin, pg_server):
    """Lists served while writes commit are never errors and never show duplicates."""
    stop = threading.Event()
    problems = []

    def reader(k):
        c = session_client(cp)
        try:
            while not stop.is_set():
                r = c.get("/consumers", params={"size": 1000})
                if r.status_code != 200:
                    problems.append(("GET", r.status_code, r.text[:200]))
                    continue
                data = r.json()["data"]
                if len({e["id"] for e in data}) != len(data):
                    problems.append(("duplicate ids in a page",))
                v = c.get("/status").json()["configuration"]["config_version"]
                if v < 1:
                    problems.append(("status", v))
        except requests.RequestException as e:
            problems.append(("exception", repr(e)))
        finally:
            c.close()

    def writer(k):
        c = session_client(cp)
        try:
            for i in range(150):
                r = c.post("/consumers", json={"username": f"rw-{k}-{i}"})
                if r.status_code != 201:
                    problems.append(("POST", r.status_code, r.text[:200]))
        finally:
            c.close()

    readers = [threading.Thread(target=reader, args=(k,), daemon=True) for k in range(3)]
    for t in readers:
        t.start()
    try:
        run_threads(5, writer)
    finally:
        stop.set()
        for t in readers:
            t.join(60)
    assert not problems, f"{len(problems)} problems; first: {problems[:3]}"
    assert_changelog_contiguous(pg_server, cp.database)
    assert len([c for c in list_all(admin, "/consumers") if c["username"].startswith("rw-")]) \
        == 5 * 150
