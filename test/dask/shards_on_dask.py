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
import sys


def run_shard(spec, index):
    """One task: the CLI for shard `index`, in a worker process."""
    cmd = [spec["node"], spec["bin"], spec["model"], "-i", spec["input"],
           "--shard", f"{index}/{spec['shards']}", "-o", spec["store"], "--json", *spec["extra"]]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=spec["timeout"])
    return {"shard": index, "pid": os.getpid(), "exit": done.returncode,
            "stdout": done.stdout, "stderr": done.stderr}


def main():
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    import numpy as np
    import dask.array as da
    from dask.distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=spec["workers"], threads_per_worker=1, processes=True,
                           dashboard_address=None, silence_logs=40)
    try:
        with Client(cluster, timeout=spec["timeout"]) as client:
            workers = sorted(client.scheduler_info()["workers"])
            # Pinned round-robin, so the shards provably run in different processes.
            futures = [client.submit(run_shard, spec, i, workers=[workers[i % len(workers)]], pure=False)
                       for i in range(spec["shards"])]
            tasks = client.gather(futures, errors="raise")
            # Read on the cluster too: one dask task per Zarr chunk.
            J = da.from_zarr(spec["store"])
            chunks = J.numblocks[0]
            values = J.compute()
    finally:
        cluster.close()

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
