#!/usr/bin/python3
"""The torchvision zoo: every torchvision 0.14 classifier, exported as users export it,
run through the CLI and compared with functorch.

For each model (random weights, eval mode, a 10-class head, or one logit where 10 would
make J too large), each opset (11, 13, 17) and each export variant

  folded   torch.onnx.export defaults: BatchNorm folded into the convolutions,
           parameters renamed onnx::Conv_123
  kept     do_constant_folding=False, training=TrainingMode.PRESERVE (without it the exporter
           still fuses BatchNorm in eval mode): BatchNormalization nodes and module names kept

the script exports the model with a dynamic batch axis, runs `jacobian` on it (flat .npy
and --as-tuple .npz, as a user would, one process each) and compares J with
functorch.vmap(functorch.jacrev(...)) within max|err| <= 1e-4 * max(1, max|ref|).
It prints one row per model, opset and variant: pass, FAIL (with the worst error),
refused (exit 1, with the tool's message) or error (exit 2/3).

Inputs are drawn away from kinks: a sample is kept only if no ReLU/ReLU6/Hardtanh/
HardSwish/HardSigmoid input lies within 2^-20 * max|x| of its threshold (x: the op's input
for that sample) and no MaxPool window's two largest values differ by less than 2^-20 * max|x|
(measured in torch while the model runs);
otherwise it is redrawn. Near a kink J jumps by a whole unit's contribution and any
float32 result may differ from the reference, which is not what this matrix tests.

Every other parameter and buffer that torchvision initialises to a constant (biases 0,
BatchNorm 1/0, layer scales 1e-6) is randomised, so that the exporter does not
deduplicate equal tensors and the initializers can be matched to parameters by value.

    /usr/bin/python3 scripts/zoo.py                       # the default list, all opsets, both variants
    /usr/bin/python3 scripts/zoo.py resnet18 mobilenet_v2 --opsets 13 --variants kept
    /usr/bin/python3 scripts/zoo.py --all                 # also every other torchvision classifier
    /usr/bin/python3 scripts/zoo.py --summary zoo-out/a/results.json zoo-out/b/results.json

Files go to zoo-out/ (gitignored): <model>/<variant>_op<opset>.onnx, the input, the
CLI's outputs (deleted after comparison unless --keep), and results.json.
"""

import argparse
import atexit
import collections
import json
import math
import os
import shutil
import subprocess
import sys
import time
import warnings

import numpy as np
import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
import functorch
from onnx import numpy_helper
from torch.nn.utils.stateless import functional_call
from torch.overrides import TorchFunctionMode

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI = None  # set by build_cli: a private build, so that editing the sources during a long run changes nothing
TOLERANCE = 1e-4
# A kink input closer than this fraction of the tensor's largest |value| to its threshold
# counts as "within rounding" (float32 pre-activations differ by ~1e-7 relative between
# torch and onnxruntime; 2^-20 leaves an order of magnitude).
KINK_MARGIN = 2.0 ** -20

DEFAULT_MODELS = [
    "alexnet", "vgg11", "vgg11_bn", "resnet18", "resnet50", "resnext50_32x4d", "wide_resnet50_2",
    "squeezenet1_0", "squeezenet1_1", "densenet121", "inception_v3", "googlenet",
    "shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "mobilenet_v2", "mobilenet_v3_small",
    "mobilenet_v3_large", "mnasnet0_5", "mnasnet1_0", "efficientnet_b0", "efficientnet_v2_s",
    "regnet_x_400mf", "regnet_y_400mf", "convnext_tiny",
]
# The smallest square input each model exports with (default 32): AlexNet and VGG need 6x6 and 7x7
# feature maps, since the exporter refuses adaptive_avg_pool2d to a size that does not divide its input.
INPUT_SIZE = {"alexnet": 224, "vgg11": 224, "vgg11_bn": 224, "vgg13": 224, "vgg13_bn": 224, "vgg16": 224, "vgg16_bn": 224, "vgg19": 224, "vgg19_bn": 224, "inception_v3": 75, "vit_b_16": 32, "vit_l_16": 32, "vit_h_14": 28, "maxvit_t": 224}
# Extra constructor arguments: vision transformers fix their image size.
CONSTRUCTOR = {
    "vit_b_16": {"image_size": 32}, "vit_b_32": {"image_size": 32}, "vit_l_16": {"image_size": 32},
    "vit_l_32": {"image_size": 32}, "vit_h_14": {"image_size": 28},
    "inception_v3": {"init_weights": True}, "googlenet": {"init_weights": True},
}
# J for N samples and K outputs is N*K*D floats: above this many parameters, one logit.
TEN_CLASS_MAX_PARAMETERS = 3_000_000
# Above this many parameters J (and functorch's reference) would not fit beside the other work here.
MAX_PARAMETERS = 150_000_000


# --------------------------------------------------------------------------- models


def build(name, num_classes=None, seed=0):
    """The torchvision model with random weights, in eval mode, every constant-initialised
    tensor randomised. num_classes None: 10 if D allows, else 1."""
    torch.manual_seed(seed)
    ctor = getattr(torchvision.models, name)
    kwargs = dict(CONSTRUCTOR.get(name, {}))
    if num_classes is None:
        probe = ctor(weights=None, num_classes=10, **kwargs)
        size = sum(p.numel() for p in probe.parameters())
        num_classes = 10 if size <= TEN_CLASS_MAX_PARAMETERS else 1
        torch.manual_seed(seed)
    model = ctor(weights=None, num_classes=num_classes, **kwargs)
    randomize(model)
    return model.eval()


def randomize(model):
    """Random values for every tensor torchvision initialises to a constant (or to nearly
    equal values): biases, norm scales and shifts, running statistics, layer scales."""
    with torch.no_grad():
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            if not t.is_floating_point():
                continue
            flat = t.reshape(-1)
            constant = flat.numel() > 0 and bool((flat.max() - flat.min()).abs() <= 1e-3 * flat.abs().max().clamp_min(1e-12))
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "running_var":
                t.uniform_(0.5, 1.5)
            elif leaf == "running_mean":
                t.normal_(0.0, 0.1)
            elif not constant and t.dim() > 1:
                continue
            elif leaf == "bias":
                t.normal_(0.0, 0.1)
            elif constant:
                # norm scales (1), layer scales (1e-6), class tokens, positional embeddings
                t.uniform_(0.5, 1.5) if float(flat.abs().max()) >= 0.5 else t.uniform_(0.05, 0.2)


def fused(model):
    """The model with every Conv→BatchNorm pair fused, as torch.onnx.export folds them: by
    torch.fx, or where the model does not trace (ShuffleNet's chunk), pair by pair inside
    nn.Sequential containers."""
    import copy

    import torch.fx.experimental.optimization as fx_optimization
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    try:
        return fx_optimization.fuse(model, inplace=False).eval()
    except Exception:  # noqa: BLE001 - not traceable: fuse where the pairs are plain to see
        fused_model = copy.deepcopy(model).eval()
        for module in fused_model.modules():
            if not isinstance(module, nn.Sequential):
                continue
            children = list(module._modules.items())
            for (name, conv), (bn_name, bn) in zip(children, children[1:]):
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                    module._modules[name] = fuse_conv_bn_eval(conv, bn)
                    module._modules[bn_name] = nn.Identity()
        return fused_model


# --------------------------------------------------------------------------- kinks


class KinkWatch(TorchFunctionMode):
    """Counts, per sample, the inputs of piecewise-linear ops within KINK_MARGIN (relative to
    the tensor's largest |value|) of a threshold, and the MaxPool windows whose two largest
    values are that close (relative to the same)."""

    THRESHOLDS = {"relu": (0.0,), "relu_": (0.0,), "relu6": (0.0, 6.0), "hardswish": (-3.0, 3.0), "hardswish_": (-3.0, 3.0), "hardsigmoid": (-3.0, 3.0), "hardsigmoid_": (-3.0, 3.0)}

    def __init__(self, n):
        super().__init__()
        self.near = torch.zeros(n, dtype=torch.long)
        self.sites = collections.Counter()

    def _count(self, kind, x, thresholds):
        x = x.detach()
        scale = x.abs().reshape(x.shape[0], -1).amax(1).clamp_min(1.0)
        d = torch.stack([(x - t).abs() for t in thresholds]).amin(0).reshape(x.shape[0], -1)
        hits = (d <= KINK_MARGIN * scale[:, None]).sum(1)
        self.near += hits
        if int(hits.sum()):
            self.sites[kind] += int(hits.sum())

    def _maxpool(self, x, kernel, stride, padding, dilation, ceil_mode):
        x = x.detach()
        if x.dim() != 4:
            return
        pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)
        k, s, p, d = pair(kernel), pair(stride or kernel), pair(padding), pair(dilation)
        if k[0] * k[1] == 1:
            return
        pads = []
        for axis in (1, 0):  # F.pad order: last axis first
            size = x.shape[2 + axis] + 2 * p[axis]
            span = d[axis] * (k[axis] - 1) + 1
            out = (math.ceil if ceil_mode else math.floor)((size - span) / s[axis]) + 1
            extra = max(0, (out - 1) * s[axis] + span - size)
            pads += [p[axis], p[axis] + extra]
        padded = F.pad(x, pads, value=-math.inf)
        cols = F.unfold(padded.reshape(-1, 1, *padded.shape[2:]), k, dilation=d, stride=s)
        top = cols.topk(2, dim=1).values
        gap = (top[:, 0] - top[:, 1]).reshape(x.shape[0], -1)
        # The margin is relative to the tensor's largest |value|, as for the thresholds above: a
        # convolution's output is rounded at the magnitude of the terms it sums, not at its own
        # (AlexNet's second pool held a window whose two largest values differed by 1.4e-7 of the
        # tensor's maximum but 2^-19 of their own; onnxruntime picked the other one).
        scale = x.abs().reshape(x.shape[0], -1).amax(1).clamp_min(1.0)[:, None]
        # Exact ties are harmless: windows of zeros after a ReLU (which passes no gradient to any
        # of them), or one value repeated by an overlapping pool before (every choice leads to it).
        hits = (torch.isfinite(gap) & (gap > 0) & (gap <= KINK_MARGIN * scale)).sum(1)
        self.near += hits
        if int(hits.sum()):
            self.sites["max_pool2d"] += int(hits.sum())

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in self.THRESHOLDS:
            self._count(name, args[0], self.THRESHOLDS[name])
        elif name in ("hardtanh", "hardtanh_"):
            lo = kwargs.get("min_val", args[1] if len(args) > 1 else -1.0)
            hi = kwargs.get("max_val", args[2] if len(args) > 2 else 1.0)
            self._count(name, args[0], (lo, hi))
        elif name in ("max_pool2d", "max_pool2d_with_indices", "_max_pool2d"):
            names = ["input", "kernel_size", "stride", "padding", "dilation", "ceil_mode"]
            defaults = {"stride": None, "padding": 0, "dilation": 1, "ceil_mode": False}
            a = dict(zip(names, args))
            for key in names[1:]:
                a.setdefault(key, kwargs.get(key, defaults.get(key)))
            self._maxpool(a["input"], a["kernel_size"], a["stride"], a["padding"], a["dilation"], a["ceil_mode"])
        return func(*args, **kwargs)


def draw_inputs(model, n, size, seed, rounds=40, report=None):
    """n samples (3, size, size images of N(0,1)) none of whose kink inputs is within rounding.
    Returns the batch and how many candidates were redrawn. When `rounds` of 8 candidates give
    fewer than n such samples, the rest are those with the fewest kink inputs, and their count
    goes into report["kinksLeft"] (raises without `report`)."""
    gen = torch.Generator().manual_seed(seed)
    kept, redrawn, spare = [], 0, []
    with torch.no_grad():
        for _ in range(rounds):
            candidates = torch.randn(8, 3, size, size, generator=gen)
            watch = KinkWatch(candidates.shape[0])
            with watch:
                model(candidates)
            for i in range(candidates.shape[0]):
                if int(watch.near[i]) == 0:
                    kept.append(candidates[i])
                else:
                    redrawn += 1
                    spare.append((int(watch.near[i]), candidates[i]))
            if len(kept) >= n:
                return torch.stack(kept[:n]), redrawn
    if report is None:
        raise RuntimeError("no %d kink-free samples in %d draws" % (n, rounds * 8))
    spare.sort(key=lambda s: s[0])
    extra = spare[: n - len(kept)]
    report["kinksLeft"] = sum(c for c, _ in extra)
    return torch.stack(kept + [x for _, x in extra]), redrawn


# --------------------------------------------------------------------------- export and reference


def export(model, x, path, opset, folded):
    torch.onnx.export(
        model, (x,), path, input_names=["input"], output_names=["output"],
        dynamic_axes={"input": {0: "N"}, "output": {0: "N"}}, opset_version=opset,
        do_constant_folding=folded,
        # Without PRESERVE the exporter fuses BatchNorm into Conv in eval mode even when it does not fold constants.
        training=torch.onnx.TrainingMode.EVAL if folded else torch.onnx.TrainingMode.PRESERVE,
    )
    onnx.checker.check_model(onnx.load(path))


def reference(model, x):
    """Per-sample Jacobians {parameter name: (N, *K, *shape)} (K dropped when it is (1,))."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    names = list(params)
    with torch.no_grad():
        k_numel = model(x[:1]).numel()

    def single(ps, xi):
        out = functional_call(model, dict(zip(names, ps)), (xi.unsqueeze(0),))[0]
        return out.reshape(()) if k_numel == 1 else out

    jac = functorch.vmap(functorch.jacrev(single, argnums=0), in_dims=(None, 0))(tuple(params[k] for k in names), x)
    return {k: j.detach() for k, j in zip(names, jac)}, params


def match(onnx_path, params):
    """{initializer name: (parameter name, kind)} for the float initializers equal (within
    float32 rounding of the exporter's folding) to a parameter, reshaped, or a 2-D transpose."""
    model = onnx.load(onnx_path)
    by_shape = collections.defaultdict(list)
    for pname, p in params.items():
        by_shape[p.numel()].append((pname, p.numpy()))
    found = {}
    for init in model.graph.initializer:
        arr = numpy_helper.to_array(init)
        if arr.dtype != np.float32:
            continue
        for pname, pv in by_shape.get(arr.size, []):
            tol = 1e-5 * max(1e-6, float(np.abs(pv).max()))
            if np.allclose(pv.reshape(-1), arr.reshape(-1), rtol=0, atol=tol):
                found[init.name] = (pname, "same" if pv.shape == arr.shape else "reshape", arr.shape)
                break
            if pv.ndim == 2 and arr.shape == pv.T.shape and np.allclose(pv.T, arr, rtol=0, atol=tol):
                found[init.name] = (pname, "transpose", arr.shape)
                break
    return found


def expected_block(refs, params, entry, n, k_shape):
    pname, kind, ishape = entry
    ref = refs[pname]
    lead = ref.shape[: ref.dim() - params[pname].dim()]
    if kind == "transpose":
        ref = ref.transpose(-1, -2)
    return ref.reshape(tuple(lead) + tuple(ishape)).numpy()


# --------------------------------------------------------------------------- CLI


def build_cli(out):
    """Compiles and bundles the CLI into zoo-out/.cli-<pid> (bin, dist, package.json), inside the repository so
    that node_modules resolve from it."""
    global CLI
    target = os.path.join(ROOT, "zoo-out", ".cli-%d" % os.getpid())
    if os.path.isdir(target):
        shutil.rmtree(target)
    dist = os.path.join(target, "dist")
    subprocess.run(["npx", "tsc", "-p", os.path.join(ROOT, "tsconfig.json"), "--outDir", dist], check=True, cwd=ROOT)
    # bin/jacobian.js runs the bundled CLI, as npm run build makes it (package.json's build script).
    subprocess.run(
        ["npx", "esbuild", os.path.join(dist, "cli", "main.js"), "--bundle", "--platform=node", "--format=esm", "--packages=external",
         "--log-level=warning", "--outfile=" + os.path.join(dist, "cli", "jacobian.js")],
        check=True, cwd=ROOT,
    )
    shutil.copytree(os.path.join(ROOT, "bin"), os.path.join(target, "bin"))
    shutil.copy(os.path.join(ROOT, "package.json"), target)
    CLI = os.path.join(target, "bin", "jacobian.js")


def run_cli(args, timeout=1800):
    started = time.time()
    proc = subprocess.run(["node", CLI] + args, capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr, time.time() - started


def compare(got, want):
    if got.shape != want.shape:
        return math.inf, "shape %s, expected %s" % (got.shape, want.shape)
    err = float(np.abs(got.astype(np.float64) - want).max()) if got.size else 0.0
    return err / max(1.0, float(np.abs(want).max()) if want.size else 1.0), None


def check_export(onnx_path, x_path, out_dir, refs, params, keep):
    """Runs the CLI flat and --as-tuple; returns a result row."""
    flat_path = os.path.join(out_dir, "J.npy")
    tuple_path = os.path.join(out_dir, "J.npz")
    row = {}
    code, stdout, stderr, seconds = run_cli([onnx_path, "--input", x_path, "--output", flat_path, "--json"])
    row["seconds"] = round(seconds, 2)
    if code != 0:
        row["status"] = "refused" if code == 1 else "error"
        row["exitCode"] = code
        message = stderr.strip() or stdout.strip()
        try:
            message = json.loads(stdout).get("error", message)
        except (ValueError, AttributeError):
            pass
        row["message"] = message[:600]
        return row
    summary = json.loads(stdout)
    matches = match(onnx_path, params)
    unmatched = [p["name"] for p in summary["parameters"] if p["name"] not in matches]
    if unmatched:
        row["status"] = "error"
        row["message"] = "parameters the script cannot map to torch: %s" % ", ".join(unmatched[:5])
        return row
    missing = sorted(set(params) - {matches[p["name"]][0] for p in summary["parameters"]})
    # A torch parameter that reaches the output but has no columns would be a silent hole in J.
    missing = [m for m in missing if float(refs[m].abs().max()) > 0]
    n = int(summary["samples"])
    blocks = [expected_block(refs, params, matches[p["name"]], n, None) for p in summary["parameters"]]
    lead = blocks[0].shape[: blocks[0].ndim - len(summary["parameters"][0]["shape"])]
    want = np.concatenate([b.reshape(tuple(lead) + (-1,)) for b in blocks], axis=-1)
    flat = np.load(flat_path)
    worst, problem = compare(flat, want)
    if not keep:
        os.remove(flat_path)
    code, stdout, stderr, seconds = run_cli([onnx_path, "--input", x_path, "--as-tuple", "--output", tuple_path, "--quiet"])
    if code != 0:
        row.update(status="error", exitCode=code, message="--as-tuple: " + (stderr.strip()[:600]))
        return row
    with np.load(tuple_path) as archive:
        # Entries are safe file names ('onnx::Conv_1' is stored as 'onnx%3A%3AConv_1'); __names__.json
        # maps them back to the initializer names when any name changed (README, --as-tuple).
        keys = [k for k in archive.keys() if k != "__names__.json"]
        original = json.loads(bytes(archive["__names__.json"]).decode()) if "__names__.json" in archive.files else {}
        names = [original.get(k, k) for k in keys]
        expected_names = [p["name"] for p in summary["parameters"]]
        if names != expected_names:
            problem = problem or "--as-tuple entries %s..., expected %s..." % (names[:3], expected_names[:3])
        entry = {original.get(k, k): k for k in keys}
        for p, block in zip(summary["parameters"], blocks):
            if p["name"] not in entry:
                problem = problem or "--as-tuple has no entry for %s" % p["name"]
                continue
            e, why = compare(archive[entry[p["name"]]], block)
            worst = max(worst, e)
            problem = problem or why
    if not keep:
        os.remove(tuple_path)
    row["parameters"] = len(summary["parameters"])
    row["columns"] = int(summary["columns"])
    row["worstError"] = worst
    if missing:
        problem = problem or "torch parameters without columns: %s" % ", ".join(missing[:5])
    row["status"] = "pass" if problem is None and worst <= TOLERANCE else "FAIL"
    if problem:
        row["message"] = problem
    return row


# --------------------------------------------------------------------------- main


def run_model(name, args, out_root):
    rows = []
    d = os.path.join(out_root, name)
    os.makedirs(d, exist_ok=True)
    model = build(name)
    size = sum(p.numel() for p in model.parameters())
    if size > MAX_PARAMETERS:
        return [{"model": name, "status": "skipped", "message": "%d parameters: J too large for this machine" % size}]
    image = INPUT_SIZE.get(name, 32)
    drawn = {}
    x, redrawn = draw_inputs(model, args.samples, image, seed=1, report=drawn)
    x_path = os.path.join(d, "input.npy")
    np.save(x_path, x.numpy())
    with torch.no_grad():
        k = model(x[:1]).numel()
    left = drawn.get("kinksLeft", 0)
    print("%s: %d parameters, %dx%d input, K=%d, N=%d (%d candidate samples redrawn for kinks%s)" % (name, size, image, image, k, args.samples, redrawn, "; %d kink inputs within rounding left" % left if left else ""), flush=True)
    for variant in args.variants:
        try:
            ref_model = fused(model) if variant == "folded" else model
            started = time.time()
            refs, params = reference(ref_model, x)
            ref_seconds = time.time() - started
        except Exception as err:  # noqa: BLE001 - reported in the table
            for opset in args.opsets:
                rows.append({"model": name, "opset": opset, "variant": variant, "status": "error", "message": "reference: %s" % err})
            print("  %-7s reference error: %s" % (variant, str(err).splitlines()[0][:200]), flush=True)
            continue
        for opset in args.opsets:
            path = os.path.join(d, "%s_op%d.onnx" % (variant, opset))
            row = {"model": name, "opset": opset, "variant": variant, "samples": args.samples, "K": k, "D": size, "kinksLeft": left}
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    export(model, x, path, opset, variant == "folded")
            except Exception as err:  # noqa: BLE001
                row.update(status="no export", message=str(err).splitlines()[0][:300])
                rows.append(row)
                print("  %-7s op%-2d no export: %s" % (variant, opset, row["message"]), flush=True)
                continue
            row.update(check_export(path, x_path, d, refs, params, args.keep))
            row["referenceSeconds"] = round(ref_seconds, 2)
            rows.append(row)
            extra = "" if row["status"] == "pass" else "  " + row.get("message", "").splitlines()[0][:200] if row.get("message") else ""
            err = "" if "worstError" not in row else " err %.1e" % row["worstError"]
            print("  %-7s op%-2d %-8s%s (%.1f s)%s" % (variant, opset, row["status"], err, row["seconds"], extra), flush=True)
            if not args.keep:
                os.remove(path)
        del refs
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="*", help="torchvision model names (default: the issue's list)")
    ap.add_argument("--all", action="store_true", help="every torchvision classifier, not only the default list")
    ap.add_argument("--opsets", type=lambda s: [int(v) for v in s.split(",")], default=[11, 13, 17])
    ap.add_argument("--variants", type=lambda s: s.split(","), default=["folded", "kept"])
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--out", default=os.path.join(ROOT, "zoo-out"))
    ap.add_argument("--keep", action="store_true", help="keep the exported models and the CLI's outputs")
    ap.add_argument("--summary", nargs="+", metavar="RESULTS", help="only print the table of these results.json files (later ones override rows of the same model, opset and variant)")
    args = ap.parse_args()
    if args.summary:
        merged = collections.OrderedDict()
        for path in args.summary:
            with open(path) as f:
                for r in json.load(f):
                    merged[(r["model"], r.get("opset"), r.get("variant"))] = r
        return print_table(list(merged.values()), ", ".join(args.summary))
    names = args.models or (torchvision.models.list_models(module=torchvision.models) if args.all else DEFAULT_MODELS)
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))
    warnings.filterwarnings("ignore")
    os.makedirs(args.out, exist_ok=True)
    build_cli(args.out)
    atexit.register(shutil.rmtree, os.path.dirname(os.path.dirname(CLI)), True)
    results_path = os.path.join(args.out, "results.json")
    rows = []
    for name in names:
        try:
            rows += run_model(name, args, args.out)
        except Exception as err:  # noqa: BLE001 - one model's trouble does not stop the matrix
            rows.append({"model": name, "status": "error", "message": "script: %s" % str(err).splitlines()[0][:300]})
            print("  error: %s" % err, flush=True)
        with open(results_path, "w") as f:
            json.dump(rows, f, indent=1)
    return print_table(rows, results_path)


def print_table(rows, where):
    print()
    print("%-22s %-6s %-7s %-9s %-9s %s" % ("model", "opset", "variant", "status", "max err", "note"))
    for r in rows:
        err = "%.1e" % r["worstError"] if "worstError" in r else ""
        note = " ".join((r.get("message") or "").replace("the model is not eligible:", "").split())[:110]
        print("%-22s %-6s %-7s %-9s %-9s %s" % (r["model"], r.get("opset", ""), r.get("variant", ""), r["status"], err, note))
    counts = collections.Counter(r["status"] for r in rows)
    print("\n%s  (results in %s)" % (", ".join("%d %s" % (v, k) for k, v in sorted(counts.items())), where))
    return 0 if counts.get("FAIL", 0) == 0 and counts.get("error", 0) == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
