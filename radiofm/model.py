"""One Vision Transformer for every radiofm task, with timm / MAE parameter names.

``VisionTransformer`` is the encoder (patch embedding, fixed 2-D sin-cos position embedding, cls token,
pre-norm blocks). The task models add what they need on top of it:

- ``MaskedAutoencoder``: Masked Spectrogram Modeling (an MAE on 1-channel spectrograms);
- ``ViTClassifier``: cls-token or global-average pooling and a linear head;
- ``ViTSegmenter``: a light transformer decoder that predicts p*p*K logits per patch;
- ``ViTEncoder``: token and pooled embeddings.

Attention and patch embedding go through two dispatch points (``attention`` and ``embed_patches``)
whose backends are "torch" (the reference, always there) or "triton" (``radiofm.kernels``).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from radiofm.config import ModelConfig

BACKENDS = ("torch", "triton")


# --------------------------------------------------------------------------- position embeddings
@lru_cache(maxsize=32)
def sincos_pos_embed(embed_dim: int, grid_h: int, grid_w: int) -> np.ndarray:
    """(grid_h*grid_w, embed_dim) fixed 2-D sin-cos embedding, row-major, as MAE builds it."""
    if embed_dim % 4:
        raise ValueError(f"sin-cos position embedding needs embed_dim divisible by 4, got {embed_dim}")
    gw, gh = np.meshgrid(np.arange(grid_w, dtype=np.float64), np.arange(grid_h, dtype=np.float64))
    # MAE embeds the w coordinate in the first half and h in the second; keep that for compatibility.
    return np.concatenate([_sincos_1d(embed_dim // 2, gw), _sincos_1d(embed_dim // 2, gh)], axis=1)


def _sincos_1d(dim: int, pos: np.ndarray) -> np.ndarray:
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    out = np.einsum("m,d->md", pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def _pos_embed_param(embed_dim: int, grid: tuple[int, int]) -> nn.Parameter:
    """(1, 1+L, D) with a zero slot for the cls token; fixed, yet a Parameter so it sits in state dicts."""
    table = np.concatenate([np.zeros((1, embed_dim)), sincos_pos_embed(embed_dim, *grid)], axis=0)
    return nn.Parameter(torch.from_numpy(table).float().unsqueeze(0), requires_grad=False)


# --------------------------------------------------------------------------- dispatch points
def attention(q, k, v, key_padding=None, backend: str = "torch"):
    """Softmax attention on (B, H, N, d); ``key_padding`` (B, N) bool is True where a key may be attended."""
    # The kernel is forward-only: whenever autograd needs this op, the torch path runs instead.
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    if backend == "triton" and not needs_grad:
        from radiofm.kernels import masked_attention

        return masked_attention(q, k, v, key_padding)
    mask = None
    if key_padding is not None:
        # A (B,1,N,N) mask rather than a broadcast (B,1,1,N): some ONNX Runtime attention kernels
        # reject the broadcast form.
        n = q.shape[-2]
        mask = key_padding[:, None, None, :].expand(-1, 1, n, -1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def embed_patches(images, proj: nn.Conv2d, pos_embed, keep=None, backend: str = "torch"):
    """Patch tokens (B, L or L_keep, D): projection + bias + position embedding (L, D), then gather ``keep``."""
    # The kernel is forward-only: whenever autograd needs this op, the torch path runs instead.
    inputs = (images, proj.weight, proj.bias, pos_embed)
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs)
    if backend == "triton" and not needs_grad:
        from radiofm.kernels import patch_embed

        return patch_embed(images, proj.weight, proj.bias, pos_embed, keep)
    tokens = proj(images).flatten(2).transpose(1, 2) + pos_embed
    if keep is not None:
        tokens = torch.gather(tokens, 1, keep.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
    return tokens


# --------------------------------------------------------------------------- building blocks
class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.backend = "torch"

    def forward(self, x, key_padding=None):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        x = attention(q, k, v, key_padding, self.backend)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class DropPath(nn.Module):
    """Stochastic depth: drops a sample's residual branch with probability ``p`` during training."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x):
        if self.p == 0.0 or not self.training:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x, key_padding=None):
        x = x + self.drop_path(self.attn(self.norm1(x), key_padding))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def _init_weights(module: nn.Module) -> None:
    """MAE's initialisation: xavier-uniform linears (patch projection included), unit LayerNorms."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, PatchEmbed):
            nn.init.xavier_uniform_(m.proj.weight.view(m.proj.weight.shape[0], -1))


# --------------------------------------------------------------------------- encoder
class VisionTransformer(nn.Module):
    """The shared encoder. Any H x W divisible by the patch size works: other grids get their own sin-cos table."""

    def __init__(self, cfg: ModelConfig, drop_path: float = 0.0):
        super().__init__()
        self.cfg = cfg
        d = cfg.embed_dim
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.in_chans, d)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = _pos_embed_param(d, cfg.grid_size)
        rates = np.linspace(0, drop_path, cfg.depth).tolist()
        self.blocks = nn.ModuleList(Block(d, cfg.num_heads, cfg.mlp_ratio, r) for r in rates)
        self.norm = nn.LayerNorm(d, eps=1e-6)
        self.patch_backend = "torch"

    def reset_parameters(self) -> None:
        _init_weights(self)
        nn.init.normal_(self.cls_token, std=0.02)

    def add_light_decoder(self, depth: int, values_per_pixel: int) -> None:
        """The light decoder the MAE and the segmenter share (MAE's ``decoder_*`` names): tokens to
        decoder width, its own sin-cos table, ``depth`` blocks, then p*p*values per patch."""
        cfg, dd = self.cfg, self.cfg.decoder_embed_dim
        self.decoder_embed = nn.Linear(cfg.embed_dim, dd)
        self.decoder_pos_embed = _pos_embed_param(dd, cfg.grid_size)
        self.decoder_blocks = nn.ModuleList(Block(dd, cfg.decoder_num_heads, cfg.mlp_ratio) for _ in range(depth))
        self.decoder_norm = nn.LayerNorm(dd, eps=1e-6)
        self.decoder_pred = nn.Linear(dd, cfg.patch_size**2 * values_per_pixel)

    def set_backends(self, attn: str | None = None, patch: str | None = None) -> "VisionTransformer":
        """Select "torch" or "triton" for attention and patch embedding (triton: inference on CUDA)."""
        for name in (attn, patch):
            if name is not None and name not in BACKENDS:
                raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
        if patch is not None:
            self.patch_backend = patch
        if attn is not None:
            for m in self.modules():
                if isinstance(m, Attention):
                    m.backend = attn
        return self

    def check_input(self, x) -> tuple[int, int]:
        if x.ndim != 4 or x.shape[1] != self.cfg.in_chans:
            raise ValueError(
                f"expected images of shape (B, {self.cfg.in_chans}, H, W), got {tuple(x.shape)}"
            )
        p = self.cfg.patch_size
        h, w = x.shape[-2:]
        if h % p or w % p:
            raise ValueError(f"image size {h}x{w} is not divisible by the patch size {p}")
        return h // p, w // p

    def patch_pos_embed(self, grid: tuple[int, int]) -> torch.Tensor:
        """(L, D) position embedding of the patch tokens for a grid (the model's own, or built for another)."""
        if grid == self.cfg.grid_size:
            return self.pos_embed[0, 1:]
        table = sincos_pos_embed(self.cfg.embed_dim, *grid)
        return torch.from_numpy(table).to(self.pos_embed)

    def forward_tokens(self, x, keep=None, key_padding=None, normalize: bool = True):
        """Encoded tokens (B, 1 + L', D), cls first. ``keep`` (B, L') picks patch tokens (MAE);
        ``key_padding`` (B, L) bool marks valid patches (variable-length input)."""
        grid = self.check_input(x)
        tokens = embed_patches(x, self.patch_embed.proj, self.patch_pos_embed(grid), keep, self.patch_backend)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(tokens.shape[0], -1, -1)
        tokens = torch.cat([cls, tokens], dim=1)
        if key_padding is not None:
            key_padding = torch.cat([key_padding.new_ones(key_padding.shape[0], 1), key_padding.bool()], 1)
        for blk in self.blocks:
            tokens = blk(tokens, key_padding)
        return self.norm(tokens) if normalize else tokens


# --------------------------------------------------------------------------- MAE
def patchify(imgs, p: int):
    """(B, C, H, W) -> (B, L, p*p*C), MAE's order (row, col, channel last)."""
    b, c, h, w = imgs.shape
    x = imgs.reshape(b, c, h // p, p, w // p, p)
    return torch.einsum("nchpwq->nhwpqc", x).reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(x, p: int, grid: tuple[int, int], channels: int):
    """(B, L, p*p*C) -> (B, C, H, W), the inverse of ``patchify``."""
    gh, gw = grid
    x = x.reshape(x.shape[0], gh, gw, p, p, channels)
    return torch.einsum("nhwpqc->nchpwq", x).reshape(x.shape[0], channels, gh * p, gw * p)


def random_masking(batch: int, length: int, ratio: float, device=None, generator=None):
    """Per-sample random masking by sorting noise.

    Each sample draws uniform noise per token; the tokens with the smallest noise are kept, so every
    sample keeps a different random subset of exactly ``round(L * (1 - ratio))`` tokens. ``ids_restore``
    undoes the shuffle, which is how the decoder puts mask tokens back in place.
    Returns ``ids_keep`` (B, L_keep), ``mask`` (B, L; 1 = removed) and ``ids_restore`` (B, L).
    """
    len_keep = round(length * (1 - ratio))
    noise = torch.rand(batch, length, device=device, generator=generator)
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    mask = torch.ones(batch, length, device=device)
    mask[:, :len_keep] = 0
    return ids_shuffle[:, :len_keep], torch.gather(mask, 1, ids_restore), ids_restore


class MaskedAutoencoder(VisionTransformer):
    """Masked Spectrogram Modeling: encode the visible patches, reconstruct the masked ones."""

    def __init__(self, cfg: ModelConfig, drop_path: float = 0.0):
        super().__init__(cfg, drop_path)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, cfg.decoder_embed_dim))
        self.add_light_decoder(cfg.decoder_depth, cfg.in_chans)
        self.reset_parameters()
        nn.init.normal_(self.mask_token, std=0.02)

    def forward_decoder(self, latent, ids_restore):
        x = self.decoder_embed(latent)
        b, n_masked = x.shape[0], ids_restore.shape[1] + 1 - x.shape[1]
        patches = torch.cat([x[:, 1:], self.mask_token.expand(b, n_masked, -1)], dim=1)
        patches = torch.gather(patches, 1, ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        x = torch.cat([x[:, :1], patches], dim=1) + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x = blk(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]

    def loss(self, imgs, pred, mask):
        """MSE on the masked patches only; per-patch normalised pixels when ``norm_pix_loss``."""
        target = patchify(imgs, self.cfg.patch_size)
        if self.cfg.norm_pix_loss:
            mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
            target = (target - mean) / (var + 1e-6) ** 0.5
        per_patch = ((pred - target) ** 2).mean(-1)
        return (per_patch * mask).sum() / mask.sum()

    def forward(self, imgs, mask_ratio: float | None = None, generator=None):
        """Returns (loss, pred (B, L, p*p*C), mask (B, L))."""
        grid = self.check_input(imgs)
        if grid != self.cfg.grid_size:
            raise ValueError(f"MAE input must be {self.cfg.img_size}, got {tuple(imgs.shape[-2:])}")
        ratio = self.cfg.mask_ratio if mask_ratio is None else mask_ratio
        ids_keep, mask, ids_restore = random_masking(
            imgs.shape[0], self.cfg.num_patches, ratio, imgs.device, generator
        )
        latent = self.forward_tokens(imgs, keep=ids_keep)
        pred = self.forward_decoder(latent, ids_restore)
        return self.loss(imgs, pred, mask), pred, mask


# --------------------------------------------------------------------------- task heads
class ViTClassifier(VisionTransformer):
    """Logits (B, K). ``pool="avg"`` follows MAE's fine-tuning (mean of patch tokens, then ``fc_norm``)."""

    def __init__(self, cfg: ModelConfig, drop_path: float = 0.0):
        super().__init__(cfg, drop_path)
        if cfg.pool == "avg":
            del self.norm
            self.fc_norm = nn.LayerNorm(cfg.embed_dim, eps=1e-6)
        self.head = nn.Linear(cfg.embed_dim, cfg.num_classes)
        self.reset_parameters()
        nn.init.trunc_normal_(self.head.weight, std=2e-5)

    def pooled(self, x, key_padding=None):
        tokens = self.forward_tokens(x, key_padding=key_padding, normalize=self.cfg.pool == "cls")
        if self.cfg.pool == "cls":
            return tokens[:, 0]
        patches = tokens[:, 1:]
        if key_padding is None:
            return self.fc_norm(patches.mean(1))
        w = key_padding.to(patches.dtype).unsqueeze(-1)
        return self.fc_norm((patches * w).sum(1) / w.sum(1).clamp_min(1))

    def forward(self, x, key_padding=None):
        return self.head(self.pooled(x, key_padding))


class ViTSegmenter(VisionTransformer):
    """Per-pixel logits (B, K, H, W): the paper's light decoder (2 blocks) predicts p*p*K logits per patch."""

    def __init__(self, cfg: ModelConfig, drop_path: float = 0.0):
        super().__init__(cfg, drop_path)
        self.add_light_decoder(cfg.seg_depth, cfg.num_classes)
        self.reset_parameters()

    def forward(self, x, key_padding=None):
        grid = self.check_input(x)
        tokens = self.decoder_embed(self.forward_tokens(x, key_padding=key_padding))
        if grid == self.cfg.grid_size:
            tokens = tokens + self.decoder_pos_embed
        else:
            table = sincos_pos_embed(self.cfg.decoder_embed_dim, *grid)
            tokens = tokens + F.pad(torch.from_numpy(table).to(tokens), (0, 0, 1, 0)).unsqueeze(0)
        if key_padding is not None:
            key_padding = torch.cat([key_padding.new_ones(key_padding.shape[0], 1), key_padding.bool()], 1)
        for blk in self.decoder_blocks:
            tokens = blk(tokens, key_padding)
        logits = self.decoder_pred(self.decoder_norm(tokens))[:, 1:]
        return unpatchify(logits, self.cfg.patch_size, grid, self.cfg.num_classes)


class ViTEncoder(VisionTransformer):
    """Embeddings: ``forward`` returns (tokens (B, L, D), pooled (B, D)); pooled is the mean patch token."""

    def __init__(self, cfg: ModelConfig, drop_path: float = 0.0):
        super().__init__(cfg, drop_path)
        self.reset_parameters()

    def forward(self, x, key_padding=None):
        tokens = self.forward_tokens(x, key_padding=key_padding)[:, 1:]
        if key_padding is None:
            return tokens, tokens.mean(1)
        w = key_padding.to(tokens.dtype).unsqueeze(-1)
        return tokens, (tokens * w).sum(1) / w.sum(1).clamp_min(1)


MODEL_CLASSES = {
    "mae": MaskedAutoencoder,
    "classify": ViTClassifier,
    "segment": ViTSegmenter,
    "encode": ViTEncoder,
}


def build_model(cfg: ModelConfig, drop_path: float = 0.0) -> VisionTransformer:
    """The model for ``cfg.task``, freshly initialised."""
    return MODEL_CLASSES[cfg.task](cfg, drop_path)


def encoder_param_count(cfg: ModelConfig) -> int:
    """Parameters of the encoder alone (patch embedding, cls token, blocks, final norm; fixed
    position embeddings excluded), counted on the meta device so nothing is allocated."""
    with torch.device("meta"):
        enc = VisionTransformer(cfg)
    return sum(p.numel() for p in enc.parameters() if p.requires_grad)


def flops_per_forward(cfg: ModelConfig) -> int:
    """Multiply-accumulates x 2 of one encoder forward at the model's grid (matmuls only)."""
    n, d, p = cfg.num_patches + 1, cfg.embed_dim, cfg.patch_size
    hidden = int(d * cfg.mlp_ratio)
    per_block = 2 * n * d * (3 * d + d + 2 * hidden) + 2 * 2 * n * n * d
    patch = 2 * cfg.num_patches * d * cfg.in_chans * p * p
    return cfg.depth * per_block + patch
