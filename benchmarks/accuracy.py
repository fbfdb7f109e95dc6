"""What the accuracy studies (``input_level``, ``short_capture``, ``long_capture``) share: a
generator's test set regenerated (as IQ, or CSI), the model check of the capture-length studies, and
the command line's run, table and JSON."""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Iterable

import numpy as np


def signals_test_iq(classes, n: int, seed: int, n_samples: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The IQ behind the first ``n`` captures of a ``signals`` test set of ``seed`` (sample i as the
    generator draws it) and their class indices, for a classifier of ``classes``; ``n_samples``
    draws each capture that long instead of the set's 32768 samples."""
    from radiofm.training.synth.signals import CLASSES, NUM_SAMPLES, sample_capture

    if list(classes) != CLASSES:
        raise ValueError(f"the classifier does not classify the signals generator's classes {CLASSES}")
    draws = (sample_capture(seed, i, n_samples or NUM_SAMPLES) for i in range(n))
    iq, truth, _ = (np.stack(column) for column in zip(*draws))
    return iq, truth


def csi_test_recordings(classes, n: int, seed: int, packets: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` recordings (3, 114, 500) of a ``csi-har`` test set of ``seed`` (sample i as the
    generator draws it) and their class indices, for a classifier of ``classes``; ``packets`` records
    each for that many packets instead of the set's 2000 (a quarter of them kept)."""
    from radiofm.training.synth.csi_har import CLASSES, PACKETS, sample_recording

    if list(classes) != CLASSES:
        raise ValueError(f"the classifier does not classify the csi-har generator's classes {CLASSES}")
    draws = (sample_recording(seed, i, packets or PACKETS) for i in range(n))
    x, truth, _ = (np.stack(column) for column in zip(*draws))
    return x, truth


def fixed_length_classifier(model: str, engine: str):
    """A Classifier of ``model`` on ``engine``, refused by name unless it was trained on captures of
    one length (``preprocess.capture_samples``), which is what the capture-length studies vary."""
    from radiofm.engines import open_engine
    from radiofm.sdk import Classifier

    eng = open_engine(model, engine)
    if eng.cfg.task != "classify" or not eng.cfg.preprocess.capture_samples:
        raise ValueError(f"{model} is not a classifier with a fixed capture length (preprocess.capture_samples); "
                         f"this measures those")
    return Classifier(eng)


def time_unit(pre) -> str:
    """What a model's input counts along its time axis."""
    return "packets" if pre.kind == "csi" else "spectrogram frames"


def study_parser(doc: str, model_help: str, n: int, items: str, engine: str, engine_help: str,
                 seed: int = 103) -> argparse.ArgumentParser:
    """A study's command line: the model, ``--n`` ``items`` (default ``n``), ``--seed`` of the test
    set (default ``seed``), ``--engine`` (default ``engine``) and ``--json``; the study adds what it varies."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("model", help=f"zoo name or model folder: {model_help}")
    parser.add_argument("--n", type=int, default=n, help=f"{items} (default {n})")
    parser.add_argument("--seed", type=int, default=seed, help=f"the test set's seed (default {seed})")
    parser.add_argument("--engine", default=engine, help=f"{engine_help} (default {engine})")
    parser.add_argument("--json", help="write the figures here")
    return parser


def run_study(parser, args, measure: Callable[[], dict], table: Callable[[dict], Iterable[str]]) -> int:
    """``measure()`` for ``args`` (with ``--n`` and ``--json``), its ``table`` printed and the JSON
    written; 1 with the error on stderr where the model or the input was refused."""
    if args.n < 1:
        parser.error(f"--n must be at least 1, got {args.n}")
    try:
        result = measure()
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for line in table(result):
        print(line)
    if args.json:
        from radiofm.checkpoint import write_json_atomic

        write_json_atomic(args.json, result)
        print(f"wrote {args.json}")
    return 0
