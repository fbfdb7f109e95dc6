"""A dataset turned into model-ready tensors, through the same ``signal.prepare`` the SDK uses at inference.

Items are prepared once per run and kept in memory (a 128x128 input is 64 KiB; ten thousand items
fit easily), so an epoch costs only the model's time. Class maps are resized with nearest
neighbour, which never invents classes at region edges.
"""

from __future__ import annotations

import multiprocessing as mp
import os
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
    return item_kind(dataset[0][0])


def item_kind(item) -> str:
    """What one item is, in the terms of ``PreprocessConfig.kind`` (see ``input_kind``)."""
    return "csi" if np.ndim(item) == 3 else "spectrogram"


def capture_of(dataset, pre: PreprocessConfig) -> PreprocessConfig:
    """``pre`` with the data's sample rate, where every capture has one length its IQ sample count
    (the SDK's streaming window; a CSI set's packets per recording), or else, where the captures' length
    varies over a range, the middle of it (``max_capture_samples``: the SDK's window for longer ones),
    and the size a synthetic set stored its spectrograms at when it area-averaged them
    (``stored_size``: the SDK brings IQ there too); what the dataset does not say is left as it was."""
    generator = getattr(dataset, "manifest", {}).get("generator", {})
    stored = pre.stored_size
    if generator:
        stored = list(generator["frame_size"]) if generator.get("resize") == "area" and "frame_size" in generator else None
    capture = generator.get("num_samples")  # IQ samples of a spectrogram set's captures
    if "packets" in generator:  # a CSI set's packets, as its items hold them
        capture = generator["packets"] // generator.get("decimate", 1)
    rate = dataset.sample_rate or pre.sample_rate
    longest = None if generator else pre.max_capture_samples  # an init model's does not leak into another set
    durations = generator.get("duration_ms")  # a set of captures of varying length (lte-nr: 10-40 ms)
    if not capture and rate and isinstance(durations, list) and len(durations) == 2:
        # The SDK cuts a longer capture into windows of at most the middle of the training durations
        # (25 ms of 10-40 ms), which keeps the time scale the model knows (benchmarks.long_segment).
        longest = int(round(sum(durations) / 2 * 1e-3 * rate))
    return replace(pre, sample_rate=rate, capture_samples=capture or pre.capture_samples,
                   max_capture_samples=longest, stored_size=stored)


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


def default_workers() -> int:
    """Usable cores, shared among the processes ``torchrun`` put on this node."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def prepare_data(dataset, cfg: ModelConfig, indices=None, progress: bool = False,
                 workers: int | None = None) -> PreparedData:
    """Prepare ``dataset`` (or the items ``indices``) for a model configured by ``cfg``, one item at a
    time: items may differ in size (captures of different lengths) and all end at ``cfg.img_size``.

    Large datasets are prepared by ``workers`` forked processes (default: the usable cores) that
    write straight into shared memory; the result does not depend on the number of workers.
    """
    from rich.progress import Progress

    indices = np.arange(len(dataset)) if indices is None else np.asarray(indices)
    if indices.size == 0:
        raise ValueError("the dataset is empty")
    n, (h, w) = len(indices), cfg.img_size
    first = _prepared_item(dataset, cfg, int(indices[0]))[0]
    if first.shape[1] != cfg.in_chans:
        raise ValueError(f"data has {first.shape[1]} channel(s), the model takes {cfg.in_chans}")
    x = torch.empty(n, cfg.in_chans, h, w)
    y = None
    if cfg.task == "classify":
        y = torch.empty(n, dtype=torch.long)
    elif cfg.task == "segment":
        y = torch.empty(n, h, w, dtype=torch.long)
    snr = torch.full((n,), float("nan"), dtype=torch.float64)
    workers = default_workers() if workers is None else workers
    chunks = [range(a, min(a + _CHUNK, n)) for a in range(0, n, _CHUNK)]
    with Progress(disable=not progress, transient=True) as bar:
        job = bar.add_task("preparing data", total=n)
        if workers > 1 and len(chunks) > 1 and "fork" in mp.get_all_start_methods():
            # Forked children see the dataset as it is here and write into the shared tensors through
            # numpy views: no pickling of the dataset, and no torch ops in a forked child.
            for t in (x, y, snr):
                if t is not None:
                    t.share_memory_()
            global _SHARED
            _SHARED = (dataset, cfg, indices, x.numpy(), None if y is None else y.numpy(), snr.numpy())
            try:
                with mp.get_context("fork").Pool(min(workers, len(chunks)), initializer=_one_blas_thread) as pool:
                    for done in pool.imap_unordered(_fill_chunk, [(c.start, c.stop) for c in chunks]):
                        bar.advance(job, done)
            finally:
                _SHARED = None
        else:
            from threadpoolctl import threadpool_limits

            xs, ys, ss = x.numpy(), None if y is None else y.numpy(), snr.numpy()
            with threadpool_limits(1):  # as in the workers, so that the items are the same bits either way
                for c in chunks:
                    _fill(dataset, cfg, indices, xs, ys, ss, c.start, c.stop)
                    bar.advance(job, len(c))
    if y is not None and (y.min() < 0 or y.max() >= cfg.num_classes):
        raise ValueError(f"targets run from {int(y.min())} to {int(y.max())}; the model has {cfg.num_classes} classes")
    snr_np = snr.numpy().copy()
    return PreparedData(x, y, None if np.isnan(snr_np).all() else snr_np, list(getattr(dataset, "classes", [])))


_CHUNK = 64  # items per task handed to a worker
_SHARED = None  # what forked workers read: (dataset, cfg, indices, x, y, snr) as numpy views


def _prepared_item(dataset, cfg: ModelConfig, i: int):
    from radiofm.signal import prepare

    raw, target = dataset[i]
    return prepare(raw, cfg.preprocess, cfg.img_size), target


def _fill(dataset, cfg: ModelConfig, indices, x, y, snr, start: int, stop: int) -> int:
    from radiofm.signal import resize_labels

    for row in range(start, stop):
        i = int(indices[row])
        item, target = _prepared_item(dataset, cfg, i)
        if item.shape[1] != cfg.in_chans:
            raise ValueError(f"item {i} has {item.shape[1]} channel(s), the model takes {cfg.in_chans}")
        x[row] = item[0]
        if cfg.task == "classify":
            y[row] = int(target)
        elif cfg.task == "segment":
            y[row] = resize_labels(np.asarray(target), cfg.img_size)
        snr[row] = item_snr(dataset, i)
    return stop - start


def _one_blas_thread() -> None:
    """Workers already fill the cores: a BLAS pool in each of them (the resize is two matmuls) only
    oversubscribes them, which made two workers slower than one."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def _fill_chunk(bounds: tuple[int, int]) -> int:
    return _fill(*_SHARED, *bounds)


def label_subset(data: PreparedData, fraction: float, seed: int) -> np.ndarray:
    """Indices of a seeded ``fraction`` of the items; drawn per class for class labels, so no class drops out."""
    n = len(data)
    if not 0 < fraction <= 1:
        raise ValueError(f"--label-fraction must be in (0, 1], got {fraction}")
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
