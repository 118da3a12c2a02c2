"""The sharded-statistics recipe of docs/scale-out.md on a local Dask distributed cluster:
one CLI task per shard writes partial results, one more task runs `jacobian combine`, and
the pieces are also merged with numpy by the formulas the docs give.

Usage: stats_on_dask.py SPEC.json   (written by test/dask.stats.test.ts)
SPEC: {"node", "bin", "model", "input", "dir", "shards", "workers", "extra": [...],
       "single": "stats.npz", "timeout": seconds}
Prints one JSON line: what ran where, and the comparisons.
"""
import json
import os
import subprocess

from cluster import cluster_client, read_spec, run_per_shard


def run_shard(spec, index):
    """One task: the CLI for shard `index`, in a worker process, writing part-<index>.npz."""
    out = os.path.join(spec["dir"], f"part-{index}.npz")
    cmd = [spec["node"], spec["bin"], spec["model"], "-i", spec["input"],
           "--shard", f"{index}/{spec['shards']}", "-o", out, "-q", *spec["extra"]]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=spec["timeout"])
    return {"shard": index, "pid": os.getpid(), "exit": done.returncode, "stderr": done.stderr, "path": out}


def run_combine(spec, parts):
    out = os.path.join(spec["dir"], "combined.npz")
    done = subprocess.run([spec["node"], spec["bin"], "combine", *parts, "-o", out, "-q"],
                          capture_output=True, text=True, timeout=spec["timeout"])
    return {"exit": done.returncode, "stderr": done.stderr, "path": out}


def main():
    spec = read_spec()
    import numpy as np

    with cluster_client(spec) as client:
        tasks = run_per_shard(client, spec, run_shard)
        # Shards in reverse order: combine sorts the pieces by their rows.
        combined = client.submit(run_combine, spec, [t["path"] for t in reversed(tasks)], pure=False).result()

    single = np.load(spec["single"])
    got = np.load(combined["path"])
    # The numpy merge of docs/scale-out.md.
    parts = sorted((np.load(t["path"]) for t in tasks), key=lambda p: p["row_range"][0])
    n = np.array([p["count"] for p in parts])
    mean = sum(c * p["mean"] for c, p in zip(n, parts)) / n.sum()
    by_numpy = {
        "norm": np.concatenate([p["norm"] for p in parts]),
        "sumsq": sum(p["sumsq"] for p in parts),
        "mean": mean,
        "variance": (sum(p["m2"] for p in parts) + sum(c * (p["mean"] - mean) ** 2 for c, p in zip(n, parts))) / n.sum(),
    }

    def rel(a, b):
        return float(np.max(np.abs(a.astype(np.float64) - b)) / max(1.0, float(np.max(np.abs(b)))))

    print(json.dumps({
        "tasks": [{k: t[k] for k in ("shard", "pid", "exit", "stderr")} for t in tasks],
        "combine": {k: combined[k] for k in ("exit", "stderr")},
        "workerPids": sorted({t["pid"] for t in tasks}),
        "entries": list(got.files),
        "normBytesEqualSingle": got["norm"].tobytes() == single["norm"].tobytes(),
        "relErrSingle": {k: rel(got[k], single[k]) for k in ("sumsq", "variance")},
        "relErrNumpy": {k: rel(got[k], by_numpy[k]) for k in by_numpy},
    }))


if __name__ == "__main__":
    main()
