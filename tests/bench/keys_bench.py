#!/usr/bin/env python3
"""Key-scale benchmark (not a test): Tollgate's data plane with 1 key vs 1 000 000 keys.

DB-less data planes, each loaded from a generated Kong 3.0 declarative file with one
service, one route, key-auth + rate-limiting (an hourly limit never reached) and N consumers
that each own one key-auth credential: N = 1 and N = --keys, for each rate-limiting
`limit_by` given (default: consumer, a counter per consumer; and service, one counter for
all, which leaves the key lookups as the only thing that differs).
Same method as proxy_bench.py: the proxy under test is pinned to CPU 0, wrk (1 thread) and
an nginx upstream returning a 3-byte 200 share CPU 1, and the proxy's CPU time per request
comes from /proc/<pid>/stat (utime+stime of every thread). wrk runs keys_random.lua, which
sends a uniformly random key of the set with every request (so at N = 1 000 000 lookups
miss the data plane's bounded identity cache and go to the LMDB store), or with --traffic zipf
keys drawn with Zipf's law as real clients send them; every run uses the same script. All data planes stay up and the runs alternate, round after round, so a slow
minute of the machine hits all of them; the tables give the median round. "proxy CPU load"
is the proxy's CPU time over the run's wall time: below 100 % the proxy was not what
limited requests/s (wrk and the upstream on CPU 1 were).

Memory per key = (RSS growth + data.mdb growth) / (N - 1), both against the 1-key run, after
the load and again after the traffic. RSS is split: RssAnon is the process's own memory;
RssFile is mostly data.mdb's pages mapped by the readers, i.e. the file counted a second
time, so the per-key figure uses RssAnon and the table shows both.

--callgrind N adds, for each data plane, instructions and simulated cache misses per request
(valgrind's callgrind over N seconds of the same traffic, see callgrind()): figures the
machine's load does not move, for comparing builds on a shared machine. With --reuse it does
only that, over the stores an earlier run left in --work (loading a million keys again takes
a minute and 5 GiB), so two builds are compared on the very same stores.

Prints a Markdown section; --out appends it to a file, --plot writes a PNG.
"""
import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
sys.path.insert(0, HERE)
from harness.procs import free_port, wait_for  # noqa: E402
from proxy_bench import cpu_seconds, nginx_conf, start, tree  # noqa: E402

LUA = os.path.join(HERE, "keys_random.lua")
TRAFFIC = "uniform"  # or "zipf" (--traffic): which key each request carries, keys_random.lua
LOAD_TIMEOUT = 1800  # seconds: a million keys from YAML take a minute or two


def write_config(path, keys, upstream_port, limit_by):
    """The declarative file: key-auth and rate-limiting on the route, `keys` consumers."""
    with open(path, "w") as f:
        f.write(f"""_format_version: "3.0"
services:
- name: bench
  url: http://127.0.0.1:{upstream_port}
  routes:
  - name: bench
    paths: [/]
  plugins:
  - name: key-auth
  - name: rate-limiting
    config: {{ hour: 1000000000, limit_by: {limit_by} }}
consumers:
""")
        for i in range(keys):
            f.write(f"- username: user-{i}\n  keyauth_credentials:\n  - key: key-{i}\n")


def listening(port):
    import socket
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def proc_status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, v = line.split(":", 1)
            if k in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                out[k] = int(v.split()[0]) * 1024
    return out


def map_size(pid, data_file):
    """Bytes of address space LMDB mapped for data.mdb (its map size)."""
    total = 0
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            if line.rstrip().endswith(data_file):
                lo, hi = line.split()[0].split("-")
                total += int(hi, 16) - int(lo, 16)
    return total


def memory(dp):
    data = os.path.join(dp["prefix"], "dp", "data.mdb")
    st = os.stat(data)
    m = proc_status(dp["proc"].pid)
    m.update(data_mdb=st.st_size, map=map_size(dp["proc"].pid, data))
    return m


def start_dp(args, work, log, keys, limit_by, upstream_port):
    name = f"{keys}-keys-by-{limit_by}"
    conf = os.path.join(work, f"{name}.yaml")
    write_config(conf, keys, upstream_port, limit_by)
    prefix = os.path.join(work, name)
    shutil.rmtree(prefix, ignore_errors=True)
    port = free_port()
    env = dict(os.environ, TOLLGATE_PREFIX=prefix, TOLLGATE_DECLARATIVE_CONFIG=conf,
               TOLLGATE_PROXY_LISTEN=f"127.0.0.1:{port}",
               TOLLGATE_STATUS_LISTEN=f"127.0.0.1:{free_port()}",
               TOLLGATE_WORKER_THREADS="1", TOLLGATE_LOG_LEVEL="warn",
               TOLLGATE_PROXY_ACCESS_LOG="off")
    t = time.monotonic()
    p = start([args.bin, "dp", "start"], 0, log, env)
    wait_for(lambda: listening(port) or p.poll() is not None, LOAD_TIMEOUT, interval=0.5,
             what=f"the {name} data plane")
    if p.poll() is not None:
        sys.exit(f"the {name} data plane exited ({p.returncode}); see {log.name}")
    dp = {"keys": keys, "limit_by": limit_by, "proc": p, "port": port, "prefix": prefix,
          "load_s": time.monotonic() - t, "rounds": []}
    dp["after_load"] = memory(dp)
    return dp


def run_wrk(url, seconds, conns, keys):
    argv = ["taskset", "-c", "1", "wrk", "-t", "1", "-c", str(conns), "-d", f"{seconds}s",
            "--latency", "-s", LUA, url]
    out = subprocess.run(argv, capture_output=True, text=True, check=True,
                         env=dict(os.environ, TG_BENCH_KEYS=str(keys),
                                  TG_BENCH_TRAFFIC=TRAFFIC)).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.M))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rps, total, lat, int(non2xx.group(1)) if non2xx else 0


def ms(text):
    """wrk's latency ("812.00us", "2.84ms", "1.02s") in milliseconds."""
    v, unit = re.match(r"([\d.]+)(\w+)", text).groups()
    return float(v) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def measure(dp, args):
    url = f"http://127.0.0.1:{dp['port']}/"
    run_wrk(url, 2, args.connections, dp["keys"])  # warm-up: pools, caches
    pids = tree(dp["proc"].pid)
    c0 = cpu_seconds(pids)
    rps, total, lat, non2xx = run_wrk(url, args.seconds, args.connections, dp["keys"])
    used = cpu_seconds(pids) - c0
    dp["rounds"].append({"rps": rps, "p50": ms(lat["50"]), "p99": ms(lat["99"]),
                         "cpu_us": used / max(total, 1) * 1e6, "load": used / args.seconds,
                         "non2xx": non2xx})


def stop(proc):
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def callgrind(dp, args, log):
    """Instructions and simulated cache misses per request, which this shared machine's load
    does not move (wall-clock figures it does). The data plane is restarted under callgrind
    serving the store the run loaded (no declarative file: loading a million keys under
    valgrind would take an hour), instrumentation is switched on only around `--callgrind`
    seconds of wrk with random keys, after a warm-up, and the totals are divided by the
    requests wrk reports."""
    out = os.path.join(os.path.dirname(dp["prefix"]), f"callgrind-{os.path.basename(dp['prefix'])}.out")
    port = free_port()
    env = dict(os.environ, TOLLGATE_PREFIX=dp["prefix"], TOLLGATE_PROXY_LISTEN=f"127.0.0.1:{port}",
               TOLLGATE_STATUS_LISTEN=f"127.0.0.1:{free_port()}", TOLLGATE_WORKER_THREADS="1",
               TOLLGATE_LOG_LEVEL="warn", TOLLGATE_PROXY_ACCESS_LOG="off")
    env.pop("TOLLGATE_DECLARATIVE_CONFIG", None)
    ll = [f"--LL={args.cg_ll}"] if args.cg_ll else []
    p = start(["valgrind", "--tool=callgrind", "--cache-sim=yes", "--instr-atstart=no", *ll,
               f"--callgrind-out-file={out}", args.bin, "dp", "start"], 0, log, env)
    try:
        wait_for(lambda: listening(port) or p.poll() is not None, 600, interval=0.5,
                 what="the data plane under callgrind")
        if p.poll() is not None:
            sys.exit(f"the data plane under callgrind exited ({p.returncode}); see {log.name}")
        url = f"http://127.0.0.1:{port}/"
        control = ["callgrind_control", "-i", "on", str(p.pid)]
        if args.cg_warm:  # simulate the warm-up too, so the caches start warm; then count
            subprocess.run(control, check=True, capture_output=True)
        run_wrk(url, 3, 10, dp["keys"])  # warm-up: pools, caches, lazily mapped pages
        subprocess.run(["callgrind_control", "-z", str(p.pid)] if args.cg_warm else control,
                       check=True, capture_output=True)
        _, total, _, non2xx = run_wrk(url, args.callgrind, 10, dp["keys"])
        subprocess.run(["callgrind_control", "-i", "off", str(p.pid)], check=True,
                       capture_output=True)
    finally:
        stop(p)  # callgrind writes its totals at exit
    events = summary = None
    with open(out) as f:
        for line in f:
            if line.startswith("events:"):
                events = line.split()[1:]
            elif line.startswith("totals:") or (line.startswith("summary:") and not summary):
                # totals: what was counted since the last zeroing (--cg-warm); the summary
                # line is not right after callgrind_control -z
                summary = [int(v) for v in line.split()[1:]]
    ev = dict(zip(events, summary))
    n = max(total, 1)
    l1 = sum(ev.get(k, 0) for k in ("I1mr", "D1mr", "D1mw"))
    ll = sum(ev.get(k, 0) for k in ("ILmr", "DLmr", "DLmw"))
    dp["cg"] = {"requests": total, "non2xx": non2xx, "ir": ev["Ir"] / n, "l1": l1 / n,
                "ll": ll / n, "cycles": (ev["Ir"] + 10 * l1 + 100 * ll) / n}


def rate_limit_headers(dp):
    """Whether a fresh request still gets X-RateLimit-* headers (a counter was available)."""
    req = urllib.request.Request(f"http://127.0.0.1:{dp['port']}/",
                                 headers={"apikey": f"key-{dp['keys'] - 1}"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return any(h.lower().startswith("x-ratelimit-") for h in r.headers.keys())


def median_round(dp):
    by_rps = sorted(dp["rounds"], key=lambda r: r["rps"])
    return by_rps[len(by_rps) // 2]


def mib(b):
    return f"{b / 2**20:.1f} MiB"


def per_key(small, big, n, key):
    return (big[key] - small[key]) / (n - 1)


def spaced(n):
    return f"{n:,}".replace(",", " ")


def report_pair(one, many, args):
    n, big = many["keys"], spaced(many["keys"])
    a, b = median_round(one), median_round(many)
    load, traffic = "after_load", "after_traffic"
    rows = [
        ("requests/s (median round)", f"{a['rps']:.0f}", f"{b['rps']:.0f}",
         f"×{b['rps'] / a['rps']:.3f}"),
        ("p50 latency", f"{a['p50']:.2f} ms", f"{b['p50']:.2f} ms", ""),
        ("p99 latency", f"{a['p99']:.2f} ms", f"{b['p99']:.2f} ms", ""),
        ("proxy CPU µs/request", f"{a['cpu_us']:.1f}", f"{b['cpu_us']:.1f}",
         f"×{b['cpu_us'] / a['cpu_us']:.3f}"),
        ("proxy CPU load", f"{a['load']:.0%}", f"{b['load']:.0%}", ""),
        ("non-2xx responses", str(a["non2xx"]), str(b["non2xx"]), ""),
        ("start → serving (load)", f"{one['load_s']:.1f} s", f"{many['load_s']:.1f} s", ""),
        ("peak RSS during load (VmHWM)", mib(one[load]["VmHWM"]), mib(many[load]["VmHWM"]), ""),
        ("data.mdb size (map size)", f"{mib(one[load]['data_mdb'])} ({mib(one[load]['map'])})",
         f"{mib(many[load]['data_mdb'])} ({mib(many[load]['map'])})", ""),
    ]
    for when, label in ((load, "after load"), (traffic, "after traffic")):
        rows.append((f"RSS {label}: anon / file",
                     f"{mib(one[when]['RssAnon'])} / {mib(one[when]['RssFile'])}",
                     f"{mib(many[when]['RssAnon'])} / {mib(many[when]['RssFile'])}", ""))
    lines = [f"### Rate-limiting by {many['limit_by']}", "",
             f"| | 1 key | {big} keys | ratio |", "|---|---|---|---|"]
    lines += [f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} |" for r in rows]
    if "cg" in one and "cg" in many:
        x, y = one["cg"], many["cg"]
        lines += ["", f"Per request under callgrind ({x['requests']} and {y['requests']} requests, "
                  f"10 connections; non-2xx {x['non2xx']} and {y['non2xx']}):", "",
                  f"| per request | 1 key | {big} keys | ratio |", "|---|---|---|---|"]
        for key, label, fmt in (("ir", "instructions", ".0f"), ("l1", "L1 misses (I + D)", ".0f"),
                                ("ll", "last-level misses", ".2f"),
                                ("cycles", "cycle estimate (Ir + 10·L1m + 100·LLm)", ".0f")):
            lines.append(f"| {label} | {x[key]:{fmt}} | {y[key]:{fmt}} | ×{y[key] / x[key]:.2f} |")

    def every(dp, key, fmt):
        return ", ".join(format(r[key], fmt) for r in dp["rounds"])
    disk = per_key(one[load], many[load], n, "data_mdb")
    anon_load = per_key(one[load], many[load], n, "RssAnon")
    anon_traffic = per_key(one[traffic], many[traffic], n, "RssAnon")
    all_traffic = per_key(one[traffic], many[traffic], n, "VmRSS")
    yes = {True: "yes", False: "no"}
    lines += [
        "", f"Every round: requests/s 1 key {every(one, 'rps', '.0f')}; {big} keys "
        f"{every(many, 'rps', '.0f')}. CPU µs/request 1 key {every(one, 'cpu_us', '.1f')}; "
        f"{big} keys {every(many, 'cpu_us', '.1f')}.", "",
        f"Memory per key: data.mdb {disk:.0f} B + RSS (anon) {anon_load:.0f} B after the load = "
        f"**{disk + anon_load:.0f} B**; after the traffic {disk + anon_traffic:.0f} B "
        f"(target ≤ 256 B). Counting all of RSS after the traffic, data.mdb's pages that the "
        f"reads mapped included (the file a second time): {disk + all_traffic:.0f} B. "
        f"Throughput at {big} keys: ×{b['rps'] / a['rps']:.3f} of 1 key (target ≥ 0.95). "
        f"Rate-limit headers on a request after the runs: 1 key {yes[one['rl_headers']]}, "
        f"{big} keys {yes[many['rl_headers']]}.", ""]
    return lines


KEY_CHOICE = {"uniform": "a uniformly random key of the set",
              "zipf": "a key of the set drawn with Zipf's law, s = 1 (key i with probability "
                      "∝ 1/(i+1): about a fifth of the requests carry one of the 10 first keys)"}


def report(pairs, args):
    big = spaced(pairs[0][1]["keys"])
    lines = [f"## Key scale: 1 key vs {big} keys (issue 3)", "",
             f"`tests/bench/keys_bench.py`: DB-less data planes (1 worker thread) loaded from "
             f"generated declarative files: key-auth + rate-limiting (never reached) on the "
             f"route, and 1 or {big} consumers, each with its own key-auth credential. Proxy "
             f"pinned to CPU 0; wrk (1 thread, {args.connections} connections, {KEY_CHOICE[TRAFFIC]} "
             f"on every request) and an nginx upstream returning a 3-byte 200 on CPU 1. "
             f"{args.rounds} rounds of {args.seconds} s per data plane, alternating between all "
             f"of them, each after a 2 s warm-up; the median round (by requests/s) is shown.", ""]
    for one, many in pairs:
        lines += report_pair(one, many, args)
    return "\n".join(lines)


def plot(pairs, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    big = spaced(pairs[0][1]["keys"])
    dps = [dp for pair in pairs for dp in pair]
    names = [f"{'1 key' if d['keys'] == 1 else big + ' keys'}\nby {d['limit_by']}" for d in dps]
    fig, ax = plt.subplots(1, 4, figsize=(17, 4.2))
    for dp, name in zip(dps, names):
        ax[0].plot(range(1, len(dp["rounds"]) + 1), [r["rps"] for r in dp["rounds"]], marker="o",
                   label=name.replace("\n", ", "))
    ax[0].set(title="requests/s per round", xlabel="round", ylim=(0, None))
    ax[0].legend(fontsize=7)
    x = list(range(len(dps)))
    for i, key in enumerate(("p50", "p99")):
        ax[1].bar([v + (i - 0.5) * 0.35 for v in x], [median_round(d)[key] for d in dps], 0.35,
                  label=key)
    ax[1].set(title="latency, ms (median round)")
    ax[1].legend()
    ax[2].bar(x, [median_round(d)["cpu_us"] for d in dps], 0.5, color="tab:green")
    ax[2].set(title="proxy CPU µs per request (median round)")
    bottom = [0.0] * len(dps)
    for key, name in (("data_mdb", "data.mdb"), ("RssAnon", "RSS anon"),
                      ("RssFile", "RSS file (data.mdb mapped)")):
        vals = [d["after_traffic"][key] / 2**20 for d in dps]
        ax[3].bar(x, vals, 0.5, bottom=bottom, label=name)
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax[3].set(title="memory after the traffic, MiB")
    ax[3].legend(fontsize=7)
    for a in ax[1:]:
        a.set_xticks(x)
        a.set_xticklabels(names, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def reuse(args, nginx):
    """--reuse: callgrind only, over the stores an earlier run left in --work."""
    log = open(os.path.join(args.work, "bench-reuse.log"), "w")
    # the stores name the upstream port of the run that loaded them: listen there again
    first = os.path.join(args.work, f"1-keys-by-{args.limit_by.split(',')[0]}.yaml")
    with open(first) as f:
        up_port = int(re.search(r"url: http://127\.0\.0\.1:(\d+)", f.read()).group(1))
    upstream = start([nginx, "-c", nginx_conf(args.work, up_port, None, False)], 1, log)
    lines = [f"Per request under callgrind ({args.bin}, stores of {args.work}, "
             f"{args.callgrind} s, 10 connections):", "",
             "| per request | limit_by | keys | requests (non-2xx) | instructions "
             "| L1 misses (I + D) | last-level misses | cycle estimate |",
             "|---|---|---|---|---|---|---|---|"]
    try:
        wait_for(lambda: listening(up_port), 20, what="the upstream")
        for limit_by in args.limit_by.split(","):
            for keys in (1, args.keys):
                prefix = os.path.join(args.work, f"{keys}-keys-by-{limit_by}")
                if not os.path.exists(os.path.join(prefix, "dp", "data.mdb")):
                    sys.exit(f"no store in {prefix}: run once without --reuse")
                dp = {"keys": keys, "limit_by": limit_by, "prefix": prefix}
                callgrind(dp, args, log)
                cg = dp["cg"]
                print(f"[bench] callgrind, {keys} keys by {limit_by}: {cg}", file=sys.stderr)
                lines.append(f"| | {limit_by} | {spaced(keys)} | {cg['requests']} ({cg['non2xx']}) "
                             f"| {cg['ir']:.0f} "
                             f"| {cg['l1']:.0f} | {cg['ll']:.2f} | {cg['cycles']:.0f} |")
    finally:
        stop(upstream)
        log.close()
    print("\n".join(lines))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "tollgate"))
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--limit-by", default="consumer,service",
                    help="rate-limiting limit_by values to run, comma-separated "
                         "(consumer: a counter per consumer; service: one for all)")
    ap.add_argument("--work", help="directory for the generated files (default: a temp dir)")
    ap.add_argument("--callgrind", type=int, default=0, metavar="SECONDS",
                    help="after the runs, restart each data plane under callgrind and count "
                         "instructions and cache misses per request over this many seconds")
    ap.add_argument("--cg-ll", metavar="SIZE,ASSOC,LINE",
                    help="callgrind's simulated last-level cache (valgrind --LL); by default "
                         "what valgrind reads from the CPU, which on some VMs is far from the "
                         "real one (256 MiB direct-mapped here, against a 32 MiB L3)")
    ap.add_argument("--cg-warm", action="store_true",
                    help="simulate the caches during callgrind's warm-up too and count from "
                         "its end, so misses per request do not depend on how many requests "
                         "the run had to amortise cold caches over")
    ap.add_argument("--reuse", action="store_true",
                    help="with --work and --callgrind: skip the load and the wrk rounds, only run "
                         "callgrind over the stores an earlier run left in --work")
    ap.add_argument("--traffic", choices=sorted(KEY_CHOICE), default="uniform",
                    help="which key each request carries: uniform (every key equally likely, "
                         "the worst case for caches) or zipf (a few keys carry most requests, "
                         "as in real API traffic)")
    ap.add_argument("--out")
    ap.add_argument("--plot")
    args = ap.parse_args()
    global TRAFFIC
    TRAFFIC = args.traffic
    for tool in ("nginx", "wrk", "taskset") + (("valgrind", "callgrind_control")
                                               if args.callgrind else ()):
        if not shutil.which(tool) and not os.path.exists(f"/usr/sbin/{tool}"):
            sys.exit(f"{tool} is not installed (scripts/install-deps.sh installs it)")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if args.reuse:
        if not (args.work and args.callgrind):
            sys.exit("--reuse needs --work (an earlier run's) and --callgrind")
        return reuse(args, nginx)
    work = args.work or tempfile.mkdtemp(prefix="tg-keys-bench-")
    os.makedirs(work, exist_ok=True)
    log = open(os.path.join(work, "bench.log"), "w")
    procs = []
    try:
        up_port = free_port()
        procs.append(start([nginx, "-c", nginx_conf(work, up_port, None, False)], 1, log))
        wait_for(lambda: listening(up_port), 20, what="the upstream")
        pairs = []
        for limit_by in args.limit_by.split(","):
            pair = []
            for keys in (1, args.keys):
                dp = start_dp(args, work, log, keys, limit_by, up_port)
                procs.append(dp["proc"])
                pair.append(dp)
                print(f"[bench] {keys} keys by {limit_by}: serving after {dp['load_s']:.1f} s",
                      file=sys.stderr)
            pairs.append(pair)
        dps = [dp for pair in pairs for dp in pair]
        for r in range(args.rounds):
            for dp in dps:
                measure(dp, args)
                print(f"[bench] round {r + 1}, {dp['keys']} keys by {dp['limit_by']}: "
                      f"{dp['rounds'][-1]}", file=sys.stderr)
        for dp in dps:
            dp["after_traffic"] = memory(dp)
            dp["rl_headers"] = rate_limit_headers(dp)
        for dp in dps if args.callgrind else ():
            stop(dp["proc"])  # the store is not shared with a second data plane
            callgrind(dp, args, log)
            print(f"[bench] callgrind, {dp['keys']} keys by {dp['limit_by']}: {dp['cg']}",
                  file=sys.stderr)
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        log.close()
    text = report(pairs, args)
    print(text)
    if args.out:
        with open(args.out, "a") as f:
            f.write(text + "\n")
    if args.plot:
        plot(pairs, args.plot)


if __name__ == "__main__":
    main()
