#!/usr/bin/env python3
"""Proxy benchmark (not a test): Tollgate (key-auth + rate-limiting) vs nginx vs HAProxy.

Same machine, same upstream. The proxy under test is pinned to CPU 0; the
load generator (wrk) and the upstream (an nginx returning a small 200) share
CPU 1. For each proxy: requests/s, p50/p99 latency, and the proxy's CPU
microseconds per request (utime+stime from /proc/<pid>/stat over the run,
summed over the proxy's processes), plus what the same requests cost on CPU 1
(wrk and the upstream together): requests/s is bounded by that core, so a
proxy that sends bigger messages gets fewer requests/s through the same
client and upstream. Tollgate runs DB-less from a declarative file with
key-auth and a rate limit that is never reached; nginx does plain proxy_pass
with upstream keep-alive; HAProxy plain HTTP mode with keep-alive. No proxy
writes an access log.

The machine this runs on is shared and its speed drifts by tens of percent
within minutes, so the proxies are measured in --rounds interleaved rounds
(each round measures all three, starting with a different one) and every
figure is the median over the rounds, with the range; the ratios are taken
within each round and their median reported.
Prints a Markdown section; --out appends it to a file.
"""
import argparse
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from harness.procs import free_port, wait_for  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])
        except FileNotFoundError:
            pass
    return total / TICKS


def tree(pid):
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    pids = [pid]
    for child in out:
        pids += tree(int(child))
    return pids


def start(argv, cpu, log, env=None):
    return subprocess.Popen(["taskset", "-c", str(cpu)] + argv, stdout=log, stderr=log,
                            env=env, start_new_session=True)


def wait_port(port):
    import socket

    def up():
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0
    wait_for(up, 20, what=f"port {port}")


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_wrk(url, seconds, conns, headers):
    """wrk's figures, and the CPU seconds wrk itself used (it is a waited-for child)."""
    argv = ["taskset", "-c", "1", "wrk", "-t", "1", "-c", str(conns), "-d", f"{seconds}s", "--latency"]
    for h in headers:
        argv += ["-H", h]
    c0 = children_cpu()
    out = subprocess.run(argv + [url], capture_output=True, text=True, check=True).stdout
    wrk_cpu = children_cpu() - c0
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.M))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rps, total, lat, int(non2xx.group(1)) if non2xx else 0, wrk_cpu


def measure(proxy, upstream_pid, args, warmup):
    name, pid, url, headers = proxy
    run_wrk(url, warmup, args.connections, headers)  # warm-up: pools, caches
    pids, up_pids = tree(pid), tree(upstream_pid)
    c0, u0 = cpu_seconds(pids), cpu_seconds(up_pids)
    rps, total, lat, non2xx, wrk_cpu = run_wrk(url, args.seconds, args.connections, headers)
    used, up_used = cpu_seconds(pids) - c0, cpu_seconds(up_pids) - u0
    n = max(total, 1)
    return {"name": name, "rps": rps, "p50": lat.get("50"), "p99": lat.get("99"),
            "cpu_us": used / n * 1e6, "load_us": (up_used + wrk_cpu) / n * 1e6, "non2xx": non2xx}


def latency_ms(s):
    """wrk's "1.23ms" / "850.00us" / "1.02s" as milliseconds."""
    m = re.match(r"([\d.]+)(us|ms|s)$", s or "")
    if not m:
        return float("nan")
    return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]


def spread(values, fmt):
    """median, with the range when there is more than one round"""
    med = statistics.median(values)
    if len(values) == 1:
        return fmt.format(med)
    return f"{fmt.format(med)} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def nginx_conf(work, listen, upstream_port, proxy):
    body = (f"""
        upstream up {{ server 127.0.0.1:{upstream_port}; keepalive 64; }}
        server {{ listen 127.0.0.1:{listen}; location / {{
            proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }} }}"""
            if proxy else f"""
        server {{ listen 127.0.0.1:{listen}; location / {{ return 200 "ok\\n"; }} }}""")
    path = os.path.join(work, f"nginx-{listen}.conf")
    with open(path, "w") as f:
        f.write(f"""worker_processes 1; daemon off; pid {work}/nginx-{listen}.pid;
error_log {work}/nginx-{listen}.err; events {{ worker_connections 4096; }}
http {{ access_log off; keepalive_requests 100000; {body} }}
""")
    return path


def haproxy_conf(work, listen, upstream_port):
    path = os.path.join(work, "haproxy.cfg")
    with open(path, "w") as f:
        f.write(f"""global
  nbthread 1
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
frontend fe
  bind 127.0.0.1:{listen}
  default_backend be
backend be
  http-reuse always
  server up 127.0.0.1:{upstream_port}
""")
    return path


def tollgate_conf(work, listen, upstream_port):
    path = os.path.join(work, "kong.yaml")
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
    config: {{ hour: 1000000000, limit_by: consumer }}
consumers:
- username: bench
  keyauth_credentials:
  - key: bench-key
""")
    return path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "tollgate"))
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out")
    ap.add_argument("--plot", help="write a PNG of the results here")
    args = ap.parse_args()
    for tool in ("nginx", "haproxy", "wrk", "taskset"):
        if not shutil.which(tool) and not os.path.exists(f"/usr/sbin/{tool}"):
            sys.exit(f"{tool} is not installed (scripts/install-deps.sh installs it)")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    work = tempfile.mkdtemp(prefix="tg-proxy-bench-")
    log = open(os.path.join(work, "bench.log"), "w")
    procs = []
    rounds = []
    try:
        up_port = free_port()
        upstream = start([nginx, "-c", nginx_conf(work, up_port, None, False)], 1, log)
        procs.append(upstream)
        wait_port(up_port)
        proxies = []

        port = free_port()
        env = dict(os.environ, TOLLGATE_PREFIX=os.path.join(work, "dp"),
                   TOLLGATE_DECLARATIVE_CONFIG=tollgate_conf(work, port, up_port),
                   TOLLGATE_PROXY_LISTEN=f"127.0.0.1:{port}", TOLLGATE_STATUS_LISTEN=f"127.0.0.1:{free_port()}",
                   TOLLGATE_WORKER_THREADS="1", TOLLGATE_LOG_LEVEL="warn",
                   TOLLGATE_PROXY_ACCESS_LOG="off")  # parity: nginx and HAProxy log nothing either
        p = start([args.bin, "dp", "start"], 0, log, env)
        procs.append(p)
        wait_port(port)
        proxies.append(("Tollgate (key-auth + rate-limiting)", p.pid, f"http://127.0.0.1:{port}/",
                        ["apikey: bench-key"]))

        port = free_port()
        p = start([nginx, "-c", nginx_conf(work, port, up_port, True)], 0, log)
        procs.append(p)
        wait_port(port)
        proxies.append(("nginx proxy_pass (keep-alive)", p.pid, f"http://127.0.0.1:{port}/", []))

        port = free_port()
        p = start([haproxy, "-f", haproxy_conf(work, port, up_port)], 0, log)
        procs.append(p)
        wait_port(port)
        proxies.append(("HAProxy (keep-alive)", p.pid, f"http://127.0.0.1:{port}/", []))

        for r in range(args.rounds):
            got = {}
            for k in range(len(proxies)):  # each round starts with another proxy
                i = (r + k) % len(proxies)
                got[i] = measure(proxies[i], upstream.pid, args, 2 if r == 0 else 1)
            rounds.append([got[i] for i in range(len(proxies))])
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        log.close()

    rps_ratio = [rd[0]["rps"] / max(x["rps"] for x in rd[1:]) for rd in rounds]
    cpu_ratio = [rd[0]["cpu_us"] / min(x["cpu_us"] for x in rd[1:]) for rd in rounds]
    lines = ["## Proxy: Tollgate vs nginx vs HAProxy (issue 3)", "",
             f"Proxy pinned to CPU 0, wrk (1 thread, {args.connections} connections) and an nginx upstream "
             f"returning a 3-byte 200 on CPU 1; {args.rounds} interleaved round(s) of {args.seconds} s per "
             f"proxy; medians (and ranges) over the rounds.", "",
             "| proxy | requests/s | p50 | p99 | proxy CPU µs/request | CPU 1 (wrk + upstream) µs/request "
             "| non-2xx |", "|---|---|---|---|---|---|---|"]
    for i in range(len(rounds[0])):
        rs = [rd[i] for rd in rounds]
        p50 = statistics.median(latency_ms(x["p50"]) for x in rs)
        p99 = statistics.median(latency_ms(x["p99"]) for x in rs)
        lines.append(f"| {rs[0]['name']} | {spread([x['rps'] for x in rs], '{:.0f}')} | {p50:.2f}ms "
                     f"| {p99:.2f}ms | {spread([x['cpu_us'] for x in rs], '{:.1f}')} "
                     f"| {spread([x['load_us'] for x in rs], '{:.1f}')} | {sum(x['non2xx'] for x in rs)} |")
    lines += ["", f"Tollgate vs the better of nginx/HAProxy in the same round: requests/s "
              f"×{spread(rps_ratio, '{:.2f}')} (target ≥ 1.0), CPU per request "
              f"×{spread(cpu_ratio, '{:.2f}')} (target ≤ 1.0).", ""]
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "a") as f:
            f.write(text + "\n")
    if args.plot:
        plot(rounds, rps_ratio, cpu_ratio, args.plot)


def plot(rounds, rps_ratio, cpu_ratio, path):
    """Per proxy: requests/s, proxy CPU and CPU 1 per request (median, range as error bars),
    and the same-round ratios against the better of nginx/HAProxy with the targets."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = [rd["name"].split(" (")[0] for rd in rounds[0]]
    fig, ax = plt.subplots(1, 4, figsize=(17, 4.2))
    colors = ["tab:green", "tab:blue", "tab:orange"]
    for a, key, title in ((ax[0], "rps", "requests/s"),
                          (ax[1], "cpu_us", "proxy CPU µs/request"),
                          (ax[2], "load_us", "CPU 1 (wrk + upstream) µs/request")):
        for i in range(len(names)):
            vals = [rd[i][key] for rd in rounds]
            med = statistics.median(vals)
            a.bar(i, med, 0.6, color=colors[i % len(colors)],
                  yerr=[[med - min(vals)], [max(vals) - med]], capsize=4)
        a.set_xticks(range(len(names)))
        a.set_xticklabels(names, fontsize=8)
        a.set_title(f"{title}\n(median, range over rounds)", fontsize=10)
    x = range(1, len(rounds) + 1)
    ax[3].plot(x, rps_ratio, marker="o", label="requests/s (target ≥ 1)")
    ax[3].plot(x, cpu_ratio, marker="s", label="CPU per request (target ≤ 1)")
    ax[3].axhline(1.0, color="grey", linestyle="--", linewidth=1)
    ax[3].set_title("Tollgate / better of nginx, HAProxy\n(same round)", fontsize=10)
    ax[3].set_xlabel("round")
    ax[3].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
