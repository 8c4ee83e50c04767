#!/usr/bin/env python3
"""The public API of each crate as a sorted list of paths, from rustdoc's JSON output.

    python3 .ci/public_api.py check    # compare with api/<crate>.txt, fail on a difference
    python3 .ci/public_api.py update   # rewrite api/<crate>.txt

Each line is `kind path`: modules, types, traits, functions, constants, macros, the public
fields and variants of types, the methods of inherent impls, the items of traits, and the
traits a type implements (`impl Trait for Type`, without auto and blanket impls).
Re-exports of other crates' items are listed as `use`. A change to the surface then shows
in review as a change to a text file, and CI fails until the snapshot is updated on
purpose. rustdoc's JSON output is unstable, so it is built with RUSTC_BOOTSTRAP=1.
"""

import json
import os
import subprocess
import sys

CRATES = [
    ("otel-pipeline-core", "otel_pipeline_core"),
    ("otel-receivers", "otel_receivers"),
    ("otel-processors", "otel_processors"),
    ("otel-exporters", "otel_exporters"),
    ("otel-k8s", "otel_k8s"),
    ("otel-pipeline", "otel_pipeline"),
]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def target_dir():
    out = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--no-deps"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout
    return json.loads(out)["target_directory"]


def build_json(package, lib):
    env = dict(os.environ, RUSTC_BOOTSTRAP="1")
    subprocess.run(
        ["cargo", "rustdoc", "-q", "-p", package, "--lib", "--all-features", "--",
         "-Z", "unstable-options", "--output-format", "json"],
        cwd=ROOT, env=env, check=True,
    )
    with open(os.path.join(target_dir(), "doc", lib + ".json")) as f:
        return json.load(f)


def kind_of(item):
    inner = item.get("inner") or {}
    return next(iter(inner), "?") if isinstance(inner, dict) else str(inner)


def type_name(t):
    """A short spelling of a rustdoc type, enough to tell impls apart."""
    if not isinstance(t, dict):
        return str(t)
    if "resolved_path" in t:
        p = t["resolved_path"]
        name = p.get("path") or p.get("name") or "?"
        args = p.get("args") or {}
        ab = args.get("angle_bracketed") if isinstance(args, dict) else None
        if ab and ab.get("args"):
            parts = []
            for a in ab["args"]:
                if isinstance(a, dict) and "type" in a:
                    parts.append(type_name(a["type"]))
                else:
                    parts.append("_")
            name += "<" + ", ".join(parts) + ">"
        return name
    if "generic" in t:
        return t["generic"]
    if "primitive" in t:
        return t["primitive"]
    if "borrowed_ref" in t:
        return "&" + type_name(t["borrowed_ref"].get("type"))
    if "tuple" in t:
        return "(" + ", ".join(type_name(x) for x in t["tuple"]) + ")"
    if "slice" in t:
        return "[" + type_name(t["slice"]) + "]"
    return next(iter(t), "?")


def surface(doc):
    index = doc["index"]
    lines = set()

    def item(i):
        return index.get(str(i)) if not isinstance(i, str) else index.get(i)

    def impls(it, path):
        inner = it["inner"][kind_of(it)]
        for impl_id in inner.get("impls", []) or []:
            imp = item(impl_id)
            if not imp:
                continue
            body = imp["inner"].get("impl", {})
            if body.get("is_synthetic") or body.get("blanket_impl"):
                continue
            trait = body.get("trait")
            if trait:
                lines.add("impl %s for %s" % (trait.get("path") or trait.get("name"), path))
                continue
            for m in body.get("items", []):
                mi = item(m)
                if mi and mi.get("visibility") == "public" and mi.get("name"):
                    lines.add("%s %s::%s" % (kind_of(mi), path, mi["name"]))

    def walk(module_id, prefix, seen):
        if module_id in seen:
            return
        seen.add(module_id)
        mod = item(module_id)
        for child_id in mod["inner"]["module"].get("items", []):
            child = item(child_id)
            if not child or child.get("visibility") != "public":
                continue
            kind = kind_of(child)
            if kind == "use":
                use = child["inner"]["use"]
                target = item(use["id"]) if use.get("id") is not None else None
                if use.get("is_glob"):
                    if target and kind_of(target) == "module":
                        walk(use["id"], prefix, seen)
                    else:
                        lines.add("use %s::* in %s" % (use["source"], prefix))
                    continue
                if target is None:
                    lines.add("use %s as %s::%s" % (use["source"], prefix, use["name"]))
                    continue
                record(target, "%s::%s" % (prefix, use["name"]), seen, use["id"])
                continue
            record(child, "%s::%s" % (prefix, child["name"]), seen, child_id)

    def record(it, path, seen, it_id):
        kind = kind_of(it)
        if kind == "impl":
            return
        lines.add("%s %s" % (kind, path))
        inner = it["inner"][kind]
        if kind == "module":
            walk(it_id, path, seen)
        elif kind == "struct":
            plain = (inner.get("kind") or {}).get("plain") if isinstance(inner.get("kind"), dict) else None
            for f in (plain or {}).get("fields", []) or []:
                fi = item(f)
                if fi and fi.get("visibility") == "public":
                    lines.add("field %s::%s" % (path, fi["name"]))
            impls(it, path)
        elif kind == "enum":
            for v in inner.get("variants", []) or []:
                vi = item(v)
                if vi:
                    lines.add("variant %s::%s" % (path, vi["name"]))
            impls(it, path)
        elif kind == "trait":
            for t in inner.get("items", []) or []:
                ti = item(t)
                if ti:
                    lines.add("%s %s::%s" % (kind_of(ti), path, ti["name"]))
        elif kind == "union":
            impls(it, path)

    root = doc["root"]
    walk(root, item(root)["name"], set())
    return sorted(lines)


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else "check"
    os.makedirs(os.path.join(ROOT, "api"), exist_ok=True)
    changed = []
    for package, lib in CRATES:
        text = "\n".join(surface(build_json(package, lib))) + "\n"
        path = os.path.join(ROOT, "api", package + ".txt")
        old = open(path).read() if os.path.exists(path) else ""
        if old != text:
            changed.append(package)
            if mode == "update":
                with open(path, "w") as f:
                    f.write(text)
            else:
                diff = subprocess.run(
                    ["diff", "-u", path, "-"], input=text, capture_output=True, text=True
                ).stdout
                sys.stdout.write(diff)
    if changed and mode != "update":
        print("public API changed in %s: review it, then run `python3 .ci/public_api.py update`"
              % ", ".join(changed))
        sys.exit(1)
    print("public API: %s" % ("updated " + ", ".join(changed) if changed else "unchanged"))


if __name__ == "__main__":
    main()
