"""Accuracy of a model against the input level of its IQ, with and without ``noise_power``.

The bundled models are trained on captures whose noise has unit power per sample; a receiver's
gain moves every sample's power. This regenerates the IQ behind a ``radiofm data synth`` test set
(sample i of seed S, as the generator writes it: ``signals`` for a classifier, ``lte-nr`` for a
segmenter), scales it by each gain and scores ``predict_iq`` as it is, with the true noise power,
and with ``noise_power="estimate"``: accuracy for a classifier, mean per-class pixel accuracy (at
the stored 256x256 label grid) for a segmenter.

    python -m radiofm.benchmarks.input_level signals-nano --n 800 --seed 103 --json level.json
    python -m radiofm.benchmarks.input_level lte-nr-nano --n 100 --seed 102
"""

from __future__ import annotations

import sys

import numpy as np

from .accuracy import run_study, signals_test_iq, study_parser


def input_level(model: str, n: int, seed: int, gains_db: list[float], engine: str = "auto", log=print) -> dict:
    from radiofm.engines import open_engine
    from radiofm.sdk import Classifier, Segmenter

    eng = open_engine(model, engine)
    if eng.cfg.task not in ("classify", "segment"):
        raise ValueError(f"{model} is a {eng.cfg.task!r} model; this measures classifiers and segmenters")
    runner = (Classifier if eng.cfg.task == "classify" else Segmenter)(eng)
    score = (_signal_scorer if eng.cfg.task == "classify" else _lte_nr_scorer)(runner, n, seed)
    rows = []
    for gain_db in gains_db:
        gain = 10 ** (gain_db / 10)
        row = {"gain_db": gain_db}
        for name, noise_power in (("as_is", None), ("known", gain), ("estimate", "estimate")):
            row[name] = score(lambda iq: runner.predict_iq((iq * np.float32(np.sqrt(gain))).astype(np.complex64),
                                                           noise_power=noise_power).indices)
        log(f"gain {gain_db:+6.1f} dB: as is {row['as_is']:.2%}, noise_power=known {row['known']:.2%}, "
            f"noise_power='estimate' {row['estimate']:.2%}")
        rows.append(row)
    metric = "accuracy" if eng.cfg.task == "classify" else "mean per-class pixel accuracy"
    return {"model": model, "engine": runner.engine_name, "metric": metric, "captures": n, "seed": seed, "rows": rows}


def _signal_scorer(runner, n: int, seed: int):
    """Accuracy on the signals test set's IQ (sample i as the generator draws it), in one batch."""
    iq, truth = signals_test_iq(runner.classes, n, seed)
    return lambda predict: float(np.mean(predict(iq) == truth))


def _lte_nr_scorer(runner, n: int, seed: int):
    """Mean per-class pixel accuracy on the lte-nr test set's frames as IQ (frames differ in length:
    one call each), predictions taken to the 256x256 label grid, as `radiofm eval` counts it."""
    import torch

    from radiofm import signal
    from radiofm.training.evaluate import classification_metrics, confusion
    from radiofm.training.synth.common import sample_rng
    from radiofm.training.synth.lte_nr import CLASSES, FRAME_SIZE, lte_nr_capture

    if list(runner.classes) != CLASSES:
        raise ValueError(f"the segmenter does not segment the lte-nr generator's classes {CLASSES}")
    frames = [lte_nr_capture(sample_rng(seed, i))[:2] for i in range(n)]

    def score(predict) -> float:
        cm = sum(confusion(torch.from_numpy(signal.resize_labels(predict(iq)[0], FRAME_SIZE).astype(np.int64)),
                           torch.from_numpy(labels.astype(np.int64)), len(CLASSES)) for iq, labels in frames)
        return classification_metrics(cm, CLASSES, segment=True)["mean_class_accuracy"]

    return score


def main(argv: list[str] | None = None) -> int:
    parser = study_parser(__doc__, "a signals classifier or an lte-nr segmenter", 800, "captures", "auto",
                          "torch | onnx | trt | auto")
    parser.add_argument("--gains", type=float, nargs="+", default=[-20, -10, -3, 0, 3, 10, 20],
                        help="gains in dB (default -20 -10 -3 0 3 10 20)")
    args = parser.parse_args(argv)
    return run_study(parser, args, lambda: input_level(args.model, args.n, args.seed, args.gains, args.engine), _table)


def _table(result: dict) -> list[str]:
    return [f"\n{result['metric']}\n\n| gain | as it is | noise_power known | noise_power=\"estimate\" |\n|---|---|---|---|",
            *(f"| {r['gain_db']:+g} dB | {r['as_is']:.1%} | {r['known']:.1%} | {r['estimate']:.1%} |"
              for r in result["rows"])]


if __name__ == "__main__":
    sys.exit(main())
