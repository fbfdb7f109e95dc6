"""Accuracy of a classifier on captures shorter than the one it was trained on: masked against stretched.

The SDK pads a short capture (IQ, or a CSI recording) to the model's grid at the training time scale
and masks the padded patches in attention (``masked``). The alternative is to resize it over the
whole grid (``stretched``), which changes its time scale: a 2 s recording looks like a 4 s one
played at half speed. This regenerates the recordings behind a ``radiofm data synth`` test set
(sample i of seed S, as the generator writes it: ``csi-har`` for a CSI classifier, ``signals`` for a
spectrogram classifier), keeps the first fraction of each, and scores both ways.

    python -m radiofm.benchmarks.short_capture csi-har-nano --n 600 --seed 103 --json short.json
    python -m radiofm.benchmarks.short_capture signals-nano --n 800 --seed 103
"""

from __future__ import annotations

import sys

import numpy as np

from .accuracy import (csi_test_recordings, fixed_length_classifier, run_study, signals_test_iq, study_parser,
                       time_unit)


def short_capture(model: str, n: int, seed: int, fractions: list[float], engine: str = "torch", log=print) -> dict:
    from radiofm import signal

    if not fractions or any(not 0 < f <= 1 for f in fractions):
        raise ValueError(f"fractions must lie in (0, 1], got {fractions}")
    clf = fixed_length_classifier(model, engine)
    eng, pre = clf.engine, clf.cfg.preprocess
    inputs, truth, full_length = (_csi_inputs if pre.kind == "csi" else _signal_inputs)(clf, n, seed)
    rows = []
    for fraction in fractions:
        cut = inputs(fraction)
        images, valid = clf.prepare(cut)  # as predict() takes it: padded and masked where it is short
        masked = clf._run(images, valid)[0].argmax(1)
        stretched = clf._run(signal.prepare(cut, pre, eng.cfg.img_size))[0].argmax(1)  # the whole grid, no mask
        columns = eng.cfg.grid_size[1] if valid is None else int(valid.reshape(len(cut), *eng.cfg.grid_size)[0].any(0).sum())
        row = {"fraction": fraction, "steps": int(cut.shape[-1]), "patch_columns": columns,
               "masked": float(np.mean(masked == truth)), "stretched": float(np.mean(stretched == truth))}
        row["masked_per_class"] = {c: float(np.mean(masked[truth == k] == k)) for k, c in enumerate(clf.classes)}
        log(f"{fraction:6.3f} of the capture ({row['steps']} {time_unit(pre)}, {columns} patch column{'s' * (columns != 1)}): "
            f"masked {row['masked']:.2%}, stretched {row['stretched']:.2%}")
        rows.append(row)
    return {"model": model, "engine": clf.engine_name, "metric": "accuracy", "captures": n, "seed": seed,
            "unit": time_unit(pre), "full_length": full_length, "rows": rows}


def _csi_inputs(clf, n: int, seed: int):
    """The csi-har test set's recordings (sample i as the generator draws it), cut to their first
    packets; their labels and whole length."""
    x, truth = csi_test_recordings(clf.classes, n, seed)
    return (lambda f: x[..., : max(2, round(f * x.shape[-1]))]), truth, x.shape[-1]


def _signal_inputs(clf, n: int, seed: int):
    """The signals test set's IQ (sample i as the generator draws it), cut to its first samples, as
    spectrograms; their labels and whole length in frames."""
    from radiofm import signal

    iq, truth = signals_test_iq(clf.classes, n, seed)
    pre = clf.cfg.preprocess

    def inputs(f):
        k = max(pre.n_fft, round(f * iq.shape[-1]))
        return np.stack([signal.spectrogram(c[:k], pre) for c in iq])

    return inputs, truth, signal.spectrogram(iq[0], pre).shape[-1]


def main(argv: list[str] | None = None) -> int:
    parser = study_parser(__doc__, "a csi-har or a signals classifier", 600, "recordings", "torch",
                          "torch | onnx | trt (an export with --variable-length)")
    parser.add_argument("--fractions", type=float, nargs="+", default=[1.0, 0.75, 0.5, 0.25, 0.125],
                        help="the part of each capture kept (default 1 0.75 0.5 0.25 0.125)")
    args = parser.parse_args(argv)
    return run_study(parser, args, lambda: short_capture(args.model, args.n, args.seed, args.fractions, args.engine),
                     _table)


def _table(result: dict) -> list[str]:
    return [f"\naccuracy, {result['captures']} captures of {result['full_length']} {result['unit']} "
            f"(seed {result['seed']})\n\n| kept | {result['unit']} | patch columns | masked (the SDK) | stretched |"
            f"\n|---|---|---|---|---|",
            *(f"| {r['fraction']:g} | {r['steps']} | {r['patch_columns']} | {r['masked']:.1%} | {r['stretched']:.1%} |"
              for r in result["rows"])]


if __name__ == "__main__":
    sys.exit(main())
