#!/usr/bin/python3
"""Build the benchmark models and their inputs: bench/models/<name>/.

Each model is a small PyTorch network (torch.manual_seed(0), eval mode)
exported to ONNX (opset 13, dynamic batch axis) as model.onnx, with a
torch.randn input batch as input.npy (float32, the largest N the benchmark
needs; the runner takes leading rows for smaller N) and meta.json describing
N, the per-sample output shape K and the number of parameters D.

    /usr/bin/python3 bench/models.py               # every model
    /usr/bin/python3 bench/models.py mlp784 seed   # only these
    /usr/bin/python3 bench/models.py --list        # names, one a line (no torch needed)

torch_bench.py imports build() from here, so the torch side rebuilds exactly
the exported weights. Needs Debian's python3-torch, python3-onnx and
python3-numpy; the files are not committed (see bench/.gitignore).
"""

import collections
import json
import os
import sys

ROOT = os.path.dirname(os.path.abspath(__file__))
MODELS_DIR = os.path.join(ROOT, "models")
OPSET = 13

# name -> (per-sample input shape, largest N needed, description)
SPECS = collections.OrderedDict(
    [
        (
            "seed",
            ((1, 6, 6, 6), 1000, "Conv3d(1,2,2,bias=False), ReLU, Conv3d(2,1,2), ReLU, AvgPool3d(4), Flatten"),
        ),
        (
            "mlp784",
            ((784,), 10000, "Linear(784,256), Tanh, Linear(256,128), Tanh, Linear(128,1)"),
        ),
        (
            "cnn28",
            (
                (1, 28, 28),
                1000,
                "Conv2d(1,16,3,p=1), ReLU, MaxPool2d(2), Conv2d(16,32,3,p=1), ReLU, MaxPool2d(2), "
                "Flatten, Linear(1568,64), ReLU, Linear(64,1)",
            ),
        ),
        (
            "resnet18",
            ((3, 32, 32), 32, "torchvision resnet18(num_classes=1): one logit, 32x32 inputs, D = 11.2M"),
        ),
        (
            "mobilenet_v2",
            ((3, 32, 32), 32, "torchvision mobilenet_v2(num_classes=1): one logit, 32x32 inputs, D = 2.2M"),
        ),
        (
            "efficientnet_b0",
            ((3, 32, 32), 32, "torchvision efficientnet_b0(num_classes=1): one logit, 32x32 inputs, D = 4.0M"),
        ),
        (
            "lenet10",
            (
                (1, 28, 28),
                256,
                "Conv2d(1,6,5), ReLU, MaxPool2d(2), Conv2d(6,16,5), ReLU, MaxPool2d(2), Flatten, "
                "Linear(256,120), ReLU, Linear(120,84), ReLU, Linear(84,10)",
            ),
        ),
    ]
)


# Random weights with the zoo's conventions (scripts/zoo.py): every constant-initialised tensor
# randomised (so the exporter shares none), inputs drawn away from ReLU/ReLU6/MaxPool kinks, and
# exported with BatchNorm kept and module names (do_constant_folding=False, training=PRESERVE),
# so that the initializers are the torch parameters and buffers.
TORCHVISION = ("resnet18", "mobilenet_v2", "efficientnet_b0")


def zoo():
    sys.path.insert(0, os.path.join(os.path.dirname(ROOT), "scripts"))
    import zoo as module

    return module


def network(name):
    import torch.nn as nn

    if name in TORCHVISION:
        import torchvision

        model = getattr(torchvision.models, name)(weights=None, num_classes=1)
        zoo().randomize(model)
        return model

    if name == "seed":
        return nn.Sequential(
            nn.Conv3d(1, 2, 2, bias=False),
            nn.ReLU(),
            nn.Conv3d(2, 1, 2),
            nn.ReLU(),
            nn.AvgPool3d(4),
            nn.Flatten(1),
        )
    if name == "mlp784":
        return nn.Sequential(
            nn.Linear(784, 256), nn.Tanh(), nn.Linear(256, 128), nn.Tanh(), nn.Linear(128, 1)
        )
    if name == "cnn28":
        return nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(1568, 64),
            nn.ReLU(),
            nn.Linear(64, 1),
        )
    if name == "lenet10":
        return nn.Sequential(
            nn.Conv2d(1, 6, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(256, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, 10),
        )
    raise KeyError(name)


def build(name):
    """(module in eval mode, input batch of the largest N) for `name`, seeded."""
    import torch

    shape, n, _ = SPECS[name]
    torch.manual_seed(0)
    module = network(name).eval()
    if name in TORCHVISION:
        x, _ = zoo().draw_inputs(module, n, shape[-1], seed=0)
    else:
        x = torch.randn((n,) + shape)
    return module, x


def export(name):
    import numpy as np
    import onnx
    import torch

    module, x = build(name)
    d = os.path.join(MODELS_DIR, name)
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "model.onnx")
    torch.onnx.export(
        module,
        (x[:2],),
        path,
        input_names=["input"],
        output_names=["output"],
        dynamic_axes={"input": {0: "N"}, "output": {0: "N"}},
        opset_version=OPSET,
        **(dict(do_constant_folding=False, training=torch.onnx.TrainingMode.PRESERVE) if name in TORCHVISION else {}),
    )
    onnx.checker.check_model(onnx.load(path))
    np.save(os.path.join(d, "input.npy"), np.ascontiguousarray(x.numpy(), dtype=np.float32))
    with torch.no_grad():
        k_shape = list(module(x[:1]).shape[1:])
    meta = collections.OrderedDict()
    meta["name"] = name
    meta["description"] = SPECS[name][2]
    meta["samples"] = SPECS[name][1]
    meta["inputShape"] = list(SPECS[name][0])
    meta["outputShape"] = k_shape
    meta["parameters"] = sum(p.numel() for p in module.parameters())
    meta["opset"] = OPSET
    meta["torch"] = torch.__version__
    with open(os.path.join(d, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    print("  %-8s N=%-6d K=%-6s D=%-7d -> %s" % (name, meta["samples"], tuple(k_shape), meta["parameters"], d))


def main(argv):
    if "--list" in argv:
        print("\n".join(SPECS))
        return 0
    names = argv or list(SPECS)
    unknown = [n for n in names if n not in SPECS]
    if unknown:
        print("unknown model(s): %s; known: %s" % (", ".join(unknown), ", ".join(SPECS)), file=sys.stderr)
        return 2
    for name in names:
        export(name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
