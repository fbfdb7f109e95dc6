"""Accuracy of a segmenter on IQ with and without its training set's stored grid (``preprocess.stored_size``).

The ``lte-nr`` generator stores each frame's spectrogram area-averaged to 256 x 256 in linear power
(mean power per pixel) before any dB, and lte-nr-nano learnt from frames stored that way. The SDK
brings IQ there first (``Segmenter.predict_iq``: the stored grid, then windows of at most
``preprocess.max_capture_samples``); ``straight`` hands the STFT to the model as it is, so the dB and
the resize onto the model grid act on unaveraged power; ``stored`` is the frames as the generator
stores them, each whole. This draws the generator's frames (sample i of seed S, 10-40 ms each, as
``radiofm data synth --task lte-nr`` makes them) and scores the three against their labels at the
stored grid's 256 rows and each STFT frame along time (each map spread onto the frames it covers):
mean class pixel accuracy and mean IoU over all frames' pixels.

    python -m radiofm.benchmarks.stored_size lte-nr-nano --n 200 --seed 102 --json stored-size.json
"""

from __future__ import annotations

import sys

import numpy as np

from .accuracy import run_study, study_parser
from .long_segment import _confusion, _on_frames, _scores, lte_nr_segmenter

WAYS = ("sdk", "straight", "stored")


def stored_size(model: str, n: int, seed: int, engine: str = "torch", log=print) -> dict:
    from radiofm import signal
    from radiofm.training.synth.common import sample_rng
    from radiofm.training.synth.lte_nr import lte_nr_capture

    seg = lte_nr_segmenter(model, engine)
    pre = seg.cfg.preprocess
    if not pre.stored_size:
        raise ValueError(f"{model} records no preprocess.stored_size: its IQ goes straight from the STFT already")
    classes, stored = list(seg.classes), tuple(pre.stored_size)
    counts = {way: np.zeros((len(classes), len(classes)), np.int64) for way in WAYS}
    for i in range(n):
        # Labelled per STFT frame along time (width None), so that no way's map is sampled: every
        # map is spread onto the frames it covers.
        iq, truth, _ = lte_nr_capture(sample_rng(seed, i), size=(stored[0], None), pre=pre)
        spectrum = signal.spectrogram(iq, pre)[None]
        maps = {"sdk": _on_frames(seg.predict_iq(iq, pre.sample_rate).indices[0],
                                  seg._capture_windows(len(iq)), truth.shape[1]),
                "straight": seg.predict(spectrum).indices[0],
                "stored": seg.predict(signal.resize(spectrum, stored, "area")).indices[0]}
        for way, found in maps.items():
            counts[way] += _confusion(truth, found, len(classes))
    result = {"model": model, "engine": seg.engine_name, "metric": "mean class pixel accuracy, mean IoU",
              "frames": n, "seed": seed, "stored_size": list(stored), "ways": {}}
    for way, cm in counts.items():
        result["ways"][way] = _scores(cm, classes)
        log(f"{way}: {result['ways'][way]['mean_class_accuracy']:.2%} (mIoU {result['ways'][way]['miou']:.2%})")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = study_parser(__doc__, "a segmenter of the lte-nr classes with preprocess.stored_size", 200,
                          "frames", "torch", "torch | onnx | trt", seed=102)  # the model card's test frames
    args = parser.parse_args(argv)
    return run_study(parser, args, lambda: stored_size(args.model, args.n, args.seed, args.engine), _table)


NAMES = {"sdk": "IQ through the stored grid (the SDK)", "straight": "IQ straight from the STFT",
         "stored": "the frames as stored"}


def _table(result: dict) -> list[str]:
    return [f"\n{result['frames']} frames (seed {result['seed']}), scored on {result['stored_size'][0]} rows x each STFT frame\n\n"
            "| input | mean class accuracy | mIoU |\n|---|---|---|",
            *(f"| {NAMES[way]} | {r['mean_class_accuracy']:.1%} | {r['miou']:.1%} |"
              for way, r in result["ways"].items())]


if __name__ == "__main__":
    sys.exit(main())
