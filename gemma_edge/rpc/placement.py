"""Which layers run where (pure): llama.cpp's own placement rule, so that the reported placement is
the one it makes."""
from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from typing import Sequence

from gemma_edge.errors import RpcError


@dataclass(frozen=True)
class Placement:
    """Which layers run where. `devices[0]` is the local CPU, then the workers in llama.cpp's order.
    Layer index n_layers is the output layer (llama.cpp places it with the last offloaded layer)."""
    devices: tuple[str, ...]
    weights: tuple[float, ...]
    n_layers: int
    n_gpu_layers: int
    tensor_split: tuple[float, ...] | None
    layer_device: tuple[int, ...]

    def llama_options(self) -> dict:
        """Keyword arguments for llama_cpp.Llama that produce this placement."""
        options = {"n_gpu_layers": self.n_gpu_layers}
        if self.tensor_split is not None:
            options["tensor_split"] = list(self.tensor_split)
        return options

    def ranges(self) -> list[dict]:
        """Per device: its share and the layer indices it holds (n_layers means the output layer)."""
        out = []
        for d, name in enumerate(self.devices):
            layers = [i for i, dev in enumerate(self.layer_device) if dev == d]
            out.append({"device": name, "weight": self.weights[d], "layers": len(layers),
                        "first_layer": layers[0] if layers else None, "last_layer": layers[-1] if layers else None,
                        "output_layer": bool(layers) and layers[-1] == self.n_layers})
        return out

    def as_dict(self) -> dict:
        return {"n_layers": self.n_layers, "n_gpu_layers": self.n_gpu_layers,
                "tensor_split": list(self.tensor_split) if self.tensor_split else None, "devices": self.ranges()}


def plan(n_layers: int, devices: Sequence[str], weights: Sequence[float]) -> Placement:
    """Place n_layers repeating layers + the output layer on the local CPU (devices[0]) and the workers,
    each in proportion to its weight (free memory, or the user's --split). Mirrors llama.cpp's rule
    (llama_model::load_tensors)."""
    if len(devices) != len(weights):
        raise RpcError(f"--split has {len(weights)} values but there are {len(devices)} devices "
                       f"(this machine first, then each worker): {', '.join(devices)}")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise RpcError("--split values must be >= 0 with a positive sum")
    slots = n_layers + 1
    local = round(slots * weights[0] / sum(weights))
    remote = list(weights[1:])
    if sum(remote) <= 0:
        local = slots
    n_gpu_layers = slots - local
    if n_gpu_layers == 0:
        return Placement(tuple(devices), tuple(weights), n_layers, 0, None, (0,) * slots)
    cumulative, total = [], 0.0
    for w in remote:
        total += w
        cumulative.append(total)
    cumulative = [c / total for c in cumulative]
    layer_device = tuple(0 if il < local else 1 + bisect_right(cumulative, (il - local) / n_gpu_layers)
                         for il in range(slots))
    return Placement(tuple(devices), tuple(weights), n_layers, n_gpu_layers, tuple(remote), layer_device)
