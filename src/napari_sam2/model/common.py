"""Small building blocks shared by several components."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.weak import WeakIdKeyDictionary

# Largest transient tensor of a chunk of windows or tokens (see `apply_in_row_chunks`).
CHUNK_BYTES = 8 * 2**20

# oneDNN's linear with the bias (and an activation) fused into the matmul.
_LINEAR_POINTWISE = getattr(torch.ops.mkldnn, "_linear_pointwise", None)
# parameter -> {row order or None: (key, low-precision copy)}; see `lowp_param`
_LOWP_CACHE: WeakIdKeyDictionary = WeakIdKeyDictionary()


def lowp_dtype(device: torch.device) -> torch.dtype | None:
    """bfloat16 while CPU autocast to bfloat16 is on and no gradient is recorded, else None.

    Under it the network takes its CPU low-precision path: linear layers run on cached
    bfloat16 weights through oneDNN with the bias fused (`linear`), and activations that the
    next matmul would cast anyway are cast once where they are made, so copies and reshapes
    move half the bytes. It is the arithmetic autocast does, without autocast casting every
    weight on every call (it caches nothing under `torch.inference_mode`).
    """
    if device.type != "cpu" or torch.is_grad_enabled() or not torch.is_autocast_enabled("cpu"):
        return None
    dtype = torch.get_autocast_dtype("cpu")
    return dtype if dtype == torch.bfloat16 else None


def lowp_param(
    p: torch.Tensor, dtype: torch.dtype, rows: torch.Tensor | None = None
) -> torch.Tensor:
    """p cast to dtype (p[rows] with an index tensor rows), cached until p or rows change (in
    place, or their storage is replaced)."""
    try:
        key = (dtype, p.device, p.data_ptr(), p._version)
        if rows is not None:
            key += (rows.device, rows.data_ptr(), rows._version)
    except RuntimeError:  # an inference tensor has no version counter: no cache
        return (p if rows is None else p[rows]).to(dtype)
    variants = _LOWP_CACHE.get(p)
    if variants is None:
        variants = _LOWP_CACHE[p] = {}
    variant = (dtype, None if rows is None else id(rows))  # one entry per cast and order
    hit = variants.get(variant)
    if hit is None or hit[0] != key:
        value = p.detach() if rows is None else p.detach()[rows]
        hit = variants[variant] = (key, value.to(dtype))
    return hit[1]


def add_(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """x += y in place. A y of another dtype is cast first: the same sums, but torch's CPU
    kernels for mixed-dtype inputs are not vectorized (about twice as slow as cast + add)."""
    return x.add_(y if y.dtype == x.dtype else y.to(x.dtype))


def add(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """x + y, with inputs of two float dtypes summed as cast + add (see `add_`)."""
    if x.dtype == y.dtype:
        return x + y
    dtype = torch.promote_types(x.dtype, y.dtype)
    low, high = (x, y) if x.dtype != dtype else (y, x)
    if low.dtype == dtype or low.shape != torch.broadcast_shapes(x.shape, y.shape):
        return x + y
    return low.to(dtype).add_(high)  # a fresh tensor: low has another dtype


_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,
    "relu": F.relu,
}


def activation_name(act: nn.Module) -> str | None:
    """ "gelu" / "relu" for the activations oneDNN fuses exactly, else None."""
    if type(act) is nn.GELU and act.approximate == "none":
        return "gelu"
    if type(act) is nn.ReLU:
        return "relu"
    return None


def linear(layer: nn.Linear, x: torch.Tensor, activation: str | None = None) -> torch.Tensor:
    """layer(x), then activation ("gelu", "relu" or None).

    On the CPU low-precision path (`lowp_dtype`) the weights are cached bfloat16 copies and
    oneDNN adds the bias and applies the activation inside the matmul (torch's addmm first
    copies the bias into the output, a pass over it as long as the matmul itself for the
    narrow layers of Hiera's first stages).
    """
    dtype = lowp_dtype(x.device)
    if dtype is None:
        y = layer(x)
        return y if activation is None else _ACTIVATIONS[activation](y)
    w = lowp_param(layer.weight, dtype)
    b = None if layer.bias is None else lowp_param(layer.bias, dtype)
    return lowp_linear(x, w, b, activation)


def lowp_linear(
    x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, activation: str | None = None
) -> torch.Tensor:
    """F.linear(x, w, b) then activation, in the dtype of the (cached, see `lowp_param`)
    low-precision weights w and b, through oneDNN's fused linear where torch has it."""
    x = x.to(w.dtype)
    if _LINEAR_POINTWISE is not None and torch.backends.mkldnn.is_available():
        algorithm = "none" if activation == "gelu" else ""
        return _LINEAR_POINTWISE(x, w, b, activation or "none", [], algorithm)
    y = F.linear(x, w, b)
    return y if activation is None else _ACTIVATIONS[activation](y)


def apply_in_row_chunks(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, rows: int
) -> torch.Tensor:
    """fn(x) for an fn that treats the rows (axis 0) of x independently, `rows` at a time.

    Keeps transient tensors small on the CPU: glibc serves allocations above 32 MB with fresh
    memory maps that are page-faulted in on every call, which cost the image encoder about
    15 % of its time on 1024 px frames. Elsewhere (a GPU's caching allocator has no such cost)
    fn runs once: chunks there only multiply the kernel launches (tiny at 1024 px: 2,979
    operator calls per tracked frame chunked, 1,338 whole) and the graphs torch.compile builds.
    """
    if x.shape[0] <= rows or x.device.type != "cpu":
        return fn(x)
    first = fn(x[:rows])
    out = first.new_empty((x.shape[0], *first.shape[1:]))
    out[:rows] = first
    for start in range(rows, x.shape[0], rows):
        out[start : start + rows] = fn(x[start : start + rows])
    return out


class MLP(nn.Module):
    """Linear layers with an activation between them (none after the last)."""

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int,
        out_dim: int,
        num_layers: int,
        activation: type[nn.Module] = nn.ReLU,
        sigmoid_output: bool = False,
    ) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True)
        )
        self.act = activation()
        self.sigmoid_output = sigmoid_output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.layers) - 1
        if lowp_dtype(x.device) is not None:
            fused = activation_name(self.act)
            for i, layer in enumerate(self.layers):
                if i < last and fused is None:
                    x = self.act(linear(layer, x))
                else:
                    x = linear(layer, x, fused if i < last else None)
            return torch.sigmoid(x) if self.sigmoid_output else x
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = self.act(x)
        return torch.sigmoid(x) if self.sigmoid_output else x


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of a (B, C, H, W) map."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, x.shape[-1:], self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)
