#!/usr/bin/python3
"""The PyTorch side of the benchmark: one measurement per process.

    /usr/bin/python3 bench/torch_bench.py functorch NAME [--n N] [--out J.npy]
    /usr/bin/python3 bench/torch_bench.py naive     NAME [--n N] [--out J.npy] [--budget S]
    /usr/bin/python3 bench/torch_bench.py floor     NAME [--n N] [--out J.npy] [--fsync] [--shape N,D]
    /usr/bin/python3 bench/torch_bench.py verify    NAME  --n N --jacobian CLI.npy

functorch: functorch.vmap(functorch.jacrev(f)) over the batch (2 threads),
    the per-parameter blocks concatenated into J (N, D) or (N, K, D), np.save.
naive: N per-sample forward passes and K backward passes each
    (torch.autograd.grad), rows written into a preallocated J, np.save. If the
    loop would exceed --budget seconds it stops there and extrapolates the loop
    time linearly ("extrapolated": true in the report).
floor: numpy only (no torch import): np.save of an array of J's shape and
    dtype, filled beforehand; save_s times the save alone. --fsync also times
    flushing the file to disk (the CLI fsyncs its output; np.save does not).
verify: the CLI's J (at the first N samples) against functorch's J in the
    ONNX initializer order, within 1e-4 * max(1, max|ref|); functorch is
    itself checked against the naive loop first. Exit 1 on a mismatch.

Every mode prints one JSON line with its internal timings on stdout; the
runner (bench/run.js) times the whole process from outside.
"""

import argparse
import json
import os
import sys
import time

T_START = time.perf_counter()
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import models  # noqa: E402  (no torch import at module level)

THREADS = 2
TOLERANCE = 1e-4


def report(**fields):
    fields["total_s"] = time.perf_counter() - T_START
    print(json.dumps(fields))
    sys.stdout.flush()


def meta(name):
    with open(os.path.join(models.MODELS_DIR, name, "meta.json")) as f:
        return json.load(f)


def jacobian_shape(name, n):
    m = meta(name)
    k = 1
    for d in m["outputShape"]:
        k *= d
    return (n, m["parameters"]) if k == 1 else (n,) + tuple(m["outputShape"]) + (m["parameters"],)


def load_torch(name, n):
    """(torch, module, first n rows of the exported input batch as a tensor, K elements)."""
    import numpy as np
    import torch

    torch.set_num_threads(THREADS)
    module, _ = models.build(name)
    x = np.load(os.path.join(models.MODELS_DIR, name, "input.npy"), mmap_mode="r")
    if n is None:
        n = x.shape[0]
    if n > x.shape[0]:
        raise SystemExit("%s: input.npy has %d samples, asked for %d" % (name, x.shape[0], n))
    xt = torch.from_numpy(np.array(x[:n], dtype=np.int64 if x.dtype == np.int64 else np.float32))
    with torch.no_grad():
        k = int(np.prod(module(xt[:1]).shape[1:]))
    return torch, module, xt, k


def functorch_jacobian(torch, module, x, k, name=None):
    """Per-parameter per-sample Jacobians (N, [K,] *p.shape), in named_parameters order
    (only the parameters models.SELECTED lists for `name`, if any), by functorch's jacrev
    or, where models.TORCH_JACOBIAN says so, jacfwd."""
    import functorch
    from torch.nn.utils.stateless import functional_call

    transform = getattr(functorch, models.TORCH_JACOBIAN.get(name, "jacrev"))
    selected = models.SELECTED.get(name)
    if selected is None:
        fmodel, params, buffers = functorch.make_functional_with_buffers(module)

        def single(ps, xi):
            out = fmodel(ps, buffers, xi.unsqueeze(0))[0]
            return out.reshape(()) if k == 1 else out

    else:
        named = dict(module.named_parameters())
        params = tuple(named[s].detach() for s in selected)

        def single(ps, xi):
            out = functional_call(module, dict(zip(selected, ps)), (xi.unsqueeze(0),))[0]
            return out.reshape(()) if k == 1 else out

    jac = functorch.vmap(transform(single), in_dims=(None, 0))(params, x)
    return [j.detach() for j in jac]


def flatten(torch, blocks, n, k):
    lead = (n,) if k == 1 else (n, k)
    return torch.cat([b.reshape(lead + (-1,)) for b in blocks], dim=-1)


def naive_jacobian(torch, module, x, k, budget=None, name=None):
    """J by N forward and N*K backward passes; returns (J, samples done, loop seconds)."""
    named = dict(module.named_parameters())
    params = [named[s] for s in models.SELECTED.get(name, named)]
    n = x.shape[0]
    d = sum(p.numel() for p in params)
    jac = torch.zeros((n, d) if k == 1 else (n, k, d))
    start = time.perf_counter()
    done = 0
    for i in range(n):
        out = module(x[i : i + 1]).reshape(-1)
        for j in range(k):
            grads = torch.autograd.grad(out[j], params, retain_graph=j + 1 < k)
            row = jac[i] if k == 1 else jac[i, j]
            torch.cat([g.reshape(-1) for g in grads], out=row)
        done = i + 1
        if budget is not None and time.perf_counter() - start > budget:
            break
    return jac, done, time.perf_counter() - start


def save(path, arr, fsync=False):
    import numpy as np

    t = time.perf_counter()
    np.save(path, arr)
    save_s = time.perf_counter() - t
    fsync_s = None
    if fsync:
        t = time.perf_counter()
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_s = time.perf_counter() - t
    return save_s, fsync_s


def cmd_functorch(args):
    t = time.perf_counter()
    torch, module, x, k = load_torch(args.name, args.n)
    import functorch  # noqa: F401  (counted with the imports)

    import_s = time.perf_counter() - t
    t = time.perf_counter()
    blocks = functorch_jacobian(torch, module, x, k, args.name)
    jac = flatten(torch, blocks, x.shape[0], k)
    del blocks
    compute_s = time.perf_counter() - t
    save_s, _ = save(args.out, jac.numpy())
    report(mode="functorch", name=args.name, n=x.shape[0], shape=list(jac.shape), setup_s=import_s, compute_s=compute_s, save_s=save_s)


def cmd_naive(args):
    t = time.perf_counter()
    torch, module, x, k = load_torch(args.name, args.n)
    setup_s = time.perf_counter() - t
    jac, done, loop_s = naive_jacobian(torch, module, x, k, args.budget, args.name)
    n = x.shape[0]
    extrapolated = done < n
    loop_full_s = loop_s * n / done
    save_s, _ = save(args.out, jac.numpy())
    report(
        mode="naive",
        name=args.name,
        n=n,
        shape=list(jac.shape),
        setup_s=setup_s,
        samples_timed=done,
        loop_s=loop_s,
        loop_full_s=loop_full_s,
        extrapolated=extrapolated,
        save_s=save_s,
    )


def cmd_floor(args):
    import numpy as np

    if args.shape:
        shape = tuple(int(d) for d in args.shape.split(","))
    else:
        shape = jacobian_shape(args.name, args.n or meta(args.name)["samples"])
    t = time.perf_counter()
    arr = np.full(shape, 1.0, dtype=np.float32)
    fill_s = time.perf_counter() - t
    save_s, fsync_s = save(args.out, arr, args.fsync)
    report(mode="floor", name=args.name, n=shape[0], shape=list(shape), fill_s=fill_s, save_s=save_s, fsync_s=fsync_s)


def cmd_verify(args):
    import numpy as np
    import onnx
    from onnx import numpy_helper

    torch, module, x, k = load_torch(args.name, args.n)
    n = x.shape[0]
    named = dict(module.named_parameters())
    selected = models.SELECTED.get(args.name)
    if selected is not None:
        named = {s: named[s] for s in selected}
    names = list(named)
    model = onnx.load(os.path.join(models.MODELS_DIR, args.name, "model.onnx"))
    order = []
    for init in model.graph.initializer:
        if selected is not None and init.name not in named:
            continue  # a constant here (folded BatchNorm, unselected layers)
        arr = numpy_helper.to_array(init)
        if arr.dtype != np.float32:
            continue  # buffers such as a boolean causal mask
        if init.name not in named:
            raise SystemExit("%s: initializer %s is not a parameter of the torch module" % (args.name, init.name))
        if not np.array_equal(arr, named[init.name].detach().numpy()):
            raise SystemExit("%s: initializer %s differs from the torch parameter" % (args.name, init.name))
        order.append(names.index(init.name))
    if sorted(order) != list(range(len(names))):
        raise SystemExit("%s: initializers and torch parameters do not match one to one" % args.name)

    blocks = functorch_jacobian(torch, module, x, k, args.name)
    ref = flatten(torch, [blocks[i] for i in order], n, k).numpy()
    loop, _, _ = naive_jacobian(torch, module, x, k, name=args.name)
    loop = loop.numpy()
    loop_ref = np.concatenate(
        [np.split(loop, np.cumsum([named[nm].numel() for nm in names])[:-1], axis=-1)[i] for i in order], axis=-1
    )
    scale = max(1.0, float(np.abs(ref).max()))
    torch_err = float(np.abs(loop_ref - ref).max())

    cli = np.load(args.jacobian)
    if cli.size == ref.size and cli.shape[0] == n and cli.shape[-1] == ref.shape[-1]:
        cli = cli.reshape(ref.shape)  # K of several axes: the CLI keeps them, flatten() joins them
    fields = dict(mode="verify", name=args.name, n=n, shape=list(ref.shape), cli_shape=list(cli.shape), max_ref=float(np.abs(ref).max()))
    fields["functorch_vs_naive"] = torch_err
    if cli.shape != ref.shape or cli.dtype != np.float32:
        report(ok=False, reason="the CLI wrote %s %s, expected float32 %s" % (cli.dtype, cli.shape, ref.shape), **fields)
        return 1
    err = float(np.abs(cli.astype(np.float64) - ref).max())
    ok = err <= TOLERANCE * scale and torch_err <= TOLERANCE * scale
    report(ok=ok, max_err=err, tolerance=TOLERANCE * scale, **fields)
    return 0 if ok else 1


def cmd_functorch_norm(args):
    """Per-sample gradient norms (N,) and per parameter (N, P) as Opacus-style users compute them: vmap(grad)."""
    import numpy as np

    t = time.perf_counter()
    torch, module, x, k = load_torch(args.name, args.n)
    import functorch  # noqa: F401

    import_s = time.perf_counter() - t
    t = time.perf_counter()
    blocks = functorch_jacobian(torch, module, x, k)
    per_param = torch.stack([b.reshape(x.shape[0], -1).norm(dim=1) for b in blocks], dim=1)
    norm = per_param.norm(dim=1)
    compute_s = time.perf_counter() - t
    np.savez(args.out, norm=norm.numpy(), norm_per_param=per_param.numpy())
    report(mode="functorch-norm", name=args.name, n=x.shape[0], setup_s=import_s, compute_s=compute_s)


def cmd_functorch_gram(args):
    """The empirical NTK J J^T from functorch's J."""
    import numpy as np

    t = time.perf_counter()
    torch, module, x, k = load_torch(args.name, args.n)
    import functorch  # noqa: F401

    import_s = time.perf_counter() - t
    t = time.perf_counter()
    jac = flatten(torch, functorch_jacobian(torch, module, x, k), x.shape[0], k).reshape(x.shape[0] * k, -1)
    gram = jac @ jac.T
    compute_s = time.perf_counter() - t
    np.save(args.out, gram.numpy())
    report(mode="functorch-gram", name=args.name, n=x.shape[0], setup_s=import_s, compute_s=compute_s)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("mode", choices=["functorch", "naive", "floor", "verify", "functorch-norm", "functorch-gram"])
    p.add_argument("name", choices=list(models.SPECS))
    p.add_argument("--n", type=int, default=None, help="samples (default: all of input.npy)")
    p.add_argument("--out", default=None, help="where to write J (default: a file in the current directory)")
    p.add_argument("--budget", type=float, default=None, help="naive: stop the loop after this many seconds and extrapolate")
    p.add_argument("--fsync", action="store_true", help="floor: also time fsync of the written file")
    p.add_argument("--shape", help="floor: J's shape as N,D or N,K,D (default: from meta.json)")
    p.add_argument("--jacobian", help="verify: the CLI's J.npy")
    args = p.parse_args()
    if args.out is None:
        args.out = "%s-%s.npy" % (args.name, args.mode)
    if args.mode == "verify":
        if not args.jacobian or args.n is None:
            p.error("verify needs --n and --jacobian")
        return cmd_verify(args)
    modes = {"functorch": cmd_functorch, "naive": cmd_naive, "floor": cmd_floor, "functorch-norm": cmd_functorch_norm, "functorch-gram": cmd_functorch_gram}
    return modes[args.mode](args) or 0


if __name__ == "__main__":
    sys.exit(main())
