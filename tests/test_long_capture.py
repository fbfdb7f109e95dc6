import json

import pytest

from radiofm.benchmarks.long_capture import long_capture, main


def test_long_csi_recordings_score_better_in_windows_than_stretched(tmp_path):
    """The point of cutting a longer recording into windows: the model sees the time scale it was trained on."""
    result = long_capture("csi-har-nano", n=60, seed=103, lengths=[1.0, 1.5, 4.0], log=lambda *_: None)
    whole, half_again, four = result["rows"]
    assert result["window"] == 500 and result["unit"] == "packets"
    assert [(r["steps"], r["n_windows"]) for r in result["rows"]] == [(500, 1), (750, 2), (2000, 4)]
    assert whole["windows"] == whole["stretched"] == whole["first_window"] > 0.85  # one window: the plain path
    assert half_again["windows"] > half_again["stretched"] + 0.05 and four["windows"] > four["stretched"] + 0.2
    # A fall happens once: in 16 s, the windows after it see someone lying still, and the mean says so.
    assert four["first_window_per_class"]["fall"] > 0.8 > four["windows_per_class"]["fall"]

    assert main(["csi-har-nano", "--n", "6", "--lengths", "2", "--json", str(tmp_path / "l.json")]) == 0
    assert json.loads((tmp_path / "l.json").read_text())["rows"][0]["steps"] == 1000


def test_long_signal_captures_are_drawn_as_longer_iq():
    result = long_capture("signals-nano", n=8, seed=103, lengths=[1.0, 2.0], log=lambda *_: None)
    whole, double = result["rows"]
    assert result["unit"] == "spectrogram frames" and result["window"] == whole["steps"] == 65
    assert double["steps"] == 129 and double["n_windows"] == 2
    assert whole["windows"] == whole["stretched"] == whole["first_window"]


@pytest.mark.parametrize("args, message", [
    (["lte-nr-nano", "--n", "2"], "lte-nr-nano is not a classifier with a fixed capture length"),
    (["csi-har-nano", "--n", "2", "--lengths", "0.5"], "lengths are multiples of the model's capture, at least 1; "
                                                       "got [0.5]"),
])
def test_long_capture_refuses_what_it_cannot_score(capsys, args, message):
    assert main(args) == 1
    assert message in capsys.readouterr().err
