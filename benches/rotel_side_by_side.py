#!/usr/bin/env python3
"""Our collector and Rotel, side by side, under the same load into the same sink.

For each load, runs each system in turn (the order alternates from run to run), drives
it with our `loadgen` over OTLP/gRPC on loopback, and reads the system's CPU time and
peak RSS from /proc. Both systems export to a Rotel started with `--exporter blackhole`
(a discard sink), so only the system under test differs.

Loads:
  rate10k   10 000 spans/s, plain forwarding (no compression)
  plain     flat out, plain forwarding
  gzip      flat out, gzip on export
  zstd      flat out, compressed export: ours zstd, Rotel gzip (it has no zstd)
  agent     flat out; ours runs the agent path (a health-check filter, batch, a trace
            router to two sinks), Rotel forwards plainly
  agent_k8s the shipped agent's path: memory limiter, k8sattributes against a fake
            Kubernetes API server (list and watch over HTTP, one pod at 127.0.0.1, which
            the connection associates every request with), the health filter, batch, and
            the router to two sinks; Rotel forwards plainly
  gateway   flat out; ours runs the shipped gateway's processors (memory limiter, tail
            sampler, attributes, redaction, batch) and exports what it keeps, Rotel
            forwards plainly

Rotel comes from the Python registry (`pip install rotel`, pinned in
benches/requirements-rotel.txt) into .venv, as .ci/run does for the Python tests.

    python3 benches/rotel_side_by_side.py --runs 3 --duration 10
    python3 benches/rotel_side_by_side.py --loads gzip --runs 5
    python3 benches/rotel_side_by_side.py --profile dist     # the shipping profile

Prints one markdown table per load: spans/s accepted, CPU-seconds per million spans
accepted, peak RSS and refused spans, each as min / median / max over the runs, and the
ratios of the medians, ours / Rotel.
"""

import argparse
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOADS = ["rate10k", "plain", "gzip", "zstd", "agent", "agent_k8s", "gateway"]
TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, seconds=20):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited early with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def peak_rss_mib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def ensure_rotel():
    venv = ROOT / ".venv"
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    agent = next(venv.glob("lib/python*/site-packages/rotel/rotel-agent"), None)
    if agent is None:
        subprocess.run(
            [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check",
             "-r", str(ROOT / "benches" / "requirements-rotel.txt")],
            check=True,
        )
        agent = next(venv.glob("lib/python*/site-packages/rotel/rotel-agent"))
    return agent


def ensure_ours(profile):
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    subprocess.run(
        ["cargo", "build", "--profile", profile, "--example", "loadgen", "--example",
         "collector"],
        cwd=ROOT, check=True,
    )
    return target / profile / "examples"


def rotel(agent, tmp, name, grpc, args):
    http = free_port()
    cmd = [str(agent), "start", "--otlp-grpc-endpoint", f"127.0.0.1:{grpc}",
           "--otlp-http-endpoint", f"127.0.0.1:{http}",
           "--pid-file", str(tmp / f"{name}.pid"), "--log-file", str(tmp / f"{name}.log"),
           *args]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                            stderr=open(tmp / f"{name}.err", "w"))


POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "shop-7d9-abc", "namespace": "shop", "uid": "u-shop",
                 "resourceVersion": "1", "labels": {"app.kubernetes.io/name": "shop"}},
    "spec": {"nodeName": "node-a", "containers": [{"name": "app", "image": "shop:1.0"}]},
    "status": {"podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}]},
}


def fake_api_server():
    """A Kubernetes API server that lists one pod and keeps watches open (no events)."""
    import http.server
    import json
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_GET(self):
            if "watch=true" in self.path or "watch=1" in self.path:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    while True:
                        time.sleep(1)
                except Exception:
                    return
            if self.path.startswith("/api/v1/pods"):
                body = {"apiVersion": "v1", "kind": "PodList",
                        "metadata": {"resourceVersion": "1"}, "items": [POD]}
            else:
                body = {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                        "reason": "NotFound", "code": 404}
            data = json.dumps(body).encode()
            self.send_response(200 if body.get("kind") != "Status" else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def kubeconfig(tmp, port):
    path = tmp / "kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters: [{{ name: fake, cluster: {{ server: 'http://127.0.0.1:{port}' }} }}]\n"
        "users: [{ name: bench, user: { token: bench } }]\n"
        "contexts: [{ name: bench, context: { cluster: fake, user: bench } }]\n"
        "current-context: bench\n"
    )
    return path


def our_config(load, grpc, sinks):
    receivers = (
        "receivers:\n  otlp:\n    protocols:\n"
        f"      grpc: {{ endpoint: 127.0.0.1:{grpc} }}\n"
    )
    telemetry = "  telemetry:\n    metrics: { level: none }\n    logs: { level: warn }\n"
    if load == "gateway":
        # The shipped gateway, its ports moved to loopback; its hand-off has no peers here.
        text = (ROOT / "docs/examples/gateway.yaml").read_text()
        override = (
            receivers
            + "extensions:\n  health_check: { endpoint: 127.0.0.1:0 }\n"
            + "processors:\n  tail_sampling:\n    handoff: null\n"
            + f"exporters:\n  otlp/backend:\n    endpoint: 127.0.0.1:{sinks[0]}\n"
            + "service:\n  extensions: [health_check]\n" + telemetry
        )
        return [text, override]
    compression = load if load in ("gzip", "zstd") else "none"
    if load in ("agent", "agent_k8s"):
        hosts = ", ".join(f"127.0.0.1:{p}" for p in sinks)
        k8s = load == "agent_k8s"
        front = (
            "  memory_limiter: { check_interval: 1s, limit_percentage: 80, spike_limit_percentage: 25 }\n"
            "  k8sattributes:\n    auth_type: kubeConfig\n"
            "    extract: { metadata: [k8s.pod.name, k8s.pod.uid, k8s.namespace.name, k8s.node.name, service.name] }\n"
            "    pod_association: [{ sources: [{ from: connection }] }]\n"
            if k8s else ""
        )
        chain = "memory_limiter, k8sattributes, filter/health, batch" if k8s else "filter/health, batch"
        return [
            receivers
            + "processors:\n" + front + "  filter/health:\n    error_mode: ignore\n    traces:\n      span:\n"
            + "        - 'attributes[\"http.route\"] == \"/healthz\"'\n"
            + "        - 'IsMatch(name, \"^(GET|HEAD) /(healthz|readyz|livez|metrics)$\")'\n"
            + "  batch: { send_batch_size: 8192, timeout: 200ms }\n"
            + "exporters:\n  loadbalancing:\n    protocol: { otlp: { tls: { insecure: true }, "
            + "compression: none } }\n"
            + f"    resolver: {{ static: {{ hostnames: [{hosts}] }} }}\n"
            + "service:\n  pipelines:\n    traces:\n      receivers: [otlp]\n"
            + f"      processors: [{chain}]\n      exporters: [loadbalancing]\n"
            + telemetry
        ]
    return [
        receivers
        + "processors:\n  batch: { send_batch_size: 8192, timeout: 200ms }\n"
        + f"exporters:\n  otlp:\n    endpoint: 127.0.0.1:{sinks[0]}\n"
        + f"    tls: {{ insecure: true }}\n    compression: {compression}\n"
        + "service:\n  pipelines:\n    traces:\n      receivers: [otlp]\n"
        + "      processors: [batch]\n      exporters: [otlp]\n" + telemetry
    ]


def measure(system, load, args, agent, bins, tmp):
    agent_path = load in ("agent", "agent_k8s")
    sink_ports = [free_port() for _ in range(2 if agent_path and system == "ours" else 1)]
    sinks = [rotel(agent, tmp, f"sink{i}", p, ["--exporter", "blackhole"])
             for i, p in enumerate(sink_ports)]
    for s, p in zip(sinks, sink_ports):
        wait_port(p, s)
    grpc = free_port()
    api = None
    if system == "ours":
        cmd = [str(bins / "collector")]
        for i, text in enumerate(our_config(load, grpc, sink_ports)):
            path = tmp / f"ours-{load}-{i}.yaml"
            path.write_text(text)
            cmd += ["--config", str(path)]
        env = dict(os.environ)
        if load == "agent_k8s":
            api = fake_api_server()
            env["KUBECONFIG"] = str(kubeconfig(tmp, api.server_address[1]))
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                                stderr=open(tmp / "ours.err", "w"), env=env)
    else:
        compression = "gzip" if load in ("gzip", "zstd") else "none"
        proc = rotel(agent, tmp, "rotel", grpc,
                     ["--exporter", "otlp", "--otlp-exporter-endpoint",
                      f"http://127.0.0.1:{sink_ports[0]}",
                      "--otlp-exporter-compression", compression])
    try:
        wait_port(grpc, proc)
        time.sleep(0.5)
        before = cpu_seconds(proc.pid)
        load_args = [str(bins / "loadgen"), "--endpoint", f"http://127.0.0.1:{grpc}",
                     "--protocol", "grpc", "--duration", str(args.duration)]
        if load == "rate10k":
            load_args += ["--rate", "10000"]
        out = subprocess.run(load_args, capture_output=True, text=True, check=True).stdout
        cpu = cpu_seconds(proc.pid) - before
        rss = peak_rss_mib(proc.pid)
    finally:
        stop(proc)
        for s in sinks:
            stop(s)
        if api is not None:
            api.shutdown()
            api.server_close()
    m = re.search(r"accepted\s+(\d+) spans, (\d+) spans/s \((\d+) refused", out)
    if not m:
        raise RuntimeError(f"unexpected loadgen output:\n{out}")
    accepted, per_s, refused = int(m.group(1)), int(m.group(2)), int(m.group(3))
    return {
        "spans_per_s": per_s,
        "cpu_per_m": cpu / (accepted / 1e6) if accepted else float("nan"),
        "rss_mib": rss,
        "refused": refused,
    }


def spread(values, fmt):
    values = sorted(values)
    return f"{fmt(values[0])} / **{fmt(statistics.median(values))}** / {fmt(values[-1])}"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--duration", type=int, default=10)
    p.add_argument("--loads", default=",".join(LOADS))
    p.add_argument("--profile", default="release",
                   help="cargo profile of our binaries (release, or dist: thin LTO)")
    args = p.parse_args()
    loads = [l for l in args.loads.split(",") if l]
    unknown = [l for l in loads if l not in LOADS]
    if unknown:
        p.error(f"unknown loads {unknown}; known: {LOADS}")
    agent = ensure_rotel()
    bins = ensure_ours(args.profile)
    with tempfile.TemporaryDirectory(prefix="rotel-side-by-side-") as t:
        tmp = Path(t)
        for load in loads:
            results = {"ours": [], "rotel": []}
            for run in range(args.runs):
                order = ["ours", "rotel"] if run % 2 == 0 else ["rotel", "ours"]
                for system in order:
                    r = measure(system, load, args, agent, bins, tmp)
                    results[system].append(r)
                    print(f"# {load} run {run + 1} {system}: {r}", file=sys.stderr)
            print(f"\n### {load} ({args.runs} alternating runs of {args.duration} s; "
                  "min / **median** / max)\n")
            print("| system | spans/s accepted | CPU-s per M spans | peak RSS MiB | refused |")
            print("|---|---|---|---|---|")
            for system in ["ours", "rotel"]:
                rs = results[system]
                print(f"| {system} | {spread([r['spans_per_s'] for r in rs], lambda v: f'{v:,.0f}')} "
                      f"| {spread([r['cpu_per_m'] for r in rs], lambda v: f'{v:.2f}')} "
                      f"| {spread([r['rss_mib'] for r in rs], lambda v: f'{v:.0f}')} "
                      f"| {spread([r['refused'] for r in rs], lambda v: f'{v:,.0f}')} |")
            med = lambda s, k: statistics.median(r[k] for r in results[s])
            ratio = lambda k: med("ours", k) / med("rotel", k) if med("rotel", k) else float("nan")
            print(f"| ours / rotel | {ratio('spans_per_s'):.2f}x | {ratio('cpu_per_m'):.2f}x "
                  f"| {ratio('rss_mib'):.2f}x | |")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
