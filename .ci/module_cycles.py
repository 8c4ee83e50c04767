#!/usr/bin/env python3
"""Fail when two modules of a crate import each other.

    python3 .ci/module_cycles.py [crate_dir ...]

A module depends on another when its code (not its comments, not its test modules) names
it: `crate::a::b`, `super::x`, or a child `child::x`. A parent's `mod child;` and
`pub use child::...` re-exports are not dependencies: they publish the child, they do not
use it. A `super::X` that the parent only re-exports from a sibling is a dependency on
that sibling. Two modules that depend on each other are a cycle: shared types belong in a
leaf module that both import.
"""

import itertools
import os
import re
import sys

CRATES = ["otel-pipeline-core", "otel-receivers", "otel-processors", "otel-exporters",
          "otel-k8s"]


def modules(src):
    out = {}
    for root, _, files in os.walk(src):
        for f in files:
            if f.endswith(".rs"):
                path = os.path.join(root, f)
                rel = os.path.relpath(path, src)[:-3]
                name = rel.replace("/mod", "").replace("/", "::")
                out["crate" if name == "lib" else name] = open(path).read()
    return out


def code(text):
    """The module's own code: no test modules (they come last), no comment lines."""
    for marker in ("#[cfg(test)]\nmod ", "#[cfg(all(test"):
        i = text.find(marker)
        if i >= 0:
            text = text[:i]
    return "\n".join(l for l in text.split("\n") if not l.strip().startswith("//"))


def reexports(text):
    """name -> child module, for `pub use child::{A, B}` / `pub use child::A` lines."""
    out = {}
    for m in re.finditer(r"pub(?:\(crate\))? use (\w+)::(\{[^}]*\}|\w+)", text, re.S):
        names = re.findall(r"\b(\w+)\b", m.group(2))
        for n in names:
            out[n] = m.group(1)
    return out


def parent_of(name):
    return "crate" if "::" not in name else name.rsplit("::", 1)[0]


def child(parent, leaf):
    return leaf if parent == "crate" else parent + "::" + leaf


def deps(name, mods):
    text = code(mods[name])
    names = set(mods)
    found = set()
    for m in re.finditer(r"crate::(\w+(?:::\w+)*)", text):
        parts = m.group(1).split("::")
        for i in range(len(parts), 0, -1):
            cand = "::".join(parts[:i])
            if cand in names:
                found.add(cand)
                break
    up = parent_of(name)
    up_exports = reexports(code(mods.get(up, "")))
    for m in re.finditer(r"\bsuper::(\{[^}]*\}|\w+)", text, re.S):
        for item in re.findall(r"\b(\w+)\b", m.group(1)):
            if item == "self":
                found.add(up)
            elif child(up, item) in names:
                found.add(child(up, item))
            elif item in up_exports and child(up, up_exports[item]) in names:
                found.add(child(up, up_exports[item]))
            else:
                found.add(up)
    # Children used in code; a parent's `mod x;` and `pub use x::...` lines do not count.
    body = "\n".join(l for l in text.split("\n")
                     if not re.match(r"\s*(pub(\(crate\))? )?(mod \w+;|use \w+::)", l)
                     or re.match(r"\s*use (self|super|crate)::", l) is None
                     and not re.match(r"\s*(pub(\(crate\))? )?(mod \w+;|pub(\(crate\))? use \w+::)", l))
    for n in names:
        if n != name and parent_of(n) == name:
            leaf = n.rsplit("::", 1)[-1]
            if re.search(r"(?<![:\w])" + leaf + r"::", body):
                found.add(n)
    found.discard(name)
    return found


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cycles = []
    for crate in sys.argv[1:] or CRATES:
        mods = modules(os.path.join(root, crate, "src"))
        graph = {n: deps(n, mods) for n in mods}
        for a, b in itertools.combinations(sorted(graph), 2):
            if b in graph[a] and a in graph[b]:
                cycles.append("%s: %s <-> %s" % (crate, a, b))
    for c in cycles:
        print("module cycle:", c)
    if cycles:
        sys.exit(1)
    print("no module cycles")


if __name__ == "__main__":
    main()
