#!/usr/bin/env python3
"""Admin API benchmark (not a test): write throughput and paging time.

Starts its own PostgreSQL and control plane on loopback ports, then
  1. drives `wrk` (8 connections) creating consumer + key-auth pairs for
     --seconds and reports writes/s, latency and the change-log check;
  2. loads --consumers consumers (directly in SQL, so the read path is what is
     measured) and pages through all of them with size=1000, reporting the
     per-page latency.
Results are printed as a Markdown section (and appended to --out if given).
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

from harness import procs  # noqa: E402
from harness.cp import AdminClient, CpProcess  # noqa: E402
from harness.pg import PgServer, pg_bindir  # noqa: E402


def run_wrk(url, seconds, connections):
    script = os.path.join(HERE, "admin_writes.lua")
    out = subprocess.run(
        ["wrk", "-t", str(connections), "-c", str(connections), "-d", f"{seconds}s",
         "--latency", "-s", script, url, "--", f"b{int(time.time())}"],
        capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.M))
    return rps, int(non2xx.group(1)) if non2xx else 0, lat, out


def load_consumers(pg, db, count):
    with pg.connect(db) as conn, conn.cursor() as cur:
        cur.execute("SELECT id FROM control_planes WHERE name = 'default'")
        cp_id = cur.fetchone()[0]
        cur.execute(
            """INSERT INTO consumers (cp_id, id, username, created_at, doc)
               SELECT %s, u.id, 'page-' || u.g, extract(epoch from now())::bigint,
                      jsonb_build_object('id', u.id, 'username', 'page-' || u.g, 'custom_id', null,
                                         'tags', null, 'created_at', extract(epoch from now())::bigint,
                                         'updated_at', extract(epoch from now())::bigint)
               FROM (SELECT g, gen_random_uuid() AS id FROM generate_series(1, %s) g) u""",
            (cp_id, count))
        conn.commit()
    # Consumers created through the API over time have long been vacuumed; a bulk load
    # read at once would measure setting hint bits on fresh tuples, not paging.
    conn = pg.connect(db)
    conn.rollback()
    conn.autocommit = True
    conn.cursor().execute("VACUUM ANALYZE consumers")
    # inserted behind the change log: the kept config digest no longer covers these rows
    conn.cursor().execute("UPDATE control_planes SET config_digest = NULL")
    conn.close()


def page_all(admin):
    times, total, path = [], 0, "/consumers?size=1000"
    while path:
        t0 = time.perf_counter()
        r = admin.get(path)
        times.append((time.perf_counter() - t0) * 1000)
        body = r.json()
        total += len(body["data"])
        path = body.get("next")
    return total, times


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.environ.get("TOLLGATE_BIN", os.path.join(ROOT, "build", "tollgate")))
    ap.add_argument("--seconds", type=int, default=15)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--consumers", type=int, default=100000)
    ap.add_argument("--out")
    ap.add_argument("--diagnose-async-commit", action="store_true",
                    help="diagnosis only: synchronous_commit=off, to see what fsync costs")
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="tg-bench-")
    os.chmod(work, 0o755)  # PostgreSQL runs as an unprivileged user and must traverse it
    pg = PgServer(os.path.join(work, "pg"), pg_bindir(), work, durable=True)
    pg.init()
    db = pg.create_database("bench")
    if args.diagnose_async_commit:
        pg._superuser_sql("ALTER SYSTEM SET synchronous_commit = off", "SELECT pg_reload_conf()")
    cp = CpProcess(args.bin, os.path.join(work, "cp"), work, pg=pg, database=db)
    try:
        cp.start()
        admin = cp.admin_client()
        rps, errors, lat, raw = run_wrk(cp.admin_url, args.seconds, args.connections)
        with pg.connect(db) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*), min(version), max(version) FROM config_versions")
            nver, vmin, vmax = cur.fetchone()
        load_consumers(pg, db, args.consumers)
        total, times = page_all(admin)
        times_sorted = sorted(times)
        lines = [
            "## Admin API (issue 2)",
            "",
            f"Machine: {os.cpu_count()} cores; CP with pg_pool_size=8 on loopback, PostgreSQL 15 local "
            "(fsync on, synchronous_commit on); wrk as the client on the same machine.",
            "",
            "| measure | result | target |",
            "|---|---|---|",
            f"| writes/s (consumer + key-auth pairs, {args.connections} connections, {args.seconds} s) "
            f"| **{rps:.0f}** | ≥ 2000 |",
            f"| write latency p50 / p99 | {lat.get('50', '?')} / {lat.get('99', '?')} | |",
            f"| non-2xx responses | {errors} | 0 |",
            f"| change log after the run | {nver} versions, {vmin}..{vmax}, gaps: {(vmax - vmin + 1 - nver) if nver else 0} | no gaps |",
            f"| paging {total} consumers, size=1000 ({len(times)} pages; loaded in SQL, then VACUUM ANALYZE) "
            f"| total {sum(times):.0f} ms |  |",
            f"| one 1000-item page p50 / p99 / max | {statistics.median(times):.1f} / "
            f"{times_sorted[int(len(times_sorted) * 0.99) - 1]:.1f} / {max(times):.1f} ms | < 50 ms |",
            "",
        ]
        text = "\n".join(lines)
        print(text)
        if args.out:
            with open(args.out, "a") as f:
                f.write(text + "\n")
    finally:
        cp.stop()
        pg.stop()
        procs.stop_all()


if __name__ == "__main__":
    main()
