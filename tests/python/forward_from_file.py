"""Rebuilds the model from a ringtrain safetensors file alone (names,
shapes and the spec in the metadata) and runs it with NumPy.

usage: forward_from_file.py MODEL.safetensors DATASET_DIR
prints one line per classify/binary task: "<task> accuracy <value>"
"""
import json
import sys

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file

path, data = sys.argv[1], sys.argv[2]
p = load_file(path)
meta = safe_open(path, "np").metadata()
spec = json.loads(meta["ringtrain.spec"])
# The exact activation: GELU's tanh form is "gelu_tanh" (PyTorch's
# nn.GELU(approximate="tanh")), never the erf GELU.
assert meta["ringtrain.activation"] == spec["activation"], meta
act = {
    "relu": lambda z: np.maximum(z, 0),
    "tanh": np.tanh,
    "gelu_tanh": lambda z: 0.5 * z * (1 + np.tanh(0.7978845608028654 * (z + 0.044715 * z**3))),
}[spec["activation"]]
torch = {"relu": "nn.ReLU()", "tanh": "nn.Tanh()", "gelu_tanh": "nn.GELU(approximate='tanh')"}
assert meta["ringtrain.torch_activation"] == torch[spec["activation"]], meta
print("activation", spec["activation"])


def forward(x):
    h = x
    for i in range(len(spec["hidden"])):
        h = act(h @ p[f"trunk.{2 * i}.weight"].T + p[f"trunk.{2 * i}.bias"])
    return {
        t["name"]: h @ p[f"heads.{t['name']}.weight"].T + p[f"heads.{t['name']}.bias"]
        for t in spec["tasks"]
    }


out = forward(np.load(f"{data}/val/x.npy"))
for t in spec["tasks"]:
    y = np.load(f"{data}/val/{t['name']}.npy")
    if t["kind"] == "classify":
        m = y >= 0
        print(t["name"], "accuracy", (out[t["name"]].argmax(1)[m] == y[m]).mean())
    elif t["kind"] == "binary":
        m = y >= 0
        print(t["name"], "accuracy", ((out[t["name"]][:, 0] > 0)[m] == (y[m] == 1)).mean())
