#!/usr/bin/env python3
"""Cluster sync benchmark (not a test): how fast and how small the CP → DP sync is.

Starts its own PostgreSQL (durable: fsync on), one control plane, an echo upstream and three
data planes enrolled with `tollgate dp join` (1 worker thread each), then measures:

1. Commit-to-applied latency of one change, 3 DPs: --rounds rounds of --changes single-key
   changes (a new key-auth credential each, one at a time, each after the previous one reached
   every DP). For each change and DP: the DP's own timestamp of the apply (GET /status:
   cluster.last_apply_at_ms, wall clock, 1 ms resolution, stamped when the LMDB transaction has
   committed, i.e. when workers serve it) minus the wall-clock time the Admin API's 2xx reached
   this script. Negative values happen: the DP applied the change before the HTTP answer
   arrived. The DPs' /status is polled every ~2 ms only to learn that the apply happened (the
   figure does not depend on the polling); the time it was first seen is reported as well.
   The CP's own commit→ACK histogram (/metrics) is given as a cross-check.
2. Bytes per single-key change, during those rounds: (a) the CP's push counters
   (tollgate_sync_push_bytes_total / tollgate_sync_pushes_total, kind="delta": the protobuf
   Envelope of each push); (b) on the wire: the kernel's tcp_info of each DP's sync socket
   (`ss -ti`: bytes_received = TLS records CP→DP, bytes_acked = DP→CP), per change; heartbeats
   (every 10 s each way) fall into this figure too.
3. 1 000 000 keys (--keys): consumers with one key-auth credential each, loaded straight into
   PostgreSQL with COPY in the DAO's storage format (documents, SHA-256 digest, AES-256-GCM
   ciphertext under the CP's keyring key bound to the row id: what the Admin API would have
   written, minus a change log entry per row), then one Admin write for a new version.
   Snapshot: each DP in turn is stopped, its store deleted and started again, i.e. a new data
   plane (same enrolment): time from start to the snapshot's version applied, VmHWM (peak RSS)
   of the DP process, and data.mdb's size. The first one includes the CP reading the snapshot
   from PostgreSQL (built once per version, shared by the next ones).
4. Latency again with the 1 000 000 keys in every DP's store and in PostgreSQL.

The machine's load average is recorded before each phase (other work on a shared machine
moves these figures). Prints a Markdown section; --out appends it to a file, --json writes the
raw figures.
"""
import argparse
import base64
import hashlib
import io
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

import requests

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

from harness import procs  # noqa: E402
from harness.cp import CpProcess  # noqa: E402
from harness.dp import cluster_status, enroll_dp, wait_applied  # noqa: E402
from harness.pg import PgServer, pg_bindir  # noqa: E402
from harness.upstream import EchoUpstream  # noqa: E402


def log(msg):
    print(f"[sync-bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def pct(values, p):
    """Nearest-rank percentile."""
    s = sorted(values)
    return s[max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))]


# ---------------------------------------------------------------- CP side


def latest_version(cp):
    st = cp.admin.get("/clustering/status").json()
    (mine,) = [c for c in st["control_planes"] if c["name"] == "default"]
    return mine["config_version"]


def cp_metrics(cp):
    text = requests.get(cp.status_url + "/metrics", timeout=10).text
    out = {}
    for name in ("tollgate_sync_push_bytes_total{kind=\"delta\"}",
                 "tollgate_sync_pushes_total{kind=\"delta\"}",
                 "tollgate_sync_push_bytes_total{kind=\"snapshot\"}",
                 "tollgate_sync_commit_to_ack_seconds_sum",
                 "tollgate_sync_commit_to_ack_seconds_count"):
        m = re.search("^" + re.escape(name) + r" ([0-9.e+]+)$", text, re.M)
        out[name] = float(m.group(1)) if m else 0.0
    return out


def wire_bytes(cluster_port):
    """{local port: (bytes_received, bytes_acked)} of the DPs' sync sockets (tcp_info)."""
    out = subprocess.run(["ss", "-tinH", "state", "established", f"dport = :{cluster_port}"],
                         capture_output=True, text=True, check=True).stdout
    socks, cur = {}, None
    for line in out.splitlines():
        m = re.match(r"\s*\d+\s+\d+\s+\S+:(\d+)\s+\S+:\d+", line)
        if m:
            cur = int(m.group(1))
            continue
        if cur is not None:
            rx = re.search(r"bytes_received:(\d+)", line)
            tx = re.search(r"bytes_acked:(\d+)", line)
            socks[cur] = (int(rx.group(1)) if rx else 0, int(tx.group(1)) if tx else 0)
            cur = None
    return socks


# ---------------------------------------------------------------- latency


def one_change(cp, session, dps, dp_sessions, version, key):
    """Creates one credential; returns {dp: (stamped, seen, stamped from the request's send)},
    seconds, the first two relative to the 2xx."""
    t_send = time.time()
    r = session.post(f"{cp.admin_url}/consumers/probe/key-auth", json={"key": key}, timeout=30)
    t_2xx = time.time()
    if r.status_code != 201:
        raise RuntimeError(f"write refused: {r.status_code} {r.text}")
    pending, out = set(range(len(dps))), {}
    deadline = time.monotonic() + 30
    while pending:
        for i in sorted(pending):
            st = dp_sessions[i].get(dps[i].status_url + "/status", timeout=10).json()["cluster"]
            if st["applied_version"] >= version:
                seen = time.time()
                stamp = st["last_apply_at_ms"] / 1000
                out[i] = (stamp - t_2xx, seen - t_2xx, stamp - t_send)
                pending.discard(i)
        if time.monotonic() > deadline:
            raise RuntimeError(f"version {version} not applied by DPs {sorted(pending)} in 30 s")
        time.sleep(0.002)
    return out


def latency_phase(cp, dps, label, rounds, changes):
    session = requests.Session()
    session.trust_env = False
    dp_sessions = []
    for _ in dps:
        s = requests.Session()
        s.trust_env = False
        dp_sessions.append(s)
    version = latest_version(cp)
    result = {"label": label, "load_before": loadavg(), "rounds": []}
    m0, w0 = cp_metrics(cp), wire_bytes(cp.cluster_port)
    n = 0
    for rnd in range(rounds):
        stamped, seen, sent = [], [], []
        for c in range(changes):
            version += 1
            n += 1
            got = one_change(cp, session, dps, dp_sessions, version,
                             f"lat-{label}-{rnd}-{c}-{uuid.uuid4().hex[:8]}")
            stamped += [v[0] * 1000 for v in got.values()]
            seen += [v[1] * 1000 for v in got.values()]
            sent += [v[2] * 1000 for v in got.values()]
            time.sleep(0.01)
        rr = {"p50": pct(stamped, 50), "p99": pct(stamped, 99), "max": max(stamped),
              "seen_p50": pct(seen, 50), "seen_p99": pct(seen, 99), "n": len(stamped),
              "sent_p50": pct(sent, 50), "sent_p99": pct(sent, 99),
              "stamped": stamped, "load": loadavg()}
        result["rounds"].append(rr)
        log(f"{label} round {rnd + 1}: p50 {rr['p50']:.1f} ms p99 {rr['p99']:.1f} ms "
            f"(first seen p50 {rr['seen_p50']:.1f} p99 {rr['seen_p99']:.1f}); load {rr['load']}")
    m1, w1 = cp_metrics(cp), wire_bytes(cp.cluster_port)
    allv = [v for r in result["rounds"] for v in r["stamped"]]
    result.update(p50=pct(allv, 50), p99=pct(allv, 99), max=max(allv), n=len(allv), changes=n)
    dk = "tollgate_sync_pushes_total{kind=\"delta\"}"
    bk = "tollgate_sync_push_bytes_total{kind=\"delta\"}"
    pushes = m1[dk] - m0[dk]
    result["push_bytes_per_delta"] = (m1[bk] - m0[bk]) / pushes if pushes else None
    result["pushes"] = pushes
    ck, cs = "tollgate_sync_commit_to_ack_seconds_count", "tollgate_sync_commit_to_ack_seconds_sum"
    acks = m1[ck] - m0[ck]
    result["commit_to_ack_mean_ms"] = (m1[cs] - m0[cs]) / acks * 1000 if acks else None
    rx = [(w1[p][0] - w0[p][0]) / n for p in w1 if p in w0]
    tx = [(w1[p][1] - w0[p][1]) / n for p in w1 if p in w0]
    result["wire_rx_per_change"] = statistics.mean(rx) if rx else None
    result["wire_tx_per_change"] = statistics.mean(tx) if tx else None
    result["wire_sockets"] = len(rx)
    for s in dp_sessions + [session]:
        s.close()
    return result


# ---------------------------------------------------------------- 1M keys


def sorted_uuid(prefix, i):
    """A version-4-shaped UUID whose order follows i: bulk-loaded rows then append to the
    primary key index instead of splitting random pages (the load is not what is measured)."""
    h = f"{prefix:08x}{i:024x}"
    h = h[:12] + "4" + h[13:16] + "8" + h[17:]
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def load_keys(pg, db, cp, count):
    """`count` consumers with one key-auth credential each, COPYed in the DAO's format."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    with open(os.path.join(cp.prefix, "keyring.key")) as f:
        aead = AESGCM(base64.b64decode(f.read().strip()))
    conn = pg.connect(db)
    cur = conn.cursor()
    cur.execute("SELECT id FROM control_planes WHERE name = 'default'")
    cp_id = cur.fetchone()[0]
    now = int(time.time())
    run = int.from_bytes(os.urandom(4), "big")
    batch = 100_000
    for start in range(0, count, batch):
        cons, creds = io.StringIO(), io.StringIO()
        for i in range(start, min(count, start + batch)):
            cid, kid = sorted_uuid(run, 2 * i), sorted_uuid(run, 2 * i + 1)
            key = f"bench-key-{i}".encode()
            nonce = os.urandom(12)
            enc = nonce + aead.encrypt(nonce, key, kid.encode())  # as lib/crypto.c: nonce|ct|tag
            digest = hashlib.sha256(key).hexdigest()
            user = f"bench-{i:07d}"
            cdoc = json.dumps({"id": cid, "tags": None, "username": user,
                               "custom_id": None, "created_at": now, "updated_at": now})
            kdoc = json.dumps({"id": kid, "tags": None, "consumer": {"id": cid},
                               "created_at": now})
            cons.write(f"{cp_id}\t{cid}\t{user}\t\\N\t{now}\t{{}}\t{cdoc}\n")
            creds.write(f"{cp_id}\t{kid}\t{cid}\t\\\\x{digest}\t\\\\x{enc.hex()}\t\\N\t"
                        f"{now}\t{{}}\t{kdoc}\n")
        cons.seek(0)
        creds.seek(0)
        cur.copy_expert("COPY consumers (cp_id, id, username, custom_id, created_at, tags, doc) "
                        "FROM STDIN", cons)
        cur.copy_expert("COPY keyauth_credentials (cp_id, id, consumer_id, key_digest, key_enc, "
                        "expires_at, created_at, tags, doc) FROM STDIN", creds)
        log(f"loaded {min(count, start + batch)} keys")
    cur.execute("VACUUM ANALYZE consumers")
    cur.execute("VACUUM ANALYZE keyauth_credentials")
    conn.close()


def wait_digest_known(cp, timeout):
    """Waits until the CP's kept config digest is known again (its repair after a bulk load)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = cp.admin.get("/clustering/status")
        (mine,) = [c for c in r.json()["control_planes"] if c["name"] == "default"]
        if mine["config_digest"]:
            return
        time.sleep(0.5)
    raise SystemExit("the control plane did not recompute its config digest after the load")


def proc_status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, v = line.split(":", 1)
            if k in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                out[k] = int(v.split()[0]) * 1024
    return out


def snapshot_begin_time(path, offset, version):
    """Wall-clock time the DP logged the start of the snapshot of `version` (SnapshotBegin
    received), from its log after `offset`; None when not found."""
    import datetime
    with open(path, "rb") as f:
        f.seek(offset)
        text = f.read().decode("utf-8", "replace")
    m = re.search(r"^(\S+)Z \[\w+\] sync: receiving snapshot of version " + str(version),
                  text, re.M)
    if not m:
        return None
    return datetime.datetime.fromisoformat(m.group(1)).replace(
        tzinfo=datetime.timezone.utc).timestamp()


class SnapshotTimeout(Exception):
    pass


def snapshot_new_dp(cp, dp, version, timeout):
    """Stops `dp`, deletes its store, starts it: a new data plane that needs a snapshot."""
    dp.stop()
    shutil.rmtree(os.path.join(dp.prefix, "dp"), ignore_errors=True)
    m0 = cp_metrics(cp)
    log_from = os.path.getsize(dp.log_path)
    t0, wall0 = time.monotonic(), time.time()
    dp.start(timeout=120)
    peak = 0
    deadline = t0 + timeout
    while True:
        st = cluster_status(dp)
        peak = max(peak, proc_status(dp.process.pid)["VmHWM"])
        if st["applied_version"] >= version:
            break
        if time.monotonic() > deadline:
            raise SnapshotTimeout(f"{dp.name} had not applied the snapshot after {timeout} s "
                                  f"(its sync status: {st})")
        time.sleep(0.05)
    took = time.monotonic() - t0
    mem = proc_status(dp.process.pid)
    data = os.stat(os.path.join(dp.prefix, "dp", "data.mdb"))
    m1 = cp_metrics(cp)
    sk = "tollgate_sync_push_bytes_total{kind=\"snapshot\"}"
    begin = snapshot_begin_time(dp.log_path, log_from, version)
    return {"dp": dp.name, "seconds": took,
            "to_begin": begin - wall0 if begin else None, "vmhwm": max(peak, mem["VmHWM"]),
            "rss_after": mem["VmRSS"], "anon_after": mem["RssAnon"],
            "data_mdb": data.st_size, "data_mdb_alloc": data.st_blocks * 512,
            "snapshots_applied": st["snapshots_applied"],
            "snapshot_bytes": m1[sk] - m0[sk], "load": loadavg()}


# ---------------------------------------------------------------- report


def mib(b):
    return f"{b / 2**20:.1f} MiB"


def latency_rows(r, what):
    per_round = ", ".join(f"{x['p50']:.1f}/{x['p99']:.1f}" for x in r["rounds"])
    seen50 = statistics.median(x["seen_p50"] for x in r["rounds"])
    seen99 = statistics.median(x["seen_p99"] for x in r["rounds"])
    rows = [f"| commit→applied, 3 DPs, {what}: p50 / p99 / max ({r['n']} samples) | "
            f"**{r['p50']:.1f} / {r['p99']:.1f}** / {r['max']:.1f} ms | p99 ≤ 50 ms |",
            f"| ↳ per round, p50/p99 ms | {per_round} | |",
            f"| ↳ first seen by the 2 ms polling, p50 / p99 (median round) | "
            f"{seen50:.1f} / {seen99:.1f} ms | |",
            f"| ↳ from the request being sent (the Admin API's time included), p50 / p99 "
            f"(median round) | {statistics.median(x['sent_p50'] for x in r['rounds']):.1f} / "
            f"{statistics.median(x['sent_p99'] for x in r['rounds']):.1f} ms | |"]
    if r["commit_to_ack_mean_ms"] is not None:
        rows.append(f"| ↳ the CP's commit→ACK histogram, mean | "
                    f"{r['commit_to_ack_mean_ms']:.1f} ms | |")
    return rows


def bytes_rows(r, what):
    return [f"| bytes per single-key change, {what}: the delta pushed (CP counters) | "
            f"**{r['push_bytes_per_delta']:.0f} B** ({r['pushes']:.0f} pushes) | ≤ 1 KB |",
            f"| ↳ on the wire per DP, TLS included (tcp_info): CP→DP / DP→CP | "
            f"{r['wire_rx_per_change']:.0f} B / {r['wire_tx_per_change']:.0f} B | |"]


def report(res, args):
    a, b = res["latency_small"], res.get("latency_big")
    keys = f"{args.keys:,}".replace(",", " ")
    lines = [
        "`tests/bench/sync_bench.py`: one control plane (PostgreSQL on loopback, fsync on), "
        "three data planes enrolled with `tollgate dp join` (1 worker thread each), on this "
        "2-core machine while other builds and tests ran (load averages below). One change = "
        "one new key-auth credential through the Admin API, the next one after every data "
        "plane applied the previous one. Latency = the data plane's own timestamp of the "
        "apply (`/status` `cluster.last_apply_at_ms`, wall clock, 1 ms resolution, taken once "
        "the LMDB transaction committed) minus the moment the Admin API's 2xx reached the "
        "client (negative: applied before the HTTP answer arrived). `/status` was polled every "
        "~2 ms only to learn that the apply happened; when the poll first saw it is given too.",
        "", "| measure | result | target |", "|---|---|---|"]
    lines += latency_rows(a, "small config")
    if b:
        lines += latency_rows(b, f"{keys} keys in the config")
        lines.append(f"| p99 with {keys} keys / p99 small config | ×{b['p99'] / a['p99']:.2f} "
                     "| unchanged |")
    lines += bytes_rows(a, "small config")
    if b:
        lines += bytes_rows(b, f"{keys} keys")
    for i, s in enumerate(res["snapshots"]):
        who = f"{s['dp']}, the CP reads it from PostgreSQL" if i == 0 else f"{s['dp']}, shared"
        split = (f" ({s['to_begin']:.1f} s until SnapshotBegin)"
                 if s.get("to_begin") is not None else "")
        lines.append(f"| new DP ← snapshot of {keys} keys ({who}): time; VmHWM vs data.mdb | "
                     f"**{s['seconds']:.1f} s**{split}; {mib(s['vmhwm'])} = "
                     f"**×{s['vmhwm'] / s['data_mdb']:.2f}** of {mib(s['data_mdb'])} "
                     "| ≤ 15 s; ≤ ×2 |")
    lines.append("")
    if res.get("snapshot_failure"):
        lines += [f"**Snapshot not applied in time**: {res['snapshot_failure']}", ""]
    if res["snapshots"]:
        s0 = res["snapshots"][0]
        lines += [f"Snapshot size: {mib(s0['snapshot_bytes'])} pushed for {keys} consumers + "
                  f"{keys} credentials (CP counter). DP RSS after it: {mib(s0['rss_after'])} "
                  f"(anonymous {mib(s0['anon_after'])}).", ""]
    lines += [f"Loading {keys} keys into PostgreSQL (COPY, not measured): "
              f"{res['load_seconds']:.0f} s. Load average (1/5/15 min) before each phase: "
              + "; ".join(f"{k} {v}" for k, v in res["loads"]) + ".", "",
              f"    /usr/bin/python3 tests/bench/sync_bench.py --bin build/tollgate "
              f"--rounds {args.rounds} --changes {args.changes} --keys {args.keys}", ""]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.environ.get("TOLLGATE_BIN",
                                                    os.path.join(ROOT, "build", "tollgate")))
    ap.add_argument("--changes", type=int, default=200, help="changes per latency round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--snapshot-timeout", type=int, default=900,
                    help="seconds to wait for a new DP's snapshot before giving up")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--out", help="append the Markdown section to this file")
    ap.add_argument("--json", help="write the raw figures here")
    args = ap.parse_args()
    args.bin = os.path.abspath(args.bin)  # the processes run in their own directories

    work = tempfile.mkdtemp(prefix="tg-sync-bench-")
    os.chmod(work, 0o711)  # PostgreSQL runs as an unprivileged user and must traverse it
    pg = PgServer(work, pg_bindir(), work, durable=True)
    up = EchoUpstream().start()
    dps = []
    res = {"loads": []}
    try:
        pg.init()
        db = pg.create_database("syncbench")
        cp = CpProcess(args.bin, os.path.join(work, "cp"), work, name="cp", pg=pg, database=db,
                       env={"TOLLGATE_LOG_LEVEL": "notice"})
        cp.env["TOLLGATE_CLUSTER_ADVERTISE"] = cp.cluster_address
        cp.start()
        for path, body in (("/services", {"name": "bench", "url": up.url}),
                           ("/services/bench/routes", {"name": "bench", "paths": ["/bench"]}),
                           ("/routes/bench/plugins", {"name": "key-auth"}),
                           ("/consumers", {"username": "probe"})):
            r = cp.admin.post(path, json=body)
            assert r.status_code == 201, r.text
        for i in range(3):
            dp = enroll_dp(cp, args.bin, os.path.join(work, f"dp{i + 1}"), work, f"dp{i + 1}",
                           env={"TOLLGATE_LOG_LEVEL": "notice",
                                "TOLLGATE_PROXY_ACCESS_LOG": "off"})
            dps.append(dp.start())
        v = latest_version(cp)
        for dp in dps:
            wait_applied(dp, v, timeout=60)
        log(f"3 DPs at version {v}; load {loadavg()}")

        res["loads"].append(("latency, small config", loadavg()))
        res["latency_small"] = latency_phase(cp, dps, "small", args.rounds, args.changes)

        # The data planes are stopped before the keys appear in PostgreSQL: rows loaded
        # without change log entries would make the running ones differ from the CP's digest,
        # and the CP would (rightly) resync them with snapshots while the first new DP is
        # being measured.
        for dp in dps:
            dp.stop()
        res["loads"].append(("loading keys", loadavg()))
        t = time.monotonic()
        load_keys(pg, db, cp, args.keys)
        res["load_seconds"] = time.monotonic() - t
        # rows COPYed behind the change log: the digest the writes keep no longer covers them;
        # make it unknown so the CP recomputes it (not measured) before any snapshot is timed
        conn = pg.connect(db)
        conn.cursor().execute("UPDATE control_planes SET config_digest = NULL")
        conn.close()
        r = cp.admin.post("/consumers", json={"username": "after-load"})
        assert r.status_code == 201, r.text
        version = latest_version(cp)
        wait_digest_known(cp, args.snapshot_timeout)

        res["loads"].append(("snapshots", loadavg()))
        res["snapshots"] = []
        try:
            for dp in dps:
                s = snapshot_new_dp(cp, dp, version, args.snapshot_timeout)
                res["snapshots"].append(s)
                log(f"{dp.name}: snapshot applied in {s['seconds']:.1f} s, VmHWM "
                    f"{mib(s['vmhwm'])}, data.mdb {mib(s['data_mdb'])}; load {s['load']}")
        except SnapshotTimeout as e:
            res["snapshot_failure"] = str(e)
            log(str(e))
        if "snapshot_failure" not in res:
            # a loaded key authenticates on every data plane
            for dp in dps:
                r = dp.get("/bench/x", headers={"apikey": f"bench-key-{args.keys - 1}"})
                assert r.status_code == 200, (dp.name, r.status_code, r.text)
            res["loads"].append((f"latency, {args.keys} keys", loadavg()))
            res["latency_big"] = latency_phase(cp, dps, "big", args.rounds, args.changes)
    finally:
        for dp in dps:
            dp.stop()
        procs.stop_all()
        pg.stop()
        up.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    text = report(res, args)
    print(text)
    if args.out:
        with open(args.out, "a") as f:
            f.write(text + "\n")
    if args.json:
        for k in ("latency_small", "latency_big"):
            for r in res[k]["rounds"]:
                r.pop("stamped", None)
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
