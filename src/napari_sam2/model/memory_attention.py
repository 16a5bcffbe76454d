"""Memory attention: the current frame's tokens attend to themselves and to the memory bank
(spatial memories and object pointers), with axial RoPE on the spatial tokens."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.weak import WeakIdKeyDictionary

from .common import CHUNK_BYTES, apply_in_row_chunks, linear, lowp_dtype, lowp_linear, lowp_param
from .config import SAM2Config
from .position_encoding import axial_rope_tables, rope_halves_order, rotate_halves

# Scratch for one block of cross-attention scores on the CPU (queries x memory tokens), under
# 32 MiB: glibc maps anything larger afresh on every frame (its mmap threshold stops rising at
# 32 MiB), where a block this size reuses the heap pages the image encoder has just freed.
# Float32 at 1024 px: 16 blocks of 256 rows instead of 7 of 583 and one of 15; the 64-frame
# peak of `bench_memory.py --path tracker` 1032-1079 MB against 1080-1121 MB, speed within 2 %
# (benchmarks/README.md).
_SCORE_BUFFER_BYTES = 30 * 2**20
# The same on the CPU low-precision path (`lowp_dtype`): blocks of bfloat16 scores, 512 query
# rows of a 1024 px frame's 28,736 memory tokens (8 blocks per layer). Measured in the tracker
# (benchmarks/README.md): memory attention 4-7 % faster than with 16 MiB blocks of 274 rows,
# and faster than 24, 48 or 64 MiB.
_LOWP_SCORE_BUFFER_BYTES = 32 * 2**20
# Rows per chunk of the low-precision RoPE (`_rotate_lowp_`): a float32 scratch of 1 MiB that
# stays in the core's cache. 1024 rather than 256 rows: a bfloat16 tracked frame 2 % faster
# (benchmarks/README.md), as a quarter of the chunks makes a quarter of Python's calls.
_ROPE_CHUNK_ROWS = 1024
# Float32 elements per scratch chunk of the low-precision RoPE of transposed memory keys
# (`_rotate_columns_lowp_`): 4 feature rows of 7 memory frames at 1024 px.
_ROPE_CHUNK_ELEMENTS = 2**17
# Transposed RoPE tables (D/2, t), made once per table.
_TRANSPOSED_TABLES: WeakIdKeyDictionary = WeakIdKeyDictionary()


class RoPEAttention(nn.Module):
    """Single-head attention with 2-D axial RoPE on queries and (spatial) keys."""

    def __init__(self, dim: int, kv_in_dim: int, theta: float) -> None:
        super().__init__()
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(kv_in_dim, dim)
        self.v_proj = nn.Linear(kv_in_dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.theta = theta
        self.register_buffer("halves_order", rope_halves_order(dim), persistent=False)

    def _project_in_halves(self, linear: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        """linear(x) with its features in halves order, ready for `rotate_halves`.

        On the CPU low-precision path the reordered weights are cached bfloat16 copies (see
        `lowp_param`) and the bias is fused into oneDNN's matmul.
        """
        dtype = lowp_dtype(x.device)
        if dtype is not None:
            w = lowp_param(linear.weight, dtype, self.halves_order)
            b = lowp_param(linear.bias, dtype, self.halves_order)
            return lowp_linear(x, w, b)
        return F.linear(x, linear.weight[self.halves_order], linear.bias[self.halves_order])

    def uses_raw_values(self, device: torch.device) -> bool:
        """Whether attention weights are applied to the narrow values before v_proj: on the
        CPU, without autograd (the blocks are written into a scratch buffer)."""
        return (
            device.type == "cpu"
            and not torch.is_grad_enabled()
            and self.v_proj.in_features < self.v_proj.out_features
        )

    def forward(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        num_k_exclude_rope: int = 0,
        scores: torch.Tensor | None = None,
        keys_t: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """q (B, n, C) or (1, n, C); k, v (B, m, kv_in_dim); the last num_k_exclude_rope keys
        keep no RoPE.

        A single q with B > 1 memories is shared: its projection and rotation are computed once
        and every memory is attended with it (objects tracked on the same frame, whose queries
        are the frame's features in the first layer). scores: optional scratch (rows, m) for
        the CPU path of `uses_raw_values`; keys_t: optional scratch (C, m) for its transposed
        keys on the low-precision path (see `key_buffer`).
        """
        cos, sin = rope
        n_rope = k.shape[1] - num_k_exclude_rope
        if n_rope > 0 and n_rope % cos.shape[0]:
            raise ValueError(
                f"{n_rope} spatial memory tokens are not whole frames of {cos.shape[0]} "
                "tokens; check num_pointer_tokens"
            )
        q, lowp = self._project_and_rotate(self.q_proj, q, rope, q.shape[1])
        if self.uses_raw_values(q.device):
            # each memory's keys are projected and rotated as it is attended: with B objects
            # only one (m, C) key matrix exists at a time, not B of them
            out = self._attend_to_raw_values(q, k, v, scores, lowp, rope, n_rope, keys_t)
            return self.out_proj(out) if lowp is None else linear(self.out_proj, out)
        k, _ = self._project_and_rotate(self.k_proj, k, rope, n_rope)
        return self._attend(q, k, v, lowp)

    def _project_and_rotate(
        self, proj: nn.Linear, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], n: int
    ) -> tuple[torch.Tensor, torch.dtype | None]:
        """proj(x) in halves order with its first n tokens (whole frames of the rope tables'
        grid; the rest are pointer tokens) rotated, and the low-precision dtype it was computed
        in (None: the tables' dtype)."""
        cos, sin = rope
        x = self._project_in_halves(proj, x)
        lowp = lowp_dtype(x.device)
        if lowp is not None and x.dtype == lowp != cos.dtype:
            _rotate_lowp_(x, cos, sin, n)  # in place, chunk by chunk through float32
            return x, lowp
        if n == 0:
            return x, None
        # every spatial memory frame reuses the query grid's rotations
        frames = x[:, :n].unflatten(1, (n // cos.shape[0], cos.shape[0]))
        rotated = rotate_halves(frames, cos, sin)
        if rotated is not frames:  # rotated out of place (other dtype, autograd)
            x = torch.cat((rotated.flatten(1, 2), x[:, n:]), dim=1)
        return x, None

    def _attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lowp: torch.dtype | None
    ) -> torch.Tensor:
        """out_proj(attention of rotated q and k on v_proj(v)), in torch's fused kernel."""
        if q.shape[0] != k.shape[0]:
            q = q.expand(k.shape[0], -1, -1)
        values = self.v_proj(v) if lowp is None else linear(self.v_proj, v)
        out = F.scaled_dot_product_attention(q.unsqueeze(1), k.unsqueeze(1), values.unsqueeze(1))
        if lowp is not None:
            return linear(self.out_proj, out.squeeze(1))
        return self.out_proj(out.squeeze(1))

    def _attend_to_raw_values(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        scores: torch.Tensor | None,
        lowp: torch.dtype | None,
        rope: tuple[torch.Tensor, torch.Tensor],
        n_rope: int,
        keys_t: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """softmax(q k^T / sqrt(C)) v_proj(v), with v_proj applied after the attention; q is
        rotated, k the raw key input (B, m, kv_in_dim), projected and rotated here memory by
        memory (its first n_rope tokens, see `_project_and_rotate`).

        The attention weights of a query sum to one, so they commute with the affine value
        projection: attending to the narrow memory (kv_in_dim = 64) and projecting afterwards
        is the same function at a quarter of the cost of the weighted sum. torch's flash
        kernel needs equal query and value widths, so the scores are computed here in blocks
        of queries that fit the scratch buffer.
        """
        n, m = q.shape[1], k.shape[1]
        if scores is None:
            scores = score_buffer(q, m, lowp)
        if lowp is not None and keys_t is None:
            keys_t = key_buffer(q, m, lowp)
        if lowp is not None:
            v = v.to(lowp)  # what autocast would cast for every block's matmul
        rows = scores.shape[0]
        real, padded = scores[:, :m], scores.shape[1] > m  # the keys' columns, padding after
        q = q * q.shape[-1] ** -0.5
        shared_q = q.shape[0] == 1  # one query set for all memories (see `forward`)
        out = v.new_empty(k.shape[0], n, v.shape[-1])
        key_scratch = None
        if lowp is None and not torch.is_autocast_enabled("cpu"):
            key_scratch = k.new_empty((m, self.k_proj.out_features))  # shared by the objects
        for b in range(k.shape[0]):
            if key_scratch is not None:
                k_t = self._rotated_keys(k[b], rope, n_rope, key_scratch).t()  # mm reads (C, m)
            elif lowp is None:
                keys, _ = self._project_and_rotate(self.k_proj, k[b : b + 1], rope, n_rope)
                k_t = keys[0].t()  # (C, m), a view: mm reads it transposed
            else:
                k_t = self._rotated_keys_t_lowp(k[b], rope, n_rope, keys_t[:, :m])
            q_b, v_b = q[0 if shared_q else b], v[b]
            # one split per operand, not slices per block: Python's calls add up (32 blocks a
            # frame at 1024 px)
            for q_block, out_block in zip(q_b.split(rows), out[b].split(rows), strict=True):
                size = q_block.shape[0]
                block, weights = (scores, real) if size == rows else (scores[:size], real[:size])
                torch.mm(q_block, k_t, out=weights)
                if padded:
                    block[:, m:].fill_(float("-inf"))  # padding columns weigh nothing
                torch.softmax(block, dim=-1, out=block)
                torch.mm(weights, v_b, out=out_block)
        return self.v_proj(out) if lowp is None else linear(self.v_proj, out)

    def _rotated_keys(
        self,
        k: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        n_rope: int,
        out: torch.Tensor,
    ) -> torch.Tensor:
        """The projected keys of one memory, k (m, kv_in_dim), written into out (m, C) in halves
        order, their first n_rope tokens rotated frame by frame: bitwise what
        `_project_and_rotate` makes, without a fresh key matrix per layer and object (28 MB in
        float32 at 1024 px) or a copy of every frame's first halves at once."""
        order = self.halves_order
        torch.addmm(self.k_proj.bias[order], k, self.k_proj.weight[order].t(), out=out)
        cos, sin = rope
        for start in range(0, n_rope, cos.shape[0]):
            rotate_halves(out[start : start + cos.shape[0]], cos, sin)  # in place
        return out

    def _rotated_keys_t_lowp(
        self,
        k: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        n_rope: int,
        out: torch.Tensor,
    ) -> torch.Tensor:
        """The projected keys of one memory, k (m, kv_in_dim), written transposed into out
        (C, m, rows contiguous) of the low-precision dtype, in halves order, their first n_rope
        tokens rotated.

        The score product reads such a (C, m) key matrix about a third faster than the
        transpose of (m, C) keys, and W k^T makes it directly. The bias is added in float32
        with the rotation (`_rotate_columns_lowp_`).
        """
        w = lowp_param(self.k_proj.weight, out.dtype, self.halves_order)
        bias = lowp_param(self.k_proj.bias, torch.float32, self.halves_order)
        k_t = torch.mm(w, k.to(out.dtype).t(), out=out)
        cos, sin = rope
        _rotate_columns_lowp_(k_t, _transposed(cos), _transposed(sin), bias, n_rope)
        return k_t


def _transposed(table: torch.Tensor) -> torch.Tensor:
    """table.t(), contiguous, made once per table."""
    hit = _TRANSPOSED_TABLES.get(table)
    if hit is None:
        hit = _TRANSPOSED_TABLES[table] = table.t().contiguous()
    return hit


def _rotate_columns_lowp_(
    k_t: torch.Tensor, cos_t: torch.Tensor, sin_t: torch.Tensor, bias: torch.Tensor, n: int
) -> None:
    """Add bias (D,) to low-precision transposed keys k_t (D, m) in halves order, in place, and
    rotate their first n columns by transposed tables (D/2, t) repeated every t columns (n a
    multiple of t), in float32: each column is rotated as `rotate_halves` rotates a token.

    Works through a few feature rows at a time (a row and its partner in the other half), over
    all memory frames at once: long contiguous rows through a float32 scratch that stays in
    the core's cache. The chunks' views are made by one `split` per operand, not sliced chunk
    by chunk: at 1024 px this runs 32 chunks per layer, and Python's calls were most of its
    time.
    """
    dim, half, t = k_t.shape[0], k_t.shape[0] // 2, cos_t.shape[1]
    frames = k_t[:, :n].view(dim, n // t, t)  # (D, frames, t)
    rows = max(1, min(half, _ROPE_CHUNK_ELEMENTS // max(1, n)))
    f1, f2, p, p2 = (k_t.new_empty((rows, n // t, t), dtype=torch.float32) for _ in range(4))
    per_row = bias[:, None, None]
    chunks = zip(
        frames[:half].split(rows),
        frames[half:].split(rows),
        per_row[:half].split(rows),
        per_row[half:].split(rows),
        cos_t[:, None].split(rows),
        sin_t[:, None].split(rows),
        strict=True,
    )
    for first, second, bias1, bias2, c, s in chunks if n else ():
        if first.shape[0] < rows:  # the last, shorter chunk
            f1, f2, p, p2 = (x[: first.shape[0]] for x in (f1, f2, p, p2))
        f1.copy_(first).add_(bias1)
        f2.copy_(second).add_(bias2)
        torch.mul(f1, c, out=p)
        torch.mul(f2, s, out=p2)
        first.copy_(p.sub_(p2))  # first * cos - second * sin
        torch.mul(f1, s, out=p)
        torch.mul(f2, c, out=p2)
        second.copy_(p.add_(p2))  # first * sin + second * cos
    pointers = k_t[:, n:]
    pointers.copy_(pointers.float().add_(bias[:, None]))


def key_buffer(q: torch.Tensor, num_keys: int, lowp: torch.dtype) -> torch.Tensor:
    """Scratch for the transposed low-precision keys (C, num_keys) of queries q (B, n, C), rows
    padded like `score_buffer`'s. Made once per call of the memory attention and reused by
    every layer and object: at 1024 px a fresh key matrix per layer and object is 15 MB of
    newly mapped pages (about 3,600 page faults) each time."""
    return q.new_empty((q.shape[-1], -(-num_keys // 16) * 16), dtype=lowp)


def score_buffer(q: torch.Tensor, num_keys: int, lowp: torch.dtype | None = None) -> torch.Tensor:
    """Scratch for blocks of attention scores of queries q (B, n, C) on num_keys keys; with
    lowp (the CPU low-precision path, see `lowp_dtype`) blocks in that dtype, of even size.

    Rows are padded to a multiple of 16 elements: the score GEMM is about a quarter slower
    when its output rows do not start on 64-byte boundaries (the number of object-pointer
    tokens changes the key count from frame to frame).
    """
    width = -(-num_keys // 16) * 16
    dtype = q.dtype if lowp is None else lowp
    budget = _SCORE_BUFFER_BYTES if lowp is None else _LOWP_SCORE_BUFFER_BYTES
    rows = max(1, min(q.shape[1], budget // (width * dtype.itemsize)))
    rows = -(-q.shape[1] // -(-q.shape[1] // rows))  # even blocks: a thin last block is slow
    return q.new_empty((rows, width), dtype=dtype)


def _rotate_lowp_(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, n: int) -> None:
    """Rotate the first n tokens of low-precision x (B, m, D) in halves order in place by
    tables (t, D/2) repeated every t tokens (n a multiple of t).

    The result is bitwise that of `rotate_halves`' out-of-place route (x cast to the tables'
    dtype, rotated, cast back), computed in chunks of rows through a small float32 scratch:
    no full-size float32 copies, products, concatenations or key copies. Each frame's chunks
    and their tables come from one `split` each (Python's calls cost more than the
    arithmetic of a small chunk).
    """
    t, half = cos.shape[0], x.shape[-1] // 2
    rows = min(_ROPE_CHUNK_ROWS, t)
    scratch = x.new_empty((rows, 2 * half), dtype=cos.dtype)
    prod = x.new_empty((2, rows, half), dtype=cos.dtype)
    tables = list(zip(cos.split(rows), sin.split(rows), strict=True))
    for b in range(x.shape[0]):
        for start in range(0, n, t):
            for chunk, (c, s) in zip(x[b, start : start + t].split(rows), tables, strict=True):
                size = chunk.shape[0]
                f = scratch if size == rows else scratch[:size]
                f.copy_(chunk)
                first, second = f.split(half, dim=1)
                p, p2 = (prod[0], prod[1]) if size == rows else (prod[0, :size], prod[1, :size])
                torch.mul(first, c, out=p)
                torch.mul(second, s, out=p2)
                chunk[:, :half].copy_(p.sub_(p2))  # first * cos - second * sin
                torch.mul(first, s, out=p)
                torch.mul(second, c, out=p2)
                chunk[:, half:].copy_(p.add_(p2))  # first * sin + second * cos


class MemoryAttentionLayer(nn.Module):
    def __init__(self, dim: int, mem_dim: int, ffn_dim: int, theta: float) -> None:
        super().__init__()
        self.self_attn = RoPEAttention(dim, dim, theta)
        self.cross_attn_image = RoPEAttention(dim, mem_dim, theta)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        keys: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        num_pointer_tokens: int,
        scores: torch.Tensor | None = None,
        keys_t: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """keys: memory + memory_pos, which every layer attends with (see `MemoryAttention`);
        scores, keys_t: scratch (see `RoPEAttention.forward`)."""
        a = self.norm1(x)
        x = x + self.self_attn(a, a, a, rope)
        a = self.norm2(x)
        x = x + self.cross_attn_image(a, keys, memory, rope, num_pointer_tokens, scores, keys_t)
        tokens = x.flatten(0, 1)
        hidden_bytes = self.linear1.out_features * x.element_size()
        if lowp_dtype(x.device) is not None:  # cached weights, bias and ReLU fused

            def ffn_fn(t: torch.Tensor) -> torch.Tensor:
                return linear(self.linear2, linear(self.linear1, self.norm3(t), "relu"))

        else:

            def ffn_fn(t: torch.Tensor) -> torch.Tensor:
                return self.linear2(F.relu(self.linear1(self.norm3(t)), inplace=True))

        ffn = apply_in_row_chunks(ffn_fn, tokens, max(1, CHUNK_BYTES // hidden_bytes))
        return x + ffn.view_as(x)


class MemoryAttention(nn.Module):
    def __init__(self, config: SAM2Config) -> None:
        super().__init__()
        c = config.hidden_dim
        self.dim = c
        self.theta = config.rope_theta
        self.layers = nn.ModuleList(
            MemoryAttentionLayer(c, config.mem_dim, config.memory_attention_ffn_dim, self.theta)
            for _ in range(config.memory_attention_layers)
        )
        self.norm = nn.LayerNorm(c)
        self._rope_cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def rope_tables(
        self, side: int, dtype: torch.dtype, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # tables made without autograd (inference tensors under inference mode) cannot be
        # used where autograd records; torch.compile traces is_grad_enabled, not inference mode
        key = (side, dtype, str(device), torch.is_grad_enabled())
        if key not in self._rope_cache:
            self._rope_cache[key] = axial_rope_tables(
                self.dim, side, self.theta, dtype=dtype, device=device
            )
        return self._rope_cache[key]

    def forward(
        self,
        x: torch.Tensor,
        x_pos: torch.Tensor,
        memory: torch.Tensor,
        memory_pos: torch.Tensor,
        num_pointer_tokens: int,
    ) -> torch.Tensor:
        """x, x_pos (B, G*G, C); memory, memory_pos (B, n, M) -> (B, G*G, C).

        x and x_pos may also be (1, G*G, C) with B memories (several objects tracked on one
        frame): the first layer's self-attention and query projection depend on the frame
        only and are computed once; from its cross-attention on, every object has its own
        tokens. Each object's result is that of attending it alone.
        """
        side = int(round(x.shape[1] ** 0.5))
        if side * side != x.shape[1]:
            raise ValueError("memory attention needs a square token grid")
        rope = self.rope_tables(side, self.norm.weight.dtype, x.device)
        lowp = lowp_dtype(x.device)
        scores = keys_t = None
        if self.layers and self.layers[0].cross_attn_image.uses_raw_values(x.device):
            scores = score_buffer(x, memory.shape[1], lowp)  # shared by the layers
            if lowp is not None:
                keys_t = key_buffer(x, memory.shape[1], lowp)
        x = x + 0.1 * x_pos
        keys = memory + memory_pos  # the same in every layer: summed once, not per layer
        if lowp is not None:  # what every layer's key projection and value product cast
            keys, memory = keys.to(lowp), memory.to(lowp)
        for layer in self.layers:
            x = layer(x, memory, keys, rope, num_pointer_tokens, scores, keys_t)
        if x.shape[0] != memory.shape[0]:  # no layers: every object gets the frame's tokens
            x = x.expand(memory.shape[0], -1, -1)
        return self.norm(x)
