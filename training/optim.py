"""AdamW parameter groups and the learning-rate schedule, as MAE trains.

- No weight decay on 1-D tensors (norm scales, biases) and on tokens and position embeddings:
  decaying them pulls LayerNorm gains and the cls / mask tokens towards zero for no benefit. The
  patch projection is a weight matrix and is decayed, as in MAE.
- Layer-wise learning-rate decay (fine-tuning): block ``i`` learns at ``decay ** (depth - i)`` of the
  head's rate, the patch embedding and tokens at ``decay ** (depth + 1)``, so the pretrained early
  layers move least.
- Linear warmup, then a half cosine down to ``min_lr``, evaluated per optimizer step.
"""

from __future__ import annotations

import math

import torch
from torch import nn

# Parameters that are embeddings or tokens rather than weights; never decayed.
NO_DECAY = ("cls_token", "mask_token", "pos_embed", "decoder_pos_embed")
BETAS = (0.9, 0.95)


def layer_id(name: str, depth: int) -> int:
    """0 for what feeds the first block, ``i + 1`` for ``blocks.i``, ``depth + 1`` for the rest (heads, decoders)."""
    if name.startswith(("cls_token", "mask_token", "pos_embed", "patch_embed")):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return depth + 1


def param_groups(model: nn.Module, weight_decay: float, layer_decay: float | None = None) -> list[dict]:
    """AdamW groups of the trainable parameters; each group carries ``lr_scale`` for the schedule."""
    depth = len(getattr(model, "blocks", ()))
    groups: dict[tuple[bool, int], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decay = p.ndim > 1 and name.split(".")[0] not in NO_DECAY
        lid = layer_id(name, depth) if layer_decay is not None else 0
        scale = layer_decay ** (depth + 1 - lid) if layer_decay is not None else 1.0
        group = groups.setdefault(
            (decay, lid), {"params": [], "names": [], "weight_decay": weight_decay if decay else 0.0, "lr_scale": scale}
        )
        group["params"].append(p)
        group["names"].append(name)
    if not groups:
        raise ValueError("the model has no trainable parameters")
    return [groups[k] for k in sorted(groups)]


def make_optimizer(model: nn.Module, lr: float, weight_decay: float, layer_decay: float | None = None):
    groups = param_groups(model, weight_decay, layer_decay)
    for g in groups:
        g["lr"] = lr * g["lr_scale"]
    return torch.optim.AdamW(groups, lr=lr, betas=BETAS, weight_decay=weight_decay)


def lr_at(step: int, total_steps: int, warmup_steps: int, peak_lr: float, min_lr: float = 0.0) -> float:
    """Learning rate for optimizer step ``step`` (0-based): linear warmup, then half-cosine decay."""
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + (peak_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr * g["lr_scale"]
