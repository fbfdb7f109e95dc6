"""Accuracy of a signal classifier against the input level, with and without ``noise_power``.

The bundled models are trained on captures whose noise has unit power per sample; a receiver's
gain moves every sample's power. This regenerates the IQ behind a ``radiofm data synth --task
signals`` test set (sample i of seed S, as the generator writes it), scales it by each gain and
scores ``predict_iq`` as it is, with the true noise power, and with ``noise_power="estimate"``.

    python -m radiofm.benchmarks.input_level signals-nano --n 800 --seed 103 --json level.json
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def input_level(model: str, n: int, seed: int, gains_db: list[float], engine: str = "auto", log=print) -> dict:
    from radiofm import Classifier
    from radiofm.training.synth.common import sample_rng
    from radiofm.training.synth.signals import CLASSES, SNR_RANGE, generate_signal

    clf = Classifier.from_pretrained(model, engine=engine)
    if list(clf.classes) != CLASSES:
        raise ValueError(f"{model} does not classify the signals generator's classes {CLASSES}")
    captures, truth = [], np.arange(n) % len(CLASSES)
    for i in range(n):  # as training.synth.signals.write_sample draws sample i
        rng = sample_rng(seed, i)
        snr_db = float(rng.uniform(*SNR_RANGE))
        captures.append(generate_signal(CLASSES[truth[i]], rng, snr_db))
    iq = np.stack(captures)
    rows = []
    for gain_db in gains_db:
        gain = 10 ** (gain_db / 10)
        scaled = (iq * np.float32(np.sqrt(gain))).astype(np.complex64)
        row = {"gain_db": gain_db}
        for name, noise_power in (("as_is", None), ("known", gain), ("estimate", "estimate")):
            row[name] = float(np.mean(clf.predict_iq(scaled, noise_power=noise_power).indices == truth))
        log(f"gain {gain_db:+6.1f} dB: as is {row['as_is']:.2%}, noise_power=known {row['known']:.2%}, "
            f"noise_power='estimate' {row['estimate']:.2%}")
        rows.append(row)
    return {"model": model, "engine": clf.engine_name, "captures": n, "seed": seed, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="zoo name or model folder of a signals classifier")
    parser.add_argument("--n", type=int, default=800, help="captures (default 800)")
    parser.add_argument("--seed", type=int, default=103, help="the test set's seed (default 103)")
    parser.add_argument("--gains", type=float, nargs="+", default=[-20, -10, -3, 0, 3, 10, 20],
                        help="gains in dB (default -20 -10 -3 0 3 10 20)")
    parser.add_argument("--engine", default="auto", help="torch | onnx | trt | auto (default auto)")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error(f"--n must be at least 1, got {args.n}")
    try:
        result = input_level(args.model, args.n, args.seed, args.gains, args.engine)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print("\n| gain | as it is | noise_power known | noise_power=\"estimate\" |\n|---|---|---|---|")
    for r in result["rows"]:
        print(f"| {r['gain_db']:+g} dB | {r['as_is']:.1%} | {r['known']:.1%} | {r['estimate']:.1%} |")
    if args.json:
        from radiofm.checkpoint import write_json_atomic

        write_json_atomic(args.json, result)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
