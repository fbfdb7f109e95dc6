"""A dataset turned into model-ready tensors, through the same ``signal.prepare`` the SDK uses at inference.

Items are prepared once per run and kept in memory (a 128x128 input is 64 KiB; ten thousand items
fit easily), so an epoch costs only the model's time. Class maps are resized with nearest
neighbour, which never invents classes at region edges.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from radiofm.config import ModelConfig, PreprocessConfig

# What each model task needs from a dataset's ``task``.
DATA_TASKS = {"mae": ("pretrain", "classify", "segment"), "classify": ("classify",), "segment": ("segment",)}


@dataclass
class PreparedData:
    x: torch.Tensor  # (N, C, H, W) float32 model input
    y: torch.Tensor | None  # (N,) class indices, (N, H, W) class maps, or None (pretraining)
    snr_db: np.ndarray | None  # (N,) per-item SNR where the dataset knows it, NaN where undefined
    classes: list[str]

    def __len__(self) -> int:
        return self.x.shape[0]

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.x[index], None if self.y is None else self.y[index]

    def subset(self, index) -> "PreparedData":
        index = torch.as_tensor(index)
        snr = None if self.snr_db is None else self.snr_db[index.numpy()]
        return PreparedData(self.x[index], None if self.y is None else self.y[index], snr, self.classes)


def open_data(path, model_task: str):
    """``open_dataset(path)``, checked against what a model of ``model_task`` trains or evaluates on."""
    from radiofm.training.datasets import open_dataset

    dataset = open_dataset(path)
    if dataset.task not in DATA_TASKS[model_task]:
        wanted = " or ".join(DATA_TASKS[model_task])
        raise ValueError(f"{path} holds a {dataset.task!r} dataset; a {model_task!r} model needs {wanted} data")
    return dataset


def item_snr(dataset, i: int) -> float:
    snr = getattr(dataset, "snr_db", None)
    if snr is None:
        return float("nan")
    value = snr(i) if callable(snr) else snr[i]
    return float("nan") if value is None else float(value)



def input_kind(dataset) -> str:
    """"csi" for (C, H, W) items (antennas as channels), "spectrogram" for (H, W) power spectrograms."""
    return "csi" if np.ndim(dataset[0][0]) == 3 else "spectrogram"


def capture_of(dataset, pre: PreprocessConfig) -> PreprocessConfig:
    """``pre`` with the data's sample rate and, where every capture has one length, its IQ sample count
    (the SDK's streaming window); what the dataset does not say is left as it was."""
    generator = getattr(dataset, "manifest", {}).get("generator", {})
    return replace(pre, sample_rate=dataset.sample_rate or pre.sample_rate,
                   capture_samples=generator.get("num_samples") or pre.capture_samples)


def fit_preprocess(dataset, img_size, max_items: int = 256, seed: int = 0) -> PreprocessConfig:
    """Preprocessing calibrated on (a sample of) ``dataset``: the Normalize mean/std per channel, and for
    CSI the min-max affine. Spectrograms keep the paper's dB affine; only the Normalize adapts, since our
    captures' power levels differ from the recordings the paper's constants were measured on."""
    from radiofm.signal import prepare

    pick = np.random.default_rng(seed).permutation(len(dataset))[:max_items]
    raws = [dataset[int(i)][0] for i in pick]
    pre = PreprocessConfig(kind=input_kind(dataset), mean=[0.0], std=[1.0])
    if pre.kind == "csi":
        lo, hi = min(float(r.min()) for r in raws), max(float(r.max()) for r in raws)
        pre = replace(pre, offset=-lo, scale=hi - lo or 1.0)
    x = np.concatenate([prepare(r, pre, img_size) for r in raws])
    mean, std = x.mean(axis=(0, 2, 3)), x.std(axis=(0, 2, 3))
    return replace(pre, mean=[round(float(m), 5) for m in mean], std=[round(float(s), 5) for s in std])


def prepare_data(dataset, cfg: ModelConfig, indices=None, progress: bool = False) -> PreparedData:
    """Prepare ``dataset`` (or the items ``indices``) for a model configured by ``cfg``, one item at a
    time: items may differ in size (captures of different lengths) and all end at ``cfg.img_size``."""
    from rich.progress import Progress

    from radiofm.signal import prepare, resize_labels

    indices = np.arange(len(dataset)) if indices is None else np.asarray(indices)
    if indices.size == 0:
        raise ValueError("the dataset is empty")
    n, (h, w) = len(indices), cfg.img_size
    x = torch.empty(n, cfg.in_chans, h, w)
    y = None
    if cfg.task == "classify":
        y = torch.empty(n, dtype=torch.long)
    elif cfg.task == "segment":
        y = torch.empty(n, h, w, dtype=torch.long)
    snr = np.full(n, np.nan)
    with Progress(disable=not progress, transient=True) as bar:
        job = bar.add_task("preparing data", total=n)
        for row, i in enumerate(indices):
            raw, target = dataset[int(i)]
            item = prepare(raw, cfg.preprocess, cfg.img_size)
            if item.shape[1] != cfg.in_chans:
                raise ValueError(f"data has {item.shape[1]} channel(s), the model takes {cfg.in_chans}")
            x[row] = torch.from_numpy(item[0])
            if cfg.task == "classify":
                y[row] = int(target)
            elif cfg.task == "segment":
                y[row] = torch.from_numpy(resize_labels(np.asarray(target), cfg.img_size).astype(np.int64))
            snr[row] = item_snr(dataset, int(i))
            bar.advance(job)
    if y is not None and (y.min() < 0 or y.max() >= cfg.num_classes):
        raise ValueError(f"targets run from {int(y.min())} to {int(y.max())}; the model has {cfg.num_classes} classes")
    return PreparedData(x, y, None if np.isnan(snr).all() else snr, list(getattr(dataset, "classes", [])))


def label_subset(data: PreparedData, fraction: float, seed: int) -> np.ndarray:
    """Indices of a seeded ``fraction`` of the items; drawn per class for class labels, so no class drops out."""
    n = len(data)
    if not 0 < fraction <= 1:
        raise ValueError(f"label fraction must be in (0, 1], got {fraction}")
    if fraction == 1:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    if data.y is None or data.y.ndim != 1:
        return np.sort(rng.permutation(n)[: max(1, round(fraction * n))])
    labels = data.y.numpy()
    keep = []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        keep.append(members[: max(1, round(fraction * members.size))])
    return np.sort(np.concatenate(keep))
