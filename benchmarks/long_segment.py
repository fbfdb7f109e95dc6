"""Accuracy of a segmenter on IQ captures longer than it takes in one piece: windowed against squeezed whole.

lte-nr-nano was trained on 10-40 ms captures, each squeezed onto its 256 x 256 grid. Squeezing 320 ms
onto the same grid shows it slots and frames 8-32 times shorter than it ever saw, and an NR carrier's
bursts blur into a band. ``Segmenter.predict_iq`` cuts a capture longer than
``preprocess.max_capture_samples`` (25 ms) into the fewest equal windows no longer than that and puts
their maps side by side (``windows``); ``whole`` is the capture squeezed onto the grid in one piece.
This draws the ``lte-nr`` generator's scenes (sample i of seed S: its carriers, bandwidths, SNRs,
fading) for each duration and scores both against the labels at the windows' time resolution: mean
class pixel accuracy (as ``radiofm eval`` reports it) and mean IoU, over all captures' pixels.

    python -m radiofm.benchmarks.long_segment lte-nr-nano --n 30 --seed 103 --json long-segment.json
"""

from __future__ import annotations

import sys

import numpy as np

from .accuracy import run_study, study_parser


def long_segment(model: str, n: int, seed: int, durations_ms: list[float], engine: str = "torch", log=print) -> dict:
    from radiofm import signal
    from radiofm.training.synth.common import sample_rng
    from radiofm.training.synth.lte_nr import lte_nr_capture

    if not durations_ms or any(not d > 0 for d in durations_ms):
        raise ValueError(f"durations are positive milliseconds, got {durations_ms}")
    seg = lte_nr_segmenter(model, engine)
    pre = seg.cfg.preprocess
    classes = list(seg.classes)
    rows = []
    for duration in durations_ms:
        samples = int(round(duration * 1e-3 * pre.sample_rate))
        frames = signal.num_frames(samples, pre.n_fft, pre.hop)
        edges = seg._capture_windows(samples)
        k = 1 if edges is None else len(edges) - 1
        # The labels' grid: the windows' own resolution along time.
        size = (pre.stored_size[0], k * pre.stored_size[1]) if pre.stored_size else (pre.n_fft, frames)
        counts = {way: np.zeros((len(classes), len(classes)), np.int64) for way in WAYS}
        for i in range(n):
            iq, truth, _ = lte_nr_capture(sample_rng(seed, i), duration_ms=duration, size=size, pre=pre)
            windows = seg.predict_iq(iq, pre.sample_rate).indices[0]
            whole = seg.predict(seg._iq_spectrograms(iq, pre.sample_rate)).indices[0]
            for way, found in (("windows", _on_frames(windows, edges, frames)), ("whole", whole)):
                counts[way] += _confusion(truth, found, len(classes))
        row = {"duration_ms": duration, "samples": samples, "n_windows": k}
        for way, cm in counts.items():
            row[way] = _scores(cm, classes)
        log(f"{duration:g} ms ({k} window{'s' * (k != 1)}): windows {row['windows']['mean_class_accuracy']:.2%} "
            f"(mIoU {row['windows']['miou']:.2%}), whole {row['whole']['mean_class_accuracy']:.2%} "
            f"(mIoU {row['whole']['miou']:.2%})")
        rows.append(row)
    return {"model": model, "engine": seg.engine_name, "metric": "mean class pixel accuracy, mean IoU",
            "captures": n, "seed": seed, "max_capture_samples": pre.max_capture_samples,
            "sample_rate": pre.sample_rate, "rows": rows}


WAYS = ("windows", "whole")


def lte_nr_segmenter(model: str, engine: str):
    """A Segmenter of ``model`` on ``engine``, refused by name unless it segments the lte-nr
    generator's classes from IQ at a known sample rate."""
    from radiofm.engines import open_engine
    from radiofm.sdk import Segmenter
    from radiofm.training.synth.lte_nr import CLASSES

    eng = open_engine(model, engine)
    pre = eng.cfg.preprocess
    if eng.cfg.task != "segment" or list(eng.cfg.labels or []) != CLASSES or pre.kind != "spectrogram" or not pre.sample_rate:
        raise ValueError(f"{model} is not a segmenter of the lte-nr generator's classes {CLASSES} from IQ at a "
                         f"recorded sample rate; this measures those")
    return Segmenter(eng)


def _on_frames(indices: np.ndarray, edges: np.ndarray | None, frames: int) -> np.ndarray:
    """A windowed class map (H, k * W) spread onto the capture's ``frames`` STFT frames, each
    window's W columns over its own frames: the windows differ by up to a frame in length."""
    from radiofm import signal

    if edges is None:
        return indices
    width = indices.shape[-1] // (len(edges) - 1)
    parts = [signal.resize_labels(indices[None, :, j * width:(j + 1) * width], (indices.shape[0], b - a))[0]
             for j, (a, b) in enumerate(zip(edges[:-1], edges[1:]))]
    return np.concatenate(parts, axis=-1)


def _confusion(truth: np.ndarray, found: np.ndarray, k: int) -> np.ndarray:
    """(k, k) counts, rows true, of a class map ``found`` resized (nearest) onto ``truth``'s grid."""
    from radiofm import signal

    found = signal.resize_labels(found[None], truth.shape)[0]
    return np.bincount(truth.ravel() * k + found.ravel(), minlength=k * k).reshape(k, k)


def _scores(cm: np.ndarray, classes: list[str]) -> dict:
    """Mean class pixel accuracy, mean IoU and both per class, of a confusion matrix (rows true)."""
    recall, iou = _per_class(cm)
    return {"mean_class_accuracy": float(np.nanmean(recall)), "miou": float(np.nanmean(iou)),
            "per_class_accuracy": dict(zip(classes, map(float, recall))),
            "per_class_iou": dict(zip(classes, map(float, iou)))}


def _per_class(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-class recall and IoU of a confusion matrix (rows true); NaN for a class never present."""
    hits = np.diag(cm).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(cm.sum(1) > 0, hits / cm.sum(1), np.nan)
        union = cm.sum(0) + cm.sum(1) - hits
        iou = np.where(union > 0, hits / union, np.nan)
    return recall, iou


def main(argv: list[str] | None = None) -> int:
    parser = study_parser(__doc__, "a segmenter of the lte-nr classes", 30, "captures per duration", "torch",
                          "torch | onnx | trt: every window fills the grid, so any export")
    parser.add_argument("--durations", type=float, nargs="+", default=[10.0, 25.0, 40.0, 80.0, 160.0, 320.0],
                        help="capture durations in ms (default 10 25 40 80 160 320)")
    args = parser.parse_args(argv)
    return run_study(parser, args, lambda: long_segment(args.model, args.n, args.seed, args.durations, args.engine),
                     _table)


def _table(result: dict) -> list[str]:
    classes = list(result["rows"][0]["windows"]["per_class_accuracy"])
    longest = result["max_capture_samples"]
    windows = (f"windows of at most {longest / result['sample_rate'] * 1e3:g} ms" if longest
               else "no preprocess.max_capture_samples: every capture whole")
    return [f"\n{result['captures']} captures per duration (seed {result['seed']}), {windows}\n\n| duration | windows "
            f"| mean class accuracy, windows (the SDK) | whole | mIoU, windows | whole |\n|---|---|---|---|---|---|",
            *(f"| {r['duration_ms']:g} ms | {r['n_windows']} | {r['windows']['mean_class_accuracy']:.1%} "
              f"| {r['whole']['mean_class_accuracy']:.1%} | {r['windows']['miou']:.1%} | {r['whole']['miou']:.1%} |"
              for r in result["rows"]),
            "\nper class, accuracy / IoU, windows (the SDK) against whole\n\n| duration | "
            + " | ".join(classes) + " |\n" + "|---" * (len(classes) + 1) + "|",
            *(f"| {r['duration_ms']:g} ms | " + " | ".join(
                f"{r['windows']['per_class_accuracy'][c]:.0%} / {r['windows']['per_class_iou'][c]:.0%} against "
                f"{r['whole']['per_class_accuracy'][c]:.0%} / {r['whole']['per_class_iou'][c]:.0%}" for c in classes)
              + " |" for r in result["rows"])]


if __name__ == "__main__":
    sys.exit(main())
