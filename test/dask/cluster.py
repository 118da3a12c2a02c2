"""Shared by the Dask scripts (shards_on_dask.py, stats_on_dask.py): the spec the test wrote,
and a local distributed cluster of worker processes that runs one task per shard.

The tasks themselves stay in the scripts: Dask ships a function of the script (__main__) to
the workers by value, where this module would have to be importable.
"""
import contextlib
import json
import sys


def read_spec():
    """The SPEC.json named on the command line."""
    with open(sys.argv[1]) as f:
        return json.load(f)


@contextlib.contextmanager
def cluster_client(spec):
    """A Client on spec["workers"] single-threaded worker processes, closed on the way out."""
    from dask.distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=spec["workers"], threads_per_worker=1, processes=True,
                           dashboard_address=None, silence_logs=40)
    try:
        with Client(cluster, timeout=spec["timeout"]) as client:
            yield client
    finally:
        cluster.close()


def run_per_shard(client, spec, task):
    """task(spec, i) for every shard i, pinned round-robin to the workers, so the shards provably
    run in different processes; the results in shard order."""
    workers = sorted(client.scheduler_info()["workers"])
    futures = [client.submit(task, spec, i, workers=[workers[i % len(workers)]], pure=False)
               for i in range(spec["shards"])]
    return client.gather(futures, errors="raise")
