#!/usr/bin/env python3
"""The crate rules of docs/ARCHITECTURE.md, checked on `cargo metadata`.

Each workspace crate may depend (normal dependencies, build ones too) only
on the workspace crates listed for it below; test-support is for tests and
benchmarks only; the gateway's whole dependency graph holds no broker; the
broker library holds none of its bench's dependencies. Exits 1 naming
every broken rule.
"""
import json
import subprocess
import sys

# Workspace crates each crate may use as a normal dependency.
MAY_USE = {
    "broker": set(),
    "stock": set(),
    "service-kit": set(),
    "test-support": set(),
    "loadtest": set(),
    "seckill": {"broker", "stock", "service-kit"},
    "order-worker": {"broker", "seckill", "stock", "service-kit"},
    "gateway": {"stock", "service-kit"},
    "flashsale": {"broker", "stock", "seckill", "order-worker", "gateway", "loadtest", "service-kit"},
    "broker-bench": {"broker"},
    "seckill-bench": {"broker", "loadtest", "seckill", "service-kit", "test-support"},
    "gateway-bench": {"gateway", "stock", "service-kit", "loadtest"},
}
# What only the broker's bench needs: never the broker library's.
BENCH_ONLY = {"async-nats", "redis", "clap", "hdrhistogram", "tempfile", "anyhow"}
# Crates whose whole normal dependency graph must not reach the broker.
NO_BROKER_BELOW = {"gateway", "stock", "loadtest", "service-kit"}


def main():
    metadata = json.loads(
        subprocess.check_output(["cargo", "metadata", "--format-version", "1", "--locked"])
    )
    members = set(metadata["workspace_members"])
    by_id = {p["id"]: p for p in metadata["packages"]}
    names = {by_id[m]["name"] for m in members}
    failures = []

    unknown = names - MAY_USE.keys()
    for name in sorted(unknown):
        failures.append(f"{name}: a workspace crate with no line in .ci/crate_rules.py")

    for member in members:
        package = by_id[member]
        name = package["name"]
        for dep in package["dependencies"]:
            kind = dep["kind"]  # None (normal), "dev" or "build"
            if dep["name"] in names and kind != "dev" and dep["name"] not in MAY_USE.get(name, set()):
                failures.append(f"{name} depends on {dep['name']}, which it may not use")
            if name == "broker" and kind is None and dep["name"] in BENCH_ONLY:
                failures.append(f"broker carries {dep['name']}, which only its bench uses")

    # Normal (and build) edges of the resolved graph.
    edges = {}
    for node in metadata["resolve"]["nodes"]:
        edges[node["id"]] = [
            d["pkg"]
            for d in node["deps"]
            if any(k["kind"] != "dev" for k in d["dep_kinds"])
        ]
    for member in members:
        name = by_id[member]["name"]
        if name not in NO_BROKER_BELOW:
            continue
        seen, stack = set(), [member]
        while stack:
            current = stack.pop()
            for dep in edges.get(current, []):
                if dep not in seen:
                    seen.add(dep)
                    stack.append(dep)
        reached = sorted(by_id[d]["name"] for d in seen if d in members)
        if "broker" in reached:
            failures.append(f"{name} reaches the broker through {reached}")

    for failure in failures:
        print(f"crate rule broken: {failure}")
    if failures:
        sys.exit(1)
    print(f"crate rules hold for {len(members)} workspace crates")


if __name__ == "__main__":
    main()
