"""Fused patch embedding (+ position embedding, + token gather), beside its PyTorch reference.

The unfused path runs a stride-p conv2d over every patch, writes (B, L, D), reads it back to add the
position embedding, and reads it again to gather the tokens the MAE encoder keeps. This kernel
treats the embedding as one GEMM, (tokens, C*p*p) x (C*p*p, D), whose A tiles are read straight
from the image: each row is the p x p tile of one kept token, addressed from its grid position, so
no im2col tensor exists and the pixels of dropped tokens are never read. Bias and position
embedding are added to the fp32 accumulator before the one write. At mask ratio 0.75 that is a
quarter of the image read and a quarter of the output written, once.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from ._launch import COMPILE_OPTIONS, check_device, dot_precision, on_device


class PatchEmbedConfig(NamedTuple):
    block_m: int  # tokens per program
    block_n: int  # embedding channels per program
    block_k: int  # pixels (of C*p*p) per inner step
    num_warps: int
    num_stages: int


def default_config(embed_dim: int, patch_pixels: int) -> PatchEmbedConfig:
    """Tiles that compile on any GPU with tensor cores (all sides >= 16), no wider than needed.

    A 64-pixel step holds whole tile rows for p = 8 and p = 16, so the image loads run along
    contiguous pixels; the program's weight slab (K x 128) stays in L2 across token blocks.
    """
    return PatchEmbedConfig(
        block_m=64,
        block_n=min(128, max(16, triton.next_power_of_2(embed_dim))),
        block_k=min(64, max(16, triton.next_power_of_2(patch_pixels))),
        num_warps=4,
        num_stages=3,
    )


@triton.jit
def _patch_embed_fwd(
    IMAGES, WEIGHT, BIAS, POS, KEEP, OUT,
    n_rows, n_out_tokens, n_tokens, grid_w, n_pixels, embed_dim,
    stride_ib, stride_ic, stride_ih, stride_iw,
    stride_wd, stride_wc, stride_wh, stride_ww,
    stride_pl, stride_pd,
    stride_kb, stride_kl,
    P: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_KEEP: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)

    # A row is one output token: (batch, position in the output), flattened.
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    batch = rows // n_out_tokens
    slot = rows % n_out_tokens
    row_ok = rows < n_rows
    if HAS_KEEP:
        token = tl.load(KEEP + batch * stride_kb + slot * stride_kl, mask=row_ok, other=0)
        # Unchecked indices (check_keep=False) must not read outside the image or pos_embed.
        row_ok = row_ok & (token >= 0) & (token < n_tokens)
    else:
        token = slot
    gy = token // grid_w
    gx = token % grid_w
    tile = IMAGES + batch.to(tl.int64) * stride_ib + (gy * P) * stride_ih + (gx * P) * stride_iw

    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < embed_dim
    w_cols = WEIGHT + cols * stride_wd

    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(0, n_pixels, BLOCK_K):
        # Pixel k of a tile, in weight order (channel, row, column); with P constexpr the divisions
        # are shifts and a run of P columns is contiguous in memory.
        ks = k0 + tl.arange(0, BLOCK_K)
        k_ok = ks < n_pixels
        c = ks // (P * P)
        py = (ks // P) % P
        px = ks % P
        a = tl.load(tile[:, None] + (c * stride_ic + py * stride_ih + px * stride_iw)[None, :],
                    mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        w = tl.load(w_cols[None, :] + (c * stride_wc + py * stride_wh + px * stride_ww)[:, None],
                    mask=k_ok[:, None] & col_ok[None, :], other=0.0)
        acc = tl.dot(a, w, acc, input_precision=DOT_PRECISION)

    if HAS_BIAS:
        acc += tl.load(BIAS + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    acc += tl.load(POS + token[:, None] * stride_pl + cols[None, :] * stride_pd,
                   mask=row_ok[:, None] & col_ok[None, :], other=0.0).to(tl.float32)
    # The output is allocated contiguous (B, L_out, D), so a row's offset is rows * D.
    tl.store(OUT + rows.to(tl.int64)[:, None] * embed_dim + cols[None, :], acc.to(OUT.dtype.element_ty),
             mask=(rows < n_rows)[:, None] & col_ok[None, :])


def patch_embed(
    images: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    pos_embed: torch.Tensor,
    keep: torch.Tensor | None = None,
    *,
    check_keep: bool = True,
    config: PatchEmbedConfig | None = None,
) -> torch.Tensor:
    """Patch embedding + position embedding (+ gather of the kept tokens) in one pass.

    images: (B, C, H, W), H and W multiples of p; weight: (D, C, p, p) (``patch_embed.proj.weight``),
    same dtype as images (fp32, fp16 or bf16); bias: (D,) or None; pos_embed: (1, L, D) or (L, D),
    tokens in row-major grid order, no cls slot; keep: (B, L_keep) integer token indices, any order.
    Returns (B, L, D), or (B, L_keep, D) in keep's order, in the images' dtype; accumulates in fp32.

    check_keep=False skips the range check of ``keep``, which costs a device sync on CUDA; use it
    only for indices known to be valid (e.g. from an argsort). Out-of-range indices then read nothing
    outside the image or the position table, but give meaningless rows. ``config`` overrides the tiles.
    """
    _check_patch_embed_inputs(images, weight, bias, pos_embed, keep)
    device = check_device("patch_embed", _patch_embed_fwd, images=images, weight=weight, bias=bias,
                          pos_embed=pos_embed, keep=keep)
    batch, _, height, width = images.shape
    embed_dim, _, p, _ = weight.shape
    n_tokens = (height // p) * (width // p)
    if keep is not None and check_keep and keep.numel():
        low, high = torch.stack(keep.aminmax()).tolist()  # one read-back, one sync on CUDA
        if low < 0 or high >= n_tokens:
            raise ValueError(f"patch_embed: keep indices must be in [0, {n_tokens}), got min {low}, max {high}")
    n_out_tokens = n_tokens if keep is None else keep.shape[1]
    out = torch.empty(batch, n_out_tokens, embed_dim, dtype=images.dtype, device=device)
    if out.numel() == 0:
        return out
    grid, args, meta = _launch_args(images, weight, bias, pos_embed, keep, out, config)
    with on_device(device):
        _patch_embed_fwd[grid](*args, **meta)
    return out


def _launch_args(images, weight, bias, pos_embed, keep, out, config: PatchEmbedConfig | None):
    """(grid, arguments, meta-parameters) of one launch of ``_patch_embed_fwd``, which
    ``radiofm.kernels.compile_check`` also compiles for GPU targets without a GPU."""
    batch, chans, height, width = images.shape
    embed_dim, _, p, _ = weight.shape
    grid_w = width // p
    n_tokens = (height // p) * grid_w
    n_out_tokens = out.shape[1]
    pos = pos_embed.reshape(n_tokens, embed_dim)
    cfg = config or default_config(embed_dim, chans * p * p)
    n_rows = batch * n_out_tokens
    grid = (triton.cdiv(n_rows, cfg.block_m), triton.cdiv(embed_dim, cfg.block_n))
    args = (images, weight, bias if bias is not None else pos, pos, keep if keep is not None else out, out,
            n_rows, n_out_tokens, n_tokens, grid_w, chans * p * p, embed_dim,
            *images.stride(), *weight.stride(), *pos.stride(),
            *(keep.stride() if keep is not None else (0, 0)))
    meta = dict(P=p, HAS_BIAS=bias is not None, HAS_KEEP=keep is not None, DOT_PRECISION=dot_precision(images.dtype),
                BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k,
                num_warps=cfg.num_warps, num_stages=cfg.num_stages, **COMPILE_OPTIONS)
    return grid, args, meta


def patch_embed_reference(
    images: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    pos_embed: torch.Tensor,
    keep: torch.Tensor | None = None,
) -> torch.Tensor:
    """What ``patch_embed`` computes, in plain PyTorch: conv2d, flatten, add pos_embed, gather."""
    _check_patch_embed_inputs(images, weight, bias, pos_embed, keep)
    embed_dim, _, p, _ = weight.shape
    x = F.conv2d(images, weight, None if bias is None else bias.to(weight.dtype), stride=p)
    x = x.flatten(2).transpose(1, 2) + pos_embed.reshape(-1, embed_dim).to(x.dtype)
    if keep is not None:
        x = torch.gather(x, 1, keep.long()[..., None].expand(-1, -1, embed_dim))
    return x


def _check_patch_embed_inputs(images, weight, bias, pos_embed, keep) -> None:
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        raise ValueError("patch_embed: images must be a 4-D tensor (B, C, H, W), got "
                         f"{tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__}")
    if images.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"patch_embed: images must be float32, float16 or bfloat16, got {images.dtype}")
    if weight.dim() != 4 or weight.shape[2] != weight.shape[3] or weight.shape[1] != images.shape[1]:
        raise ValueError(f"patch_embed: weight must be (D, C, p, p) with C = {images.shape[1]} channels, "
                         f"got {tuple(weight.shape)}")
    if weight.dtype != images.dtype:
        raise ValueError(f"patch_embed: weight dtype {weight.dtype} differs from images dtype {images.dtype}")
    embed_dim, _, p, _ = weight.shape
    height, width = images.shape[2:]
    if height % p or width % p:
        raise ValueError(f"patch_embed: image size {height}x{width} is not a multiple of the patch size {p}")
    if bias is not None and (tuple(bias.shape) != (embed_dim,) or not bias.is_floating_point()):
        raise ValueError(f"patch_embed: bias must be a float tensor of shape ({embed_dim},), "
                         f"got {bias.dtype} {tuple(bias.shape)}")
    n_tokens = (height // p) * (width // p)
    if tuple(pos_embed.shape) not in ((1, n_tokens, embed_dim), (n_tokens, embed_dim)) \
            or not pos_embed.is_floating_point():
        raise ValueError(f"patch_embed: pos_embed must be a float tensor of shape (1, {n_tokens}, {embed_dim}) "
                         f"or ({n_tokens}, {embed_dim}) (no cls slot), got {pos_embed.dtype} {tuple(pos_embed.shape)}")
    if keep is not None:
        if keep.dim() != 2 or keep.shape[0] != images.shape[0]:
            raise ValueError(f"patch_embed: keep must be (B, L_keep) with B = {images.shape[0]}, "
                             f"got {tuple(keep.shape)}")
        if keep.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"patch_embed: keep must hold int32 or int64 token indices, got {keep.dtype}")
