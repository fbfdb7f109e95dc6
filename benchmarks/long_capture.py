"""Accuracy of a classifier on captures longer than the one it was trained on: windowed against stretched.

``Classifier.predict`` cuts a longer capture (IQ, or a CSI recording) into the fewest windows of the
training length that cover it and averages their probabilities (``windows``), so the model sees the
time scale it was trained on. The alternative is to resize it onto the grid (``stretched``): 16 s of
walking squeezed into the model's 4 s looks like running. ``first window`` scores the first window
alone (what cropping would give). This draws the test set's samples (sample i of seed S, as the
generator draws it: ``csi-har`` for a CSI classifier, ``signals`` for a spectrogram classifier) for
each length, a multiple of the training capture, and scores all three.

    python -m radiofm.benchmarks.long_capture csi-har-nano --n 600 --seed 103 --json long.json
    python -m radiofm.benchmarks.long_capture signals-nano --n 800 --seed 103
"""

from __future__ import annotations

import sys

import numpy as np

from .accuracy import (csi_test_recordings, fixed_length_classifier, run_study, signals_test_iq, study_parser,
                       time_unit)


def long_capture(model: str, n: int, seed: int, lengths: list[float], engine: str = "torch", log=print) -> dict:
    from radiofm import signal

    if not lengths or any(not length >= 1 for length in lengths):
        raise ValueError(f"lengths are multiples of the model's capture, at least 1; got {lengths}")
    clf = fixed_length_classifier(model, engine)
    pre = clf.cfg.preprocess
    draw = _csi_inputs if pre.kind == "csi" else _signal_inputs
    window = clf._train_frames()
    rows = []
    for length in lengths:
        x, truth = draw(clf, n, seed, length)
        starts = clf._window_starts(x.shape[-1])
        count = 1 if starts is None else len(starts)
        row = {"length": length, "steps": int(x.shape[-1]), "n_windows": count}
        predicted = {"windows": clf.predict(x).indices,
                     "stretched": clf._run(signal.prepare(x, pre, clf.cfg.img_size))[0].argmax(1),
                     "first_window": clf.predict(x[..., :window]).indices}
        row.update({name: float(np.mean(p == truth)) for name, p in predicted.items()})
        for name, p in predicted.items():
            row[f"{name}_per_class"] = {c: float(np.mean(p[truth == k] == k)) for k, c in enumerate(clf.classes)}
        log(f"{length:g} x the capture ({row['steps']} {time_unit(pre)}, {count} window{'s' * (count != 1)}): "
            f"windows {row['windows']:.2%}, stretched {row['stretched']:.2%}, first window {row['first_window']:.2%}")
        rows.append(row)
    return {"model": model, "engine": clf.engine_name, "metric": "accuracy", "captures": n, "seed": seed,
            "unit": time_unit(pre), "window": window, "rows": rows}


def _csi_inputs(clf, n: int, seed: int, length: float):
    """The csi-har test set's recordings, each drawn ``length`` times as long (packets: the
    generator's raw 2000, a quarter kept), and their labels."""
    from radiofm.training.synth.csi_har import PACKETS

    return csi_test_recordings(clf.classes, n, seed, round(length * PACKETS))


def _signal_inputs(clf, n: int, seed: int, length: float):
    """The signals test set's captures, each drawn ``length`` times as long, as spectrograms, and their
    labels."""
    from radiofm import signal

    iq, truth = signals_test_iq(clf.classes, n, seed, round(length * clf.cfg.preprocess.capture_samples))
    return np.stack([signal.spectrogram(c, clf.cfg.preprocess) for c in iq]), truth


def main(argv: list[str] | None = None) -> int:
    parser = study_parser(__doc__, "a csi-har or a signals classifier", 600, "recordings", "torch",
                          "torch | onnx | trt: the windows are whole, so any export")
    parser.add_argument("--lengths", type=float, nargs="+", default=[1.0, 1.5, 2.0, 4.0],
                        help="each capture's length as a multiple of the model's (default 1 1.5 2 4)")
    args = parser.parse_args(argv)
    return run_study(parser, args, lambda: long_capture(args.model, args.n, args.seed, args.lengths, args.engine),
                     _table)


def _table(result: dict) -> list[str]:
    classes = list(result["rows"][0]["windows_per_class"])
    return [f"\naccuracy, {result['captures']} captures, windows of {result['window']} {result['unit']} "
            f"(seed {result['seed']})\n\n| length | {result['unit']} | windows | windows, mean (the SDK) | stretched "
            f"| first window |\n|---|---|---|---|---|---|",
            *(f"| {r['length']:g}x | {r['steps']} | {r['n_windows']} | {r['windows']:.1%} | {r['stretched']:.1%} "
              f"| {r['first_window']:.1%} |" for r in result["rows"]),
            f"\nper class, windows' mean (the SDK) / stretched / first window\n\n| length | "
            + " | ".join(classes) + " |\n" + "|---" * (len(classes) + 1) + "|",
            *(f"| {r['length']:g}x | " + " | ".join(" / ".join(f"{r[f'{name}_per_class'][c]:.0%}" for name in _WAYS)
                                                   for c in classes) + " |" for r in result["rows"])]


_WAYS = ("windows", "stretched", "first_window")


if __name__ == "__main__":
    sys.exit(main())
