"""Runs the CLI as one Dask task per shard on a local distributed cluster of worker
processes, then reads the Zarr store with dask.array.from_zarr.

Usage: shards_on_dask.py SPEC.json   (written by test/dask.test.ts)
SPEC: {"node", "bin", "model", "input", "store", "shards", "workers", "extra": [...],
       "single": "J.npy", "reference": "jacobian.npy", "timeout": seconds}
Prints one JSON line: what ran where, and the comparisons.
"""
import json
import os
import subprocess

from cluster import cluster_client, read_spec, run_per_shard


def run_shard(spec, index):
    """One task: the CLI for shard `index`, in a worker process."""
    cmd = [spec["node"], spec["bin"], spec["model"], "-i", spec["input"],
           "--shard", f"{index}/{spec['shards']}", "-o", spec["store"], "--json", *spec["extra"]]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=spec["timeout"])
    return {"shard": index, "pid": os.getpid(), "exit": done.returncode,
            "stdout": done.stdout, "stderr": done.stderr}


def main():
    spec = read_spec()
    import numpy as np
    import dask.array as da

    with cluster_client(spec) as client:
        tasks = run_per_shard(client, spec, run_shard)
        # Read on the cluster too: one dask task per Zarr chunk.
        J = da.from_zarr(spec["store"])
        chunks = J.numblocks[0]
        values = J.compute()

    single = np.load(spec["single"])
    reference = np.load(spec["reference"])
    err = float(np.max(np.abs(values.astype(np.float64) - reference)))
    print(json.dumps({
        "tasks": [{k: t[k] for k in ("shard", "pid", "exit", "stderr")} for t in tasks],
        "workerPids": sorted({t["pid"] for t in tasks}),
        "daskChunks": chunks,
        "shape": list(values.shape),
        "dtype": str(values.dtype),
        "bytesEqualSingle": values.shape == single.shape and values.dtype == single.dtype and values.tobytes() == single.tobytes(),
        "maxErrReference": err,
        "maxAbsReference": float(np.max(np.abs(reference))),
        "anyNaN": bool(np.isnan(values).any()),
    }))


if __name__ == "__main__":
    main()
