import json

import pytest

from radiofm.benchmarks.short_capture import main, short_capture


def test_short_csi_recordings_score_better_masked_than_stretched(tmp_path):
    """The point of padding and masking a short recording: the model sees the time scale it was trained on."""
    result = short_capture("csi-har-nano", n=120, seed=103, fractions=[1.0, 0.5, 0.25], log=lambda *_: None)
    whole, half, quarter = result["rows"]
    assert (whole["steps"], half["steps"], quarter["steps"]) == (500, 250, 125)
    assert (whole["patch_columns"], half["patch_columns"], quarter["patch_columns"]) == (31, 16, 8)
    assert whole["masked"] == whole["stretched"] > 0.85  # a whole recording takes the plain path either way
    assert half["masked"] > half["stretched"] + 0.1 and quarter["masked"] > quarter["stretched"] + 0.1
    assert set(half["masked_per_class"]) == {"run", "walk", "fall", "box", "circle", "clean"}

    assert main(["csi-har-nano", "--n", "6", "--fractions", "0.5", "--json", str(tmp_path / "s.json")]) == 0
    assert json.loads((tmp_path / "s.json").read_text())["rows"][0]["steps"] == 250


def test_short_signal_captures_are_cut_as_iq():
    result = short_capture("signals-nano", n=8, seed=103, fractions=[1.0, 0.5], log=lambda *_: None)
    whole, half = result["rows"]
    assert result["unit"] == "spectrogram frames" and (whole["patch_columns"], half["patch_columns"]) == (4, 2)
    assert whole["masked"] == whole["stretched"] and half["steps"] < whole["steps"]


@pytest.mark.parametrize("args, message", [
    (["lte-nr-nano", "--n", "2"], "lte-nr-nano is not a classifier with a fixed capture length"),
    (["msm-nano", "--n", "2"], "msm-nano is not a classifier with a fixed capture length"),
    (["csi-har-nano", "--n", "2", "--fractions", "0"], r"fractions must lie in (0, 1], got [0.0]"),
])
def test_short_capture_refuses_what_it_cannot_score(capsys, args, message):
    assert main(args) == 1
    assert message in capsys.readouterr().err
