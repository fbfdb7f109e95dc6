"""Fine-tuning for classification and segmentation, from a pretrained model or from scratch.

The fine-tuned model's config is the init model's with the task, classes and channels changed, so
its preprocessing stays the one the encoder was pretrained with. Two modes, as in the paper's code:

- ``linear-probe``: patch embedding and transformer blocks frozen; the final norm, cls token and the
  head (or the segmentation decoder) train.
- ``full``: everything trains, with layer-wise learning-rate decay and drop path.

``short_captures`` (a classifier's share of training samples, per step) cuts samples to shorter
captures as the SDK pads them: a sample keeps its first 1..W-1 patch columns, the rest is zeroed and
masked out of attention and pooling (``cut_short``), so the model also learns to decide on less time.

CSI (3 antennas as channels) from a 1-channel spectrogram encoder: the patch projection is repeated
over the channels and divided by 3, so a sample with three equal channels embeds exactly as the
1-channel model saw it (the original implementation copies it without the division, which triples
the input scale).
"""

from __future__ import annotations

import numbers
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from radiofm.checkpoint import encoder_state, load_config, load_state_dict, resolve_model_dir
from radiofm.config import preset
from radiofm.model import build_model

from .loop import TrainConfig, check_resume, train
from .prepared import PreparedData, capture_of, fit_preprocess, input_kind, label_subset, open_data, prepare_data
from .state import unfinished_run

MODES = ("linear-probe", "full")
FROZEN_IN_LINEAR_PROBE = ("patch_embed.", "blocks.")


def finetune(task: str, data: str | Path, tc: TrainConfig, init: str | None = None, model: str | None = None,
             mode: str = "full", label_fraction: float = 1.0, class_weights: str = "none",
             drop_path: float = 0.1, img_size: tuple[int, int] | None = None,
             short_captures: float = 0.0) -> Path | None:
    if task not in ("classify", "segment"):
        raise ValueError(f"--task must be classify or segment, got {task!r}")
    if mode not in MODES:
        raise ValueError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    if (init is None) == (model is None):
        raise ValueError("give exactly one of --init (a pretrained model: run folder, model folder or zoo name) "
                         "and --model (a size preset, to train from scratch)")
    tc.validate()
    if not (isinstance(drop_path, numbers.Real) and 0 <= drop_path < 1):
        raise ValueError(f"--drop-path must be in [0, 1), the chance of skipping a block; got {drop_path!r}")
    if not (isinstance(label_fraction, numbers.Real) and 0 < label_fraction <= 1):
        raise ValueError(f"--label-fraction must be in (0, 1], got {label_fraction!r}")
    if not (isinstance(short_captures, numbers.Real) and 0 <= short_captures <= 1):
        raise ValueError(f"--short-captures must be in [0, 1], the share of samples cut short; got {short_captures!r}")
    if short_captures and task != "classify":
        raise ValueError("--short-captures trains a classifier on padded, shorter captures; a segmenter's padded "
                         "pixels have no labels to learn, so leave it at 0 for --task segment")
    if task == "classify" and class_weights != "none":
        raise ValueError(f"--class-weights weights the per-pixel loss of --task segment; classification trains "
                         f"unweighted, so leave it at none (got {class_weights!r})")
    if init is not None:
        unfinished = unfinished_run(init)
        if unfinished:
            raise ValueError(f"--init: {unfinished}")
    base = load_config(init) if init is not None else preset(model)
    settings = {"command": "finetune", "--task": task, "--data": str(Path(data).resolve()),
                "--init": None if init is None else str(resolve_model_dir(init).resolve()), "--model": model,
                "--mode": mode, "--label-fraction": label_fraction, "--class-weights": class_weights,
                "--drop-path": drop_path if mode == "full" else 0.0,  # linear probing runs without drop path
                "--img-size": list(img_size or base.img_size), "--short-captures": short_captures}
    check_resume(tc, settings)
    dataset = open_data(data, task)
    classes = list(dataset.classes)
    if task == "segment" and class_weights not in ("none", "auto"):
        segment_class_weights(class_weights, None, len(classes))  # the numbers are checked before the data work
    net, cfg = build_finetune_model(task, classes, dataset, init, model, drop_path if mode == "full" else 0.0, tc.seed,
                                    img_size)
    if mode == "linear-probe":
        for name, p in net.named_parameters():
            if name.startswith(FROZEN_IN_LINEAR_PROBE):
                p.requires_grad_(False)
    prepared = prepare_data(dataset, cfg, progress=tc.progress)
    prepared = prepared.subset(label_subset(prepared, label_fraction, tc.seed))
    weights = segment_class_weights(class_weights, prepared, cfg.num_classes) if task == "segment" else None
    if weights is not None:
        tc.extra["class_weights_used"] = [round(float(w), 4) for w in weights]

    def loss_fn(m, x, y, generator):
        if short_captures:
            x, valid = cut_short(x, cfg.grid_size, cfg.patch_size, short_captures, generator)
            return F.cross_entropy(m(x, valid).float(), y)
        logits = m(x).float()
        if task == "segment":
            return F.cross_entropy(logits, y, weight=None if weights is None else weights.to(logits.device))
        return F.cross_entropy(logits, y)

    return train(net, cfg, prepared, loss_fn, tc, settings=settings)


def cut_short(x: torch.Tensor, grid: tuple[int, int], patch: int, share: float,
              generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` (B, C, H, W) with a ``share`` of its samples cut to a shorter capture as the SDK pads one:
    each keeps its first 1..W-1 patch columns (uniform) and the rest is zeros; returns the images and
    their (B, patches) key_padding mask, True where a patch holds signal (the others: all True)."""
    b, gw = x.shape[0], grid[1]
    short = torch.rand(b, generator=generator, device=x.device) < share
    cols = torch.randint(1, max(gw, 2), (b,), generator=generator, device=x.device)
    cols = torch.where(short & (gw > 1), cols, torch.full_like(cols, gw))
    col_valid = torch.arange(gw, device=x.device) < cols[:, None]  # (B, grid columns)
    x = x * col_valid.repeat_interleave(patch, 1)[:, None, None, : x.shape[-1]].to(x.dtype)
    return x, col_valid[:, None, :].expand(b, grid[0], gw).reshape(b, -1)


def build_finetune_model(task: str, classes: list[str], dataset, init: str | None, model: str | None,
                         drop_path: float, seed: int, img_size: tuple[int, int] | None = None):
    """The model to fine-tune and its config; encoder weights from ``init`` when given.

    ``img_size`` changes the input grid (default: the init model's or preset's). The encoder's weights
    do not depend on it; the sin-cos position tables are rebuilt for the new grid, never loaded."""
    kind = input_kind(dataset)
    chans = int(np.shape(dataset[0][0])[0]) if kind == "csi" else 1
    base = load_config(init) if init is not None else preset(model)
    if img_size is not None:
        base = base.replace(img_size=tuple(img_size))
    pre = base.preprocess
    # From scratch, or a spectrogram encoder meeting CSI: the input scaling must come from the data.
    if init is None or kind != pre.kind:
        pre = fit_preprocess(dataset, base.img_size, seed=seed)
    pre = capture_of(dataset, pre)
    cfg = base.replace(task=task, num_classes=len(classes), labels=classes, in_chans=chans, preprocess=pre)
    torch.manual_seed(seed)
    net = build_model(cfg, drop_path=drop_path)
    if init is not None:
        state = encoder_state(load_state_dict(init))
        state["patch_embed.proj.weight"] = adapt_patch_embed(state["patch_embed.proj.weight"], chans, init)
        own = net.state_dict()
        missing = [k for k in own if k.startswith(("patch_embed.", "blocks.", "cls_token")) and k not in state]
        if missing:
            raise ValueError(f"{resolve_model_dir(init)} holds no encoder weights for {missing[:3]}: not a {base.name} encoder")
        fixed = ("pos_embed", "decoder_pos_embed")
        net.load_state_dict({k: v.float() for k, v in state.items() if k in own and k not in fixed}, strict=False)
    return net, cfg


def adapt_patch_embed(weight: torch.Tensor, chans: int, init: str) -> torch.Tensor:
    have = weight.shape[1]
    if have == chans:
        return weight
    if have == 1:
        return weight.repeat(1, chans, 1, 1) / chans
    raise ValueError(f"{init} takes {have} input channels; the data has {chans} (only 1 -> N can be adapted)")


def segment_class_weights(spec: str, data: PreparedData | None, num_classes: int) -> torch.Tensor | None:
    """``none``; ``auto`` = median-frequency balancing (median class frequency / class frequency, from the
    training labels in ``data``); or comma-separated weights, one per class (``data`` is not needed)."""
    if spec == "none":
        return None
    if spec == "auto":
        freq = torch.bincount(data.y.flatten(), minlength=num_classes).double()
        freq = freq / freq.sum()
        present = freq > 0
        weights = torch.zeros(num_classes, dtype=torch.float64)
        weights[present] = freq[present].median() / freq[present]
        return weights.float()
    try:
        weights = torch.tensor([float(w) for w in spec.split(",")])
    except ValueError:
        raise ValueError(f"--class-weights must be none, auto or {num_classes} comma-separated numbers, got {spec!r}") from None
    if weights.numel() != num_classes or not torch.isfinite(weights).all() or (weights < 0).any():
        raise ValueError(f"--class-weights needs {num_classes} non-negative numbers, got {spec!r}")
    return weights
