"""What the accuracy studies (``input_level``, ``short_capture``) share: a generator's test set
regenerated as IQ, and the command line's run, table and JSON."""

from __future__ import annotations

import sys
from typing import Callable, Iterable

import numpy as np


def signals_test_iq(classes, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The IQ behind the first ``n`` captures of a ``signals`` test set of ``seed`` (sample i as the
    generator draws it) and their class indices, for a classifier of ``classes``."""
    from radiofm.training.synth.signals import CLASSES, sample_capture

    if list(classes) != CLASSES:
        raise ValueError(f"the classifier does not classify the signals generator's classes {CLASSES}")
    iq, truth, _ = (np.stack(column) for column in zip(*(sample_capture(seed, i) for i in range(n))))
    return iq, truth


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
