import json

import pytest

from radiofm.benchmarks.stored_size import main, stored_size


def test_iq_scores_as_its_stored_frames_only_through_the_stored_grid(tmp_path):
    """lte-nr-nano learnt from frames area-averaged to 256x256 in linear power: IQ brought there (the
    SDK) scores close to the frames as stored, IQ handed over straight from the STFT far below (on the
    third frame, three LTE carriers, straight from the STFT calls a third of the frame NR)."""
    result = stored_size("lte-nr-nano", n=3, seed=102, log=lambda *_: None)
    ways = {way: r["mean_class_accuracy"] for way, r in result["ways"].items()}
    assert result["stored_size"] == [256, 256] and set(ways) == {"sdk", "straight", "stored"}
    assert ways["sdk"] > 0.9 and ways["stored"] > 0.9
    assert abs(ways["sdk"] - ways["stored"]) < 0.03
    assert ways["straight"] < ways["sdk"] - 0.1
    assert set(result["ways"]["sdk"]["per_class_iou"]) == {"noise", "NR", "LTE"}

    assert main(["lte-nr-nano", "--n", "1", "--json", str(tmp_path / "s.json")]) == 0
    written = json.loads((tmp_path / "s.json").read_text())
    assert written["frames"] == 1 and written["seed"] == 102


def test_stored_size_refuses_a_model_it_cannot_score(tmp_path, capsys):
    from radiofm.checkpoint import save_model
    from radiofm.config import PreprocessConfig, preset
    from radiofm.model import build_model

    assert main(["signals-nano", "--n", "1"]) == 1
    assert "signals-nano is not a segmenter of the lte-nr generator's classes" in capsys.readouterr().err
    pre = PreprocessConfig(n_fft=64, hop=32, sample_rate=61.44e6)
    cfg = preset("vit-micro", task="segment", num_classes=3, labels=["noise", "NR", "LTE"], preprocess=pre)
    folder = save_model(build_model(cfg), tmp_path / "seg")
    with pytest.raises(ValueError, match="records no preprocess.stored_size: its IQ goes straight from the STFT"):
        stored_size(str(folder), n=1, seed=0)
