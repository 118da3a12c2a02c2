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
                10000,
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
        (
            "gpt",
            (
                (64,),
                32,
                "GPT-style decoder on int64 tokens (T=64, vocabulary 256): token + position Embeddings, 2 pre-LayerNorm "
                "blocks (d_model 128, 4 heads, causal Where mask, Softmax, GELU, MLP 512), final LayerNorm, vocabulary head; "
                "output the log-likelihood of the next tokens (one scalar per sample)",
            ),
        ),
        (
            "instnorm",
            ((1, 32, 32), 2, "Conv2d(1,10,1), InstanceNorm2d(10): K = (10,32,32) = 10,240 outputs, D = 20 (forward mode)"),
        ),
        (
            "autoenc",
            (
                (3, 32, 32),
                64,
                "Conv2d(3,2,2,s=2), GroupNorm(1,2), Tanh, ConvTranspose2d(2,3,2,s=2,bias=False), Sigmoid: K = (3,32,32), D = 54 (forward mode; torch: jacfwd)",
            ),
        ),
        (
            "resnet18_fc",
            ((3, 64, 64), 256, "torchvision resnet18(num_classes=10), only fc.* differentiated (--params 'fc.*'; torch: functorch restricted to fc)"),
        ),
        (
            "seqdense",
            (
                (16, 16),
                128,
                "sequence-first with a dense output: (N, T=16, 16) transposed to (T, N, 16), MultiheadAttention(16, 2), "
                "residual LayerNorm, Tanh, Linear(16, 16) per position: output (T, N, 16), K = 256, D = 1,392 "
                "(the mode choice; --params 'norm.*' gives D = 32 < K)",
            ),
        ),
        (
            "seqdense7",
            (
                (7, 16),
                128,
                "seqdense on sequences of 7: K = 112; the biases and the LayerNorm (--params 'attn.*_bias' --params "
                "'attn.out_proj.bias' --params 'norm.*' --params 'head.*') give D = 96, just under K",
            ),
        ),
    ]
)

GPT_VOCAB = 256
# Models whose output carries the samples on axis 1 (T, N, ...): the CLI writes J batch-first.
SEQUENCE_FIRST = {"seqdense", "seqdense7"}


# Parameters differentiated when not all of them (torch side and --params), and the
# functorch transform the torch side uses (jacrev by default).
SELECTED = {"resnet18_fc": ["fc.weight", "fc.bias"]}
TORCH_JACOBIAN = {"instnorm": "jacfwd", "autoenc": "jacfwd"}
# Exported without constant folding, so that every initializer keeps its parameter's name
# (folding turns GroupNorm's weight, unsqueezed, into a new initializer onnx::Mul_…).
NO_FOLDING = {"autoenc"}


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
    if name == "gpt":
        return gpt_network()
    if name == "instnorm":
        return nn.Sequential(nn.Conv2d(1, 10, 1), nn.InstanceNorm2d(10))
    if name == "autoenc":
        return nn.Sequential(
            nn.Conv2d(3, 2, 2, stride=2),
            nn.GroupNorm(1, 2),
            nn.Tanh(),
            nn.ConvTranspose2d(2, 3, 2, stride=2, bias=False),
            nn.Sigmoid(),
        )
    if name in ("seqdense", "seqdense7"):
        return SeqDense()
    if name == "resnet18_fc":
        import torchvision

        return torchvision.models.resnet18(num_classes=10)
    raise KeyError(name)


def SeqDense():
    import torch
    import torch.nn as nn

    class Net(nn.Module):
        def __init__(self, d=16, heads=2):
            super().__init__()
            self.attn = nn.MultiheadAttention(d, heads)
            self.norm = nn.LayerNorm(d)
            self.head = nn.Linear(d, d)

        def forward(self, x):
            h = x.transpose(0, 1)  # (T, N, d): the samples on axis 1
            a, _ = self.attn(h, h, h, need_weights=False)
            return self.head(torch.tanh(self.norm(h + a)))

    return Net()


def gpt_network(vocab=GPT_VOCAB, t=64, d=128, heads=4, layers=2):
    import math

    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
            self.fc, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
            self.register_buffer("mask", torch.tril(torch.ones(t, t, dtype=torch.bool)))

        def forward(self, x):
            B, T, C = x.shape
            q, k, v = [z.view(B, T, heads, C // heads).transpose(1, 2) for z in self.qkv(self.ln1(x)).split(C, dim=2)]
            att = torch.where(self.mask[:T, :T], q @ k.transpose(-2, -1) / math.sqrt(C // heads), torch.tensor(float("-inf")))
            y = (torch.softmax(att, dim=-1) @ v).transpose(1, 2).reshape(B, T, C)
            x = x + self.proj(y)
            return x + self.fc2(F.gelu(self.fc(self.ln2(x))))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(t, d)
            self.blocks = nn.ModuleList([Block() for _ in range(layers)])
            self.lnf = nn.LayerNorm(d)
            self.head = nn.Linear(d, vocab, bias=False)

        def forward(self, idx):
            T = idx.shape[1]
            x = self.wte(idx) + self.wpe(torch.arange(T))
            for block in self.blocks:
                x = block(x)
            logp = torch.log_softmax(self.head(self.lnf(x))[:, :-1], dim=-1)
            # The next tokens' one-hot by Equal (F.one_hot does not vmap): one scalar per sample.
            target = (idx[:, 1:].unsqueeze(2) == torch.arange(vocab)).to(logp.dtype)
            return (logp * target).sum(dim=(1, 2)).unsqueeze(1)

    return GPT()


def build(name):
    """(module in eval mode, input batch of the largest N) for `name`, seeded."""
    import torch

    shape, n, _ = SPECS[name]
    torch.manual_seed(0)
    module = network(name).eval()
    if name == "gpt":
        # Distinct values everywhere (LayerNorm ones, zero biases), so the exporter does not merge equal initializers.
        with torch.no_grad():
            for p in module.parameters():
                p.add_(0.02 * torch.randn_like(p))
        return module, torch.randint(0, GPT_VOCAB, (n,) + shape, dtype=torch.int64)
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
        dynamic_axes={"input": {0: "N"}, "output": {1 if name in SEQUENCE_FIRST else 0: "N"}},
        opset_version=OPSET,
        # The GPT keeps its initializers named after the parameters (MatMul through a Transpose), for the check against functorch.
        **(
            dict(do_constant_folding=False, training=torch.onnx.TrainingMode.PRESERVE)
            if name in TORCHVISION
            else dict(do_constant_folding=name != "gpt" and name not in NO_FOLDING)
        ),
    )
    onnx.checker.check_model(onnx.load(path))
    np.save(os.path.join(d, "input.npy"), np.ascontiguousarray(x.numpy(), dtype=np.int64 if name == "gpt" else np.float32))
    with torch.no_grad():
        y = module(x[:1])
        k_shape = list((y.transpose(0, 1) if name in SEQUENCE_FIRST else y).shape[1:])
    meta = collections.OrderedDict()
    meta["name"] = name
    meta["description"] = SPECS[name][2]
    meta["samples"] = SPECS[name][1]
    meta["inputShape"] = list(SPECS[name][0])
    meta["outputShape"] = k_shape
    named = dict(module.named_parameters())
    meta["selected"] = SELECTED.get(name)
    meta["parameters"] = sum(named[p].numel() for p in SELECTED.get(name, named))
    meta["torchJacobian"] = TORCH_JACOBIAN.get(name, "jacrev")
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
