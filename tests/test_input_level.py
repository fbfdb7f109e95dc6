import json

from radiofm.benchmarks.input_level import input_level, main


def test_input_level_scores_the_generators_captures_at_each_gain(tmp_path):
    result = input_level("signals-nano", n=16, seed=103, gains_db=[0.0, 10.0], engine="torch",
                         log=lambda *_: None)
    at_level, hot = result["rows"]
    assert at_level["as_is"] == at_level["known"]  # at 0 dB the known noise power is 1: nothing changes
    assert hot["known"] == at_level["as_is"]  # the known power undoes the gain
    assert hot["estimate"] == at_level["estimate"]  # the estimate scales with the gain
    assert hot["as_is"] < at_level["as_is"]  # the zoo model without it, 10 dB too hot

    assert main(["signals-nano", "--n", "8", "--gains", "0", "--engine", "torch", "--json", str(tmp_path / "l.json")]) == 0
    assert json.loads((tmp_path / "l.json").read_text())["rows"][0]["gain_db"] == 0.0


def test_input_level_scores_a_segmenter_on_lte_nr_frames_as_iq():
    result = input_level("lte-nr-nano", n=2, seed=102, gains_db=[0.0, 10.0], engine="torch", log=lambda *_: None)
    at_level, hot = result["rows"]
    assert result["metric"] == "mean per-class pixel accuracy" and 0.3 < at_level["as_is"] <= 1.0
    assert hot["known"] == at_level["as_is"] and hot["estimate"] == at_level["estimate"]


def test_input_level_refuses_a_model_it_cannot_score(capsys):
    assert main(["msm-nano", "--n", "4", "--engine", "torch"]) == 1
    assert "msm-nano is a 'mae' model; this measures classifiers and segmenters" in capsys.readouterr().err
