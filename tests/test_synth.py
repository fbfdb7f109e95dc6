import os

import numpy as np
import pytest

from radiofm import signal
from radiofm.training.datasets import open_dataset
from radiofm.training.synth import synthesize
from radiofm.training.synth.common import read_manifest
from radiofm.training.synth.lte_nr import lte_nr_frame
from radiofm.training.synth.signals import CLASSES, generate_signal

SIZES = {"lte-nr": 2, "signals": 8, "csi-har": 6, "pretrain": 2}


def _arrays(ds):
    return [(x, None if y is None else np.asarray(y), ds.snr_db(i)) for i, (x, y) in enumerate(ds)]


@pytest.mark.parametrize("task", list(SIZES))
def test_each_generator_is_deterministic_by_seed(task, tmp_path):
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        assert synthesize(task, SIZES[task], tmp_path / name, seed=seed, progress=False) == SIZES[task]
    a, b, c = (_arrays(open_dataset(tmp_path / name)) for name in "abc")
    for (xa, ya, sa), (xb, yb, sb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
        assert sa == sb or (sa is None and sb is None)
    assert not np.array_equal(a[0][0], c[0][0])
    assert not [p for p in os.listdir(tmp_path / "a") if p.endswith(".tmp")]


def test_workers_do_not_change_the_data_and_reruns_fill_in_only_missing(tmp_path):
    synthesize("signals", 6, tmp_path / "one", seed=1, workers=1, progress=False)
    synthesize("signals", 6, tmp_path / "two", seed=1, workers=2, progress=False)
    for (x1, y1), (x2, y2) in zip(open_dataset(tmp_path / "one"), open_dataset(tmp_path / "two")):
        np.testing.assert_array_equal(x1, x2)
        assert y1 == y2
    kept = (tmp_path / "one" / "sample_000001.npz").stat().st_mtime_ns
    (tmp_path / "one" / "sample_000004.npz").unlink()
    assert synthesize("signals", 8, tmp_path / "one", seed=1, progress=False) == 3  # 4, 6, 7
    assert (tmp_path / "one" / "sample_000001.npz").stat().st_mtime_ns == kept
    np.testing.assert_array_equal(open_dataset(tmp_path / "one")[4][0], open_dataset(tmp_path / "two")[4][0])
    manifest = read_manifest(tmp_path / "one")
    assert manifest["num_samples"] == 8 and manifest["classes"] == CLASSES and manifest["sample_rate"] == 30.72e6
    with pytest.raises(ValueError, match="seed"):
        synthesize("signals", 8, tmp_path / "one", seed=2, progress=False)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lte_nr_labels_line_up_with_energy(seed):
    snr_db = 20.0
    spec, labels, info = lte_nr_frame(np.random.default_rng(seed), snr_db=snr_db, n_carriers=3, duration_ms=10)
    assert spec.shape == labels.shape == (256, 256)
    noise = spec[labels == 0]
    floor = np.median(noise)
    for cls in np.unique(labels[labels > 0]):
        inside = 10 * np.log10(spec[labels == cls].mean() / floor)
        assert inside == pytest.approx(10 * np.log10(1 + 10 ** (snr_db / 10)), abs=3.0), (cls, info)
    # Unlabelled pixels hold noise; only a few (OFDM splatter, pixels less than half covered) stand out.
    assert np.mean(noise > floor * 10) < 0.1


def test_lte_nr_labels_are_ofdm_classes():
    _, labels, info = lte_nr_frame(np.random.default_rng(5))
    kinds = {int(c[0]) for c in info["carriers"]}
    assert set(np.unique(labels)) <= {0} | kinds


@pytest.mark.parametrize("kind", CLASSES)
def test_signals_are_deterministic_and_carry_their_snr(kind):
    a = generate_signal(kind, np.random.default_rng(7), 20.0)
    b = generate_signal(kind, np.random.default_rng(7), 20.0)
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.complex64 and a.shape == (32768,)
    spec = signal.spectrogram(a)
    excess_db = 10 * np.log10(spec.max(1).max() / np.median(spec))
    assert excess_db < 15 if kind == "noise" else excess_db > 15


def test_cw_peak_sits_the_snr_above_the_noise_floor():
    spec = signal.spectrogram(generate_signal("CW", np.random.default_rng(8), 20.0))
    peak = spec.mean(1).max()  # a tone stays in one bin
    assert 10 * np.log10(peak / np.median(spec)) == pytest.approx(20.0, abs=1.5)


def test_fm_is_wider_than_one_bin_and_cw_is_not():
    """FM is drawn wideband (40-75 kHz peak deviation) so that a 30 kHz-bin spectrogram can tell it from CW."""
    from radiofm.training.synth.signals import GENERATORS, SAMPLE_RATE

    def occupied_bins(kind, seed):
        x = GENERATORS[kind](np.random.default_rng(seed), 30.0, 32768, SAMPLE_RATE)
        spec = signal.spectrogram(x.astype(np.complex64)).max(1)  # peak over time, per bin
        return int(np.sum(spec > spec.max() / 10))  # bins within 10 dB of the peak

    fm_bins, cw_bins = [], []
    for seed in range(20):
        rng = np.random.default_rng(seed)
        x = GENERATORS["FM"](rng, 30.0, 32768, SAMPLE_RATE)
        inst = np.angle(x[1:] * np.conj(x[:-1])) * SAMPLE_RATE / (2 * np.pi)  # FM discriminator
        swing = (inst.max() - inst.min()) / 2  # peak deviation (the carrier offset cancels)
        assert 10e3 < swing <= 75e3 * 1.001
        fm_bins.append(occupied_bins("FM", seed))
        cw_bins.append(occupied_bins("CW", seed))
    assert np.mean(fm_bins) > np.mean(cw_bins) + 1.5  # a CW tone spreads over the Hann main lobe alone


def _csi(activity, n=20, snr_db=35.0):
    from radiofm.training.synth.csi_har import generate_csi

    return [generate_csi(activity, np.random.default_rng([9, s]), snr_db).astype(np.float64) for s in range(n)]


def test_csi_empty_room_holds_still_and_every_activity_moves_it():
    """Per subcarrier, the amplitude's spread over time relative to its mean: flutter alone (2 %) in an
    empty room; a person's reflections beating against the static paths in every activity."""
    def spread(x):
        return np.median(x.std(2) / x.mean(2))

    assert max(spread(x) for x in _csi("clean")) < 0.04
    for activity in ("run", "walk", "fall", "box", "circle"):
        assert min(spread(x) for x in _csi(activity)) > 0.06, activity


def test_csi_fall_leaves_the_channel_changed_for_good():
    """The first and last 0.4 s of a fall see the person standing, then lying: a different multipath."""
    def change(x):
        return np.abs(x[:, :, :50].mean(2) - x[:, :, -50:].mean(2)).mean() / x.mean()

    assert np.median([change(x) for x in _csi("fall")]) > 0.2
    assert max(change(x) for x in _csi("clean")) < 0.02


def test_csi_walkers_cross_the_link_and_shadow_its_line_of_sight():
    from radiofm.training.synth.csi_har import SHADOW_WIDTH_M, _shadow, _walker

    t = np.arange(500) / 125.0
    crossed = 0
    for seed in range(20):
        torso = _walker(np.random.default_rng(seed), t, 4.0, (0.8, 1.4), (1.6, 2.2), 0.25)[0][1]
        assert np.all(np.abs(torso[:, 2] - 1.2) < 1e-9)  # upright all along
        at = np.flatnonzero(np.diff(np.sign(torso[:, 1])) != 0)  # where it passes y = 0, the line through the link
        crossed += bool(np.any((torso[at, 0] > 0) & (torso[at, 0] < 4.0)))  # between transmitter and receiver
    assert crossed >= 14
    on_link, beside, lying = np.array([[2.0, 0.0, 1.2], [2.0, 3 * SHADOW_WIDTH_M, 1.2], [2.0, 0.0, 0.2]])
    np.testing.assert_allclose(_shadow(np.stack([on_link, beside, lying]), 4.0, 0.6), [0.4, 1.0, 1.0], atol=1e-3)
    # In the channel: a torso walking through the link dims the line of sight on every subcarrier at once,
    # even when it reflects nothing itself; one walking beside the link leaves the room as it was.
    from radiofm.training.synth.csi_har import _channel, _room

    los, multipath = _room(np.random.default_rng(0), 4.0)
    y = np.linspace(-1.5, 1.5, 61)
    through = np.column_stack([np.full(61, 2.0), y, np.full(61, 1.2)])
    amplitude = np.abs(_channel((los, 0 * multipath), [(0.0, through)], 4.0, 0.6))  # the line of sight alone
    np.testing.assert_allclose(amplitude[:, :, 30], 0.4, rtol=1e-9)
    np.testing.assert_allclose(amplitude[:, :, [0, -1]], 1.0, atol=1e-3)
    beside = through + np.array([0.0, 5.0, 0.0])
    np.testing.assert_allclose(_channel((los, multipath), [(0.0, beside)], 4.0, 0.6),
                               np.broadcast_to(_channel((los, multipath), [], 4.0, 0.6), (3, 114, 61)), atol=1e-9)


def _group_members(pgid: int) -> list[int]:
    """Live processes (not zombies) of process group ``pgid``, from /proc."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry))
    return members


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads worker processes from /proc")
@pytest.mark.parametrize("signum, to_group", [(2, True), (15, False)], ids=["sigint-to-group", "sigterm-to-main"])
def test_synth_stops_at_once_on_a_signal_leaves_no_worker_and_a_rerun_completes(tmp_path, signum, to_group):
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) and `kill` (SIGTERM to the main
    process) end the command within a moment, workers included, with 128 + the signal number; the
    samples written are whole and the same command writes the rest."""
    import signal
    import subprocess
    import sys
    import time

    from radiofm.training.synth import missing

    out, n = tmp_path / "d", 100  # about 1.5 s of work for two workers
    command = [sys.executable, "-m", "radiofm.cli", "data", "synth", "--task", "csi-har", "--n", str(n), "--out",
               str(out), "--workers", "2"]
    env = {**os.environ, "COLUMNS": "300"}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True,  # its own process group, as a shell's job
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 60
        while not list(out.glob("sample_*.npz")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, proc.communicate()[0]
        (os.killpg if to_group else os.kill)(proc.pid, signum)
        sent = time.monotonic()
        output = proc.communicate(timeout=30)[0].decode()
        took = time.monotonic() - sent
    finally:
        time.sleep(0.2)
        left = _group_members(proc.pid)
        if left:  # whatever the outcome, nothing of it runs on after the test
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert not left, f"processes left running: {left}"
    assert proc.returncode == 128 + signum, output
    assert took < 5, f"took {took:.1f} s to stop"
    done = n - len(missing("csi-har", out, n))
    assert 0 < done < n // 2, f"{done} samples written: the queued ones were not cancelled"
    line = " ".join(output.split())
    assert f"holds {done} of {n} csi-har samples" in line and "run the same command again" in line, line
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")]  # no half-written file left behind

    rerun = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"wrote {n - done} of {n}" in " ".join(rerun.stdout.split())
    assert len(open_dataset(out)) == n and not missing("csi-har", out, n)


def test_a_smaller_n_on_an_existing_set_is_refused(tmp_path):
    synthesize("signals", 4, tmp_path, seed=0, progress=False)
    with pytest.raises(ValueError, match=r"holds a set of 4 signals samples; --n 2 would leave 2 of them out.*--n 4"):
        synthesize("signals", 2, tmp_path, seed=0, progress=False)
    assert read_manifest(tmp_path)["num_samples"] == 4 and len(open_dataset(tmp_path)) == 4
    assert synthesize("signals", 4, tmp_path, seed=0, progress=False) == 0  # the same n completes (here: nothing to do)


def test_synth_cli_progress_bar_can_be_turned_off(tmp_path):
    """`radiofm data synth` draws its bar on a terminal (FORCE_COLOR makes rich treat the pipe as one)
    and leaves it out with --no-progress, as `radiofm train` does; both write the whole set."""
    import re
    import subprocess
    import sys

    env = {**os.environ, "FORCE_COLOR": "1", "COLUMNS": "120"}
    outputs = {}
    for flag in ("--progress", "--no-progress"):
        out = tmp_path / flag.strip("-")
        command = [sys.executable, "-m", "radiofm.cli", "data", "synth", "--task", "signals", "--n", "2",
                   "--out", str(out), "--workers", "1", flag]
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 0, done.stderr
        assert len(list(out.glob("sample_*.npz"))) == 2
        outputs[flag] = re.sub(r"\x1b\[[0-9;]*m", "", done.stdout)  # without the colours
    assert "━" in outputs["--progress"]
    assert "━" not in outputs["--no-progress"] and "wrote 2 of 2 signals samples" in outputs["--no-progress"]


def test_a_sample_can_be_drawn_longer_with_its_class_and_snr():
    """The capture-length studies draw a test set's samples longer than the set stores them."""
    from radiofm.training.synth import csi_har, signals

    x, label, snr = csi_har.sample_recording(103, 4)
    assert x.shape == (3, 114, 500) and np.array_equal(x, csi_har.sample_recording(103, 4, 2000)[0])
    longer, longer_label, longer_snr = csi_har.sample_recording(103, 4, 4000)
    assert longer.shape == (3, 114, 1000) and (longer_label, longer_snr) == (label, snr)
    iq, label, snr = signals.sample_capture(103, 6)
    assert iq.shape == (32768,) and np.array_equal(iq, signals.sample_capture(103, 6, 32768)[0])
    longer, longer_label, longer_snr = signals.sample_capture(103, 6, 65536)
    assert longer.shape == (65536,) and (longer_label, longer_snr) == (label, snr)
