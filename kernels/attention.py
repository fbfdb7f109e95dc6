"""Masked attention forward, FlashAttention-style, beside its PyTorch reference.

One program holds a block of queries of one (batch, head) and streams the keys past it in blocks,
keeping a running max and sum (online softmax, in exp2), so the N x N score matrix never reaches
memory. ``key_padding`` marks the keys that may be attended; a key block with none of them is
skipped before its dot products are issued, so a batch whose sequences are half padding costs about
half the work. A query row with no key to attend gets zeros, where a plain softmax would give NaN.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from ._launch import COMPILE_OPTIONS, check_device, dot_precision, on_device

try:  # host-side tensor descriptors (triton >= 3.4)
    from triton.tools.tensor_descriptor import TensorDescriptor
except ImportError:  # pragma: no cover - older triton: the pointer path only
    TensorDescriptor = None

_LOG2E = 1.4426950408889634  # softmax(x) = exp2(x * log2(e)) / sum: exp2 is the cheap instruction
_MAX_HEAD_DIM = 256


class AttentionConfig(NamedTuple):
    block_m: int  # queries per program
    block_n: int  # keys per inner step (and the granularity at which padded keys are skipped)
    num_warps: int
    num_stages: int
    # Load q, k, v and store the output through tensor descriptors (TMA on Hopper and newer) instead
    # of pointer tiles. Taken only where the layout allows it (see ``_descriptors``), else ignored.
    tma: bool = False
    # A cap on registers per thread (ptxas .maxnreg). On an H100 the 64 x 32 / 4-warp kernel takes 86,
    # which leaves room for 5 programs per SM (3072 programs at B=64, H=12, N=197: 4.7 waves); at 80
    # it compiles without spilling (radiofm.kernels.compile_check) and 6 fit (3.9 waves).
    maxnreg: int | None = None
    # Ragged ends in smaller tiles: the last query block of a sequence (n_q % block_m queries) and
    # the last key block (n_k % block_n keys) each take the smallest power-of-two tile (>= 16) that
    # holds them. At N=197 with 64 x 32 tiles that is 208 x 208 scores computed per (batch, head)
    # instead of 256 x 224 (25 % less tensor-core and exp2 work), for a second code path in the
    # kernel. ``"keys"``: the last key block only (256 x 208 at N=197). A query tile under 64 rows
    # cannot give each of 4 warps its own rows, so they split its keys and meet in shared memory for
    # every row max and sum (8 barriers per key block on sm_90, against 1): whether the 16-row tile's
    # saved work outweighs that is for a GPU to say. Pointer loads only (a descriptor's box is
    # fixed): ignored with ``tma``.
    tail: bool | str = False


def default_config(head_dim: int) -> AttentionConfig:
    """One config per head dim: tiles that compile on any GPU with tensor cores (all sides >= 16).

    64 queries per program gives 3072 programs at B=64, H=12, N=197 (even waves over 132 SMs) and a
    64 x d fp32 accumulator that 4 warps hold in registers. Key blocks of 32 for d >= 64: on an H100
    (benchmarks/results/gpu-h100-2026-11-27-gpu_check.json, sweep) 64 x 32 took 47.5 us against 49.3
    for 64 x 64 at B=64, H=12, N=197, d=64, fp16, and 53.7 against 57.6 us with half the keys padded
    (finer blocks also skip padding more closely); 128-key blocks and 32-query blocks were 1.7-2.8x
    slower. d=32 keeps 64 x 64 (1.36x SDPA there). benchmarks/gpu_check.py sweeps the alternatives.
    """
    if head_dim <= 32:
        return AttentionConfig(block_m=64, block_n=64, num_warps=4, num_stages=3)
    return AttentionConfig(block_m=64, block_n=32, num_warps=4, num_stages=3)


@triton.jit
def _load_tile(ptrs, valid_mask, d_mask, MASKED: tl.constexpr, EVEN_D: tl.constexpr):
    # A pointer tile of K or V: fully masked in a block with invalid keys, else only the padded head
    # dim (if any), else unmasked.
    if MASKED:
        tile = tl.load(ptrs, mask=valid_mask & d_mask, other=0.0)
    elif EVEN_D:
        tile = tl.load(ptrs)
    else:
        tile = tl.load(ptrs, mask=d_mask, other=0.0)
    return tile


@triton.jit
def _attend_block(acc, l_i, m_i, q, K, V, k_base, v_base, b, h, start_n, cols, valid, offs_d, d_ok, qk_scale,
                  stride_kn, stride_kd, stride_vn, stride_vd, DOT_PRECISION: tl.constexpr,
                  MASKED: tl.constexpr, EVEN_D: tl.constexpr, USE_TMA: tl.constexpr,
                  BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    # MASKED: this block holds keys past the end or padded keys (``valid`` says which); the full
    # blocks of an unpadded sequence skip every mask and select. EVEN_D: the head dim is BLOCK_D.
    # Pointer loads take K transposed (d x keys) so the dot needs no in-register transpose; a
    # descriptor load takes the (keys x d) box as stored and the dot reads it transposed.
    if USE_TMA:
        k = tl.trans(K.load([b, h, start_n, 0]).reshape(BLOCK_N, BLOCK_D))
    else:
        k = _load_tile(k_base + offs_d[:, None] * stride_kd + cols[None, :] * stride_kn,
                       valid[None, :], d_ok[:, None], MASKED, EVEN_D)
    qk = tl.dot(q, k, input_precision=DOT_PRECISION)
    if MASKED:
        # Also what keeps a padded key's NaN or inf (a descriptor load reads it) out of the max.
        qk = tl.where(valid[None, :], qk, float("-inf"))
    # The scale (> 0, with log2 e folded in) is applied once, fused into the exponent's argument.
    # Every block that reaches here holds at least one valid key, so m_new is finite and
    # exp2(m_i - m_new) is 0 (first block) or a proper rescale, never NaN.
    m_new = tl.maximum(m_i, tl.max(qk, axis=1) * qk_scale)
    alpha = tl.math.exp2(m_i - m_new)
    p = tl.math.exp2(qk * qk_scale - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, axis=1)
    if USE_TMA:
        v = V.load([b, h, start_n, 0]).reshape(BLOCK_N, BLOCK_D)
        if MASKED:  # a padded key's value may hold anything, inf and NaN included: 0 * inf is NaN
            v = tl.where(valid[:, None], v, 0.0)
    else:
        # Padded keys are never loaded: their values may hold anything, inf and NaN included.
        v = _load_tile(v_base + cols[:, None] * stride_vn + offs_d[None, :] * stride_vd,
                       valid[:, None], d_ok[None, :], MASKED, EVEN_D)
    # The rescaled accumulator goes into the dot as its addend (one MMA chain, no separate add).
    acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=DOT_PRECISION)
    return acc, l_i, m_new


@triton.jit
def _block_valid(KEY_PADDING, b, stride_pb, stride_pn, cols, n_k, HAS_PADDING: tl.constexpr):
    # Which keys of a block may be attended: inside the sequence and, with a padding mask, marked True.
    valid = cols < n_k
    if HAS_PADDING:
        valid = valid & (tl.load(KEY_PADDING + b * stride_pb + cols * stride_pn, mask=valid, other=0) != 0)
    return valid


@triton.jit
def _attend_rows(Q, K, V, KEY_PADDING, OUT, qk_scale, n_q, n_k, b32, h32, m_start,
                 stride_qb, stride_qh, stride_qn, stride_qd,
                 stride_kb, stride_kh, stride_kn, stride_kd,
                 stride_vb, stride_vh, stride_vn, stride_vd,
                 stride_pb, stride_pn,
                 stride_ob, stride_oh, stride_on, stride_od,
                 HEAD_DIM: tl.constexpr, HAS_PADDING: tl.constexpr, DOT_PRECISION: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, TAIL_N: tl.constexpr, BLOCK_D: tl.constexpr,
                 USE_TMA: tl.constexpr):
    # BLOCK_M queries from m_start against every key of one (batch, head). TAIL_N > 0: the ragged
    # last key block (n_k % BLOCK_N keys) is a TAIL_N-key tile instead of a whole BLOCK_N one.
    # Descriptor coordinates are int32; pointer offsets int64, since batch x heads x tokens x dim
    # may pass 2**31 elements at large batch.
    b = b32.to(tl.int64)
    h = h32.to(tl.int64)
    EVEN_D: tl.constexpr = HEAD_DIM == BLOCK_D

    offs_m = m_start + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM  # the head dim is padded to a power of two
    row_ok = offs_m < n_q

    if USE_TMA:
        q = Q.load([b32, h32, m_start, 0]).reshape(BLOCK_M, BLOCK_D)
        k_base = K  # unused on this path
        v_base = V
    else:
        q = tl.load(Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qn + offs_d[None, :] * stride_qd,
                    mask=row_ok[:, None] & d_ok[None, :], other=0.0)
        k_base = K + b * stride_kb + h * stride_kh
        v_base = V + b * stride_vb + h * stride_vh

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)

    n_full = (n_k // BLOCK_N) * BLOCK_N
    if HAS_PADDING:
        # Without a tail tile the loop runs to the end of the sequence; its last block is the ragged one.
        n_main = n_full if TAIL_N > 0 else n_k
        for start_n in range(0, n_main, BLOCK_N):
            cols = start_n + offs_n
            valid = _block_valid(KEY_PADDING, b, stride_pb, stride_pn, cols, n_k, HAS_PADDING)
            # The skip: one small load and a reduction instead of two dot products.
            if tl.max(valid.to(tl.int32), axis=0) > 0:
                acc, l_i, m_i = _attend_block(acc, l_i, m_i, q, K, V, k_base, v_base, b32, h32, start_n, cols,
                                              valid, offs_d, d_ok, qk_scale, stride_kn, stride_kd, stride_vn,
                                              stride_vd, DOT_PRECISION, True, EVEN_D, USE_TMA, BLOCK_N, BLOCK_D)
    else:
        for start_n in range(0, n_full, BLOCK_N):
            cols = start_n + offs_n
            acc, l_i, m_i = _attend_block(acc, l_i, m_i, q, K, V, k_base, v_base, b32, h32, start_n, cols,
                                          cols < n_k, offs_d, d_ok, qk_scale, stride_kn, stride_kd, stride_vn,
                                          stride_vd, DOT_PRECISION, False, EVEN_D, USE_TMA, BLOCK_N, BLOCK_D)
    if TAIL_N > 0 or not HAS_PADDING:  # the ragged last block, unless the padding loop took it
        if n_full < n_k:
            # In a TAIL_N tile where there is one (less work on keys past the end), else a whole block.
            RAGGED: tl.constexpr = TAIL_N if TAIL_N > 0 else BLOCK_N
            cols = n_full + tl.arange(0, RAGGED)
            valid = _block_valid(KEY_PADDING, b, stride_pb, stride_pn, cols, n_k, HAS_PADDING)
            if not HAS_PADDING or tl.max(valid.to(tl.int32), axis=0) > 0:  # the skip, with a mask only
                acc, l_i, m_i = _attend_block(acc, l_i, m_i, q, K, V, k_base, v_base, b32, h32, n_full, cols,
                                              valid, offs_d, d_ok, qk_scale, stride_kn, stride_kd, stride_vn,
                                              stride_vd, DOT_PRECISION, True, EVEN_D, USE_TMA, RAGGED, BLOCK_D)

    # l_i is 0 only where no block was attended: acc is 0 there too, and the row comes out as zeros.
    out = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]
    if USE_TMA:
        OUT.store([b32, h32, m_start, 0], out.to(q.dtype).reshape(1, 1, BLOCK_M, BLOCK_D))
    else:
        tl.store(OUT + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_on + offs_d[None, :] * stride_od,
                 out.to(OUT.dtype.element_ty), mask=row_ok[:, None] & d_ok[None, :])


@triton.jit
def _masked_attention_fwd(
    Q, K, V, KEY_PADDING, OUT,
    qk_scale, n_heads, n_q, n_k,
    stride_qb, stride_qh, stride_qn, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_pb, stride_pn,
    stride_ob, stride_oh, stride_on, stride_od,
    HEAD_DIM: tl.constexpr, HAS_PADDING: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, USE_TMA: tl.constexpr,
    TAIL_M: tl.constexpr, TAIL_N: tl.constexpr,
):
    # With USE_TMA, Q, K, V and OUT are (B, H, N, d) tensor descriptors with boxes of
    # (1, 1, BLOCK_M or BLOCK_N, BLOCK_D); rows and columns past the end load as zeros and are not stored.
    # TAIL_M > 0: the last program of a (batch, head), which holds n_q % BLOCK_M queries, takes a
    # TAIL_M-row tile instead of a BLOCK_M one (at N=197 and 64-query blocks: 16 rows for 5 queries).
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b32 = pid_bh // n_heads
    h32 = pid_bh % n_heads
    m_start = pid_m * BLOCK_M
    rows: tl.constexpr = TAIL_M if TAIL_M > 0 else BLOCK_M
    if TAIL_M > 0 and m_start + BLOCK_M > n_q:
        # The tail tile. Without one (TAIL_M == 0) the constexpr half of the condition removes this branch.
        _attend_rows(Q, K, V, KEY_PADDING, OUT, qk_scale, n_q, n_k, b32, h32, m_start,
                     stride_qb, stride_qh, stride_qn, stride_qd, stride_kb, stride_kh, stride_kn, stride_kd,
                     stride_vb, stride_vh, stride_vn, stride_vd, stride_pb, stride_pn,
                     stride_ob, stride_oh, stride_on, stride_od,
                     HEAD_DIM, HAS_PADDING, DOT_PRECISION, rows, BLOCK_N, TAIL_N, BLOCK_D, USE_TMA)
    else:
        _attend_rows(Q, K, V, KEY_PADDING, OUT, qk_scale, n_q, n_k, b32, h32, m_start,
                     stride_qb, stride_qh, stride_qn, stride_qd, stride_kb, stride_kh, stride_kn, stride_kd,
                     stride_vb, stride_vh, stride_vn, stride_vd, stride_pb, stride_pn,
                     stride_ob, stride_oh, stride_on, stride_od,
                     HEAD_DIM, HAS_PADDING, DOT_PRECISION, BLOCK_M, BLOCK_N, TAIL_N, BLOCK_D, USE_TMA)


def masked_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_padding: torch.Tensor | None = None,
    scale: float | None = None,
    *,
    config: AttentionConfig | None = None,
) -> torch.Tensor:
    """softmax(q k^T * scale, over the keys ``key_padding`` allows) v, without the N x N matrix.

    q: (B, H, Nq, d); k, v: (B, H, Nk, d); fp32, fp16 or bf16, one dtype, any strides; d <= 256
    (32, 64, 128 are the tuned sizes). key_padding: (B, Nk) bool, True where a key may be attended;
    None attends to all. scale (> 0) defaults to 1/sqrt(d). Accumulates in fp32; returns (B, H, Nq, d)
    in q's dtype. Rows with no key to attend are zeros. ``config`` overrides the tile sizes.
    """
    _check_attention_inputs(q, k, v, key_padding)
    device = check_device("masked_attention", _masked_attention_fwd, q=q, k=k, v=v, key_padding=key_padding)
    head_dim = q.shape[3]
    cfg = config or default_config(head_dim)
    scale = 1.0 / math.sqrt(head_dim) if scale is None else float(scale)
    if not scale > 0:
        raise ValueError(f"masked_attention: scale must be positive, got {scale}")
    out = torch.empty_like(q, memory_format=torch.contiguous_format)
    if out.numel() == 0:
        return out
    grid, args, meta = _launch_args(q, k, v, key_padding, out, scale, cfg)
    with on_device(device):
        _masked_attention_fwd[grid](*args, **meta)
    return out


def _launch_args(q, k, v, key_padding, out, scale: float, cfg: AttentionConfig):
    """(grid, arguments, meta-parameters) of one launch of ``_masked_attention_fwd``, which
    ``radiofm.kernels.compile_check`` also compiles for GPU targets without a GPU."""
    batch, heads, n_q, head_dim = q.shape
    # Triton takes a bool tensor as i1; bytes are what the kernel loads.
    padding = key_padding.view(torch.uint8) if key_padding is not None else out
    padding_strides = padding.stride() if key_padding is not None else (0, 0)
    block_d = max(16, triton.next_power_of_2(head_dim))
    descriptors = _descriptors(q, k, v, out, cfg, block_d) if cfg.tma else None
    q_arg, k_arg, v_arg, out_arg = descriptors or (q, k, v, out)
    n_k = k.shape[2]
    if cfg.tail not in (False, True, "keys"):
        raise ValueError(f"masked_attention: config.tail must be False, True or 'keys', got {cfg.tail!r}")
    tails = cfg.tail and descriptors is None
    grid = (triton.cdiv(n_q, cfg.block_m), batch * heads)
    args = (q_arg, k_arg, v_arg, padding, out_arg, scale * _LOG2E, heads, n_q, n_k,
            *q.stride(), *k.stride(), *v.stride(), *padding_strides, *out.stride())
    meta = dict(HEAD_DIM=head_dim, HAS_PADDING=key_padding is not None, DOT_PRECISION=dot_precision(q.dtype),
                BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_D=block_d, USE_TMA=descriptors is not None,
                TAIL_M=_tail(n_q, cfg.block_m) if tails and cfg.tail != "keys" else 0,
                TAIL_N=_tail(n_k, cfg.block_n) if tails else 0,
                num_warps=cfg.num_warps, num_stages=cfg.num_stages, **COMPILE_OPTIONS)
    if cfg.maxnreg is not None:
        meta["maxnreg"] = cfg.maxnreg
    return grid, args, meta


def _tail(n: int, block: int) -> int:
    """The tile for the ragged last ``n % block`` rows: the smallest power of two >= 16 that holds
    them, or 0 (no separate tile) where there is no remainder or the tile would be the whole block."""
    rest = n % block
    tile = max(16, triton.next_power_of_2(rest)) if rest else 0
    return tile if tile < block else 0


def _descriptors(q, k, v, out, cfg: AttentionConfig, block_d: int):
    """(Q, K, V, OUT) tensor descriptors for ``cfg.tma``, or None where the layout rules them out.

    TMA wants a GPU of compute capability 9.0 or newer, unit stride along the head dim, every other
    stride and the base address on 16 bytes, and boxes of at most 256 rows; the interpreter takes
    descriptors too, so the CPU tests run this path.
    """
    if TensorDescriptor is None:
        return None
    if q.device.type == "cuda" and torch.cuda.get_device_capability(q.device)[0] < 9:
        return None
    if max(cfg.block_m, cfg.block_n, block_d) > 256:
        return None
    for t in (q, k, v, out):
        size = t.element_size()
        if t.stride(-1) != 1 or t.data_ptr() % 16 or any(st * size % 16 for st in t.stride()[:-1]):
            return None
    boxes = ((q, cfg.block_m), (k, cfg.block_n), (v, cfg.block_n), (out, cfg.block_m))
    return tuple(TensorDescriptor(t, shape=list(t.shape), strides=list(t.stride()), block_shape=[1, 1, rows, block_d])
                 for t, rows in boxes)


def masked_attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_padding: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """What ``masked_attention`` computes, in plain PyTorch: explicit softmax in fp32.

    Same arguments and result dtype; a row with no key to attend is defined as zeros.
    """
    _check_attention_inputs(q, k, v, key_padding)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    scores = (q.float() @ k.float().transpose(-2, -1)) * scale
    if key_padding is not None:
        allowed = key_padding[:, None, None, :]
        scores = scores.masked_fill(~allowed, float("-inf"))
        probs = torch.softmax(scores, dim=-1).masked_fill(~allowed.any(-1, keepdim=True), 0.0)
    else:
        probs = torch.softmax(scores, dim=-1)
    return (probs @ v.float()).to(q.dtype)


def _check_attention_inputs(q, k, v, key_padding) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor) or t.dim() != 4:
            raise ValueError(f"masked_attention: {name} must be a 4-D tensor (B, H, N, d), got "
                             f"{tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}")
    if q.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"masked_attention: q must be float32, float16 or bfloat16, got {q.dtype}")
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(f"masked_attention: q, k, v must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    batch, heads, _, head_dim = q.shape
    if k.shape != v.shape or k.shape[:2] != (batch, heads) or k.shape[3] != head_dim:
        raise ValueError(f"masked_attention: k and v must be (B, H, Nk, d) = ({batch}, {heads}, Nk, {head_dim}), "
                         f"got k {tuple(k.shape)}, v {tuple(v.shape)}")
    if not 1 <= head_dim <= _MAX_HEAD_DIM:
        raise ValueError(f"masked_attention: head dim must be 1..{_MAX_HEAD_DIM}, got {head_dim}")
    if key_padding is not None:
        if key_padding.dtype != torch.bool:
            raise ValueError(f"masked_attention: key_padding must be a bool tensor (True = attend), "
                             f"got {key_padding.dtype}")
        if tuple(key_padding.shape) != (batch, k.shape[2]):
            raise ValueError(f"masked_attention: key_padding must be (B, Nk) = ({batch}, {k.shape[2]}), "
                             f"got {tuple(key_padding.shape)}")
