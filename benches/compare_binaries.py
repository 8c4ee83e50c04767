#!/usr/bin/env python3
"""Run two builds of one criterion bench side by side: the same filter, alternating the
binaries run after run, and print each bench's median of the middle estimates as a
Markdown table row (before, after, after / before).

    python3 benches/compare_binaries.py OLD_BIN NEW_BIN FILTER [RUNS]

Build the old binaries first (`git worktree add /tmp/old REV`, then `cargo bench --no-run`
there, and copy them aside: both builds share the target directory's file names).
"""
import subprocess, sys, re, statistics
old, new, filt = sys.argv[1:4]
runs = int(sys.argv[4]) if len(sys.argv) > 4 else 3
res = {"old": {}, "new": {}}
unit = {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1}
for r in range(runs):
    for name, b in ([("old", old), ("new", new)] if r % 2 == 0 else [("new", new), ("old", old)]):
        out = subprocess.run([b, "--bench", "--warm-up-time", "1", "--measurement-time", "3", "--noplot", filt],
                             capture_output=True, text=True).stdout
        cur = None
        for line in out.splitlines():
            if line and not line.startswith(" ") and "/" in line and not line.startswith("Bench"):
                cur = line.split()[0]
            m = re.search(r"time:\s+\[\S+ \S+ (\S+) (\S+) \S+ \S+\]", line)
            if m and cur:
                res[name].setdefault(cur, []).append(float(m.group(1)) * unit[m.group(2)])
                cur = None
for k in sorted(res["new"]):
    o = statistics.median(res["old"].get(k, [float("nan")]))
    n = statistics.median(res["new"][k])
    print(f"| `{k}` | {o*1e3:.3f} ms | {n*1e3:.3f} ms | {n/o:.2f}x |")
