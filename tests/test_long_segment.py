import json

import pytest

from radiofm.benchmarks.long_segment import long_segment, main


def test_long_iq_captures_segment_better_in_windows_than_squeezed_whole(tmp_path):
    """lte-nr-nano knows 10-40 ms on its grid: 320 ms squeezed there whole loses its slots and frames,
    in 13 windows of about 25 ms it does not; at 10 ms there is one window and the two paths are the same.
    (At 160 ms the retrained model keeps its mean class accuracy whole within a few points, and its
    mIoU drops by 15: 320 ms separates the two paths on both.)"""
    result = long_segment("lte-nr-nano", n=2, seed=103, durations_ms=[10.0, 320.0], log=lambda *_: None)
    short, long = result["rows"]
    assert result["max_capture_samples"] == 1_536_000 and result["sample_rate"] == 61.44e6
    assert [(r["samples"], r["n_windows"]) for r in result["rows"]] == [(614_400, 1), (19_660_800, 13)]
    assert short["windows"] == short["whole"] and short["windows"]["mean_class_accuracy"] > 0.85
    assert long["windows"]["mean_class_accuracy"] > long["whole"]["mean_class_accuracy"] + 0.05
    assert long["windows"]["miou"] > long["whole"]["miou"] + 0.1
    assert set(long["windows"]["per_class_iou"]) == {"noise", "NR", "LTE"}

    assert main(["lte-nr-nano", "--n", "1", "--durations", "30", "--json", str(tmp_path / "s.json")]) == 0
    assert json.loads((tmp_path / "s.json").read_text())["rows"][0]["n_windows"] == 2


@pytest.mark.parametrize("args, message", [
    (["signals-nano", "--n", "2"], "signals-nano is not a segmenter of the lte-nr generator's classes"),
    (["lte-nr-nano", "--n", "2", "--durations", "0"], "durations are positive milliseconds, got [0.0]"),
])
def test_long_segment_refuses_what_it_cannot_score(capsys, args, message):
    assert main(args) == 1
    assert message in capsys.readouterr().err
