"""Runs the name-mapping script of docs/pytorch.md on a model exported both ways (the
recipe and the default export), with the CLI's --as-tuple archive, against functorch.
Prints one JSON object; test/pytorch.doc.test.ts asserts on it. Needs torch (Debian's)."""
import json
import os
import re
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torch.nn as nn
import functorch
from torch.nn.utils.stateless import functional_call

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
doc = open(os.path.join(ROOT, "docs", "pytorch.md")).read()
blocks = re.findall(r"```python\n(.*?)```", doc, re.S)
script = next(b for b in blocks if b.startswith("# onnx_names.py"))
names = {"__name__": "onnx_names"}
exec(script, names)
recipe = blocks[0]


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.token = nn.Linear(6, 5)  # applied to (N, 4, 6): MatMul with a transposed weight
        self.head = nn.Linear(4 * 5, 2)

    def forward(self, x):
        h = torch.relu(self.bn(self.conv(x)))  # (N, 4, 6, 6)
        h = self.token(h.mean(2))  # (N, 4, 5)
        return self.head(h.flatten(1))


torch.manual_seed(0)
model = Net()
with torch.no_grad():
    model.bn.weight.uniform_(0.5, 1.5)
    model.bn.bias.normal_(0, 0.3)
    model.bn.running_mean.normal_(0, 0.3)
    model.bn.running_var.uniform_(0.5, 1.5)
model.eval()
# Inputs away from the ReLU kink.
for seed in range(100):
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        if float(model.bn(model.conv(x)).abs().min()) > 1e-3:
            break

params = {k: v.detach() for k, v in model.named_parameters()}
def single(ps, xi):
    return functional_call(model, dict(zip(params, ps)), (xi.unsqueeze(0),))[0]
reference = dict(zip(params, functorch.vmap(functorch.jacrev(single), in_dims=(None, 0))(tuple(params.values()), x)))

out = {}
with tempfile.TemporaryDirectory() as d:
    np.save(os.path.join(d, "x.npy"), x.numpy())
    for variant in ("recipe", "default"):
        path = os.path.join(d, "model.onnx")
        if variant == "recipe":
            # The recipe as written, with our model, batch and path.
            code = re.sub(r"^x = .*$", "", recipe, flags=re.M).replace('"model.onnx"', repr(path))
            exec(code, {"torch": torch, "model": model, "x": x[:2]})
        else:
            torch.onnx.export(model, (x[:2],), path, input_names=["input"], output_names=["output"], dynamic_axes={"input": {0: "N"}, "output": {0: "N"}}, opset_version=13)
        npz = os.path.join(d, "J.npz")
        run = subprocess.run(["node", os.path.join(ROOT, "bin", "jacobian.js"), path, "-i", os.path.join(d, "x.npy"), "--as-tuple", "-o", npz, "-q"], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        mapping = names["map_initializers"](path, model)
        by_parameter = names["blocks_by_parameter"](npz, path, mapping, model)
        errors = {k: float(np.abs(v - reference[k].numpy()).max() / max(1.0, float(reference[k].abs().max()))) for k, v in by_parameter.items()}
        with np.load(npz) as archive:
            original = json.loads(archive["__names__.json"]) if "__names__.json" in archive.files else {}
            entries = [original.get(e, e) for e in archive.files if e != "__names__.json"]
            out[variant] = {"mapping": {k: list(v) for k, v in mapping.items()}, "entries": entries, "errors": errors}
print(json.dumps(out))
