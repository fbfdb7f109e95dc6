"""LTE and 5G NR downlink carriers, synthesised directly as OFDM resource grids.

A carrier is a resource grid (symbols x subcarriers) filled the way a base station fills it, passed
through a time- and frequency-selective channel, OFDM-modulated at the capture's sample rate with an
IFFT of size fs/SCS and the 3GPP normal cyclic prefix (no resampling), at a centre frequency on
its SCS raster. Sample rates must be multiples of 1.92 MS/s x 2^mu
(e.g. 30.72 or 61.44 MS/s), which keeps every IFFT and CP length an integer.

Power convention: the IFFT is unitary, so a resource element of power |X|^2 is |X|^2 times the
noise power spectral density of unit-variance complex noise. Grids are scaled so that the mean RE
power over the carrier's labelled region equals the in-band SNR (linear).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft

LTE_RB = {1.4: 6, 3: 15, 5: 25, 10: 50, 15: 75, 20: 100}  # TS 36.101 Table 5.6-1
NR_RB = {  # TS 38.101-1 Table 5.3.2-1, channel bandwidth (MHz) -> N_RB per SCS (kHz), FR1 up to 40 MHz
    15: {5: 25, 10: 52, 15: 79, 20: 106, 25: 133, 30: 160, 40: 216},
    30: {5: 11, 10: 24, 15: 38, 20: 51, 25: 65, 30: 78, 40: 106},
    60: {10: 11, 15: 18, 20: 24, 25: 31, 30: 38, 40: 51},
}
# Downlink / special / uplink slot patterns seen on TDD bands, and FDD ("D" only).
TDD_PATTERNS = ("D", "DDDSU", "DDSUU", "DDDDDDDSUU", "DSUUU")
SPECIAL_SLOT_DL_SYMBOLS = 10
QAM_ORDERS = np.array([4, 16, 64, 256])


@dataclass
class CarrierSpec:
    kind: str  # "LTE" or "NR"
    bandwidth_mhz: float
    scs_khz: int
    n_rb: int
    fc_hz: float  # centre, relative to the capture's centre frequency (snapped to the SCS raster)
    snr_db: float
    tdd: str = "D"
    load: float = 0.5

    @property
    def occupied_hz(self) -> float:
        return 12 * self.n_rb * self.scs_khz * 1e3


@dataclass
class Carrier:
    """A carrier's faded resource grid and where in frequency it sits."""

    spec: CarrierSpec
    grid: np.ndarray  # complex64 (symbols, subcarriers), scaled to the in-band SNR
    active: np.ndarray  # bool (symbols, subcarriers): REs inside the labelled region
    k0: int  # centre subcarrier index: fc = k0 * SCS

    @property
    def subcarrier_offsets(self) -> np.ndarray:
        nsc = self.grid.shape[1]
        offsets = np.arange(nsc) - nsc // 2
        return offsets + (offsets >= 0) if self.spec.kind == "LTE" else offsets  # LTE leaves DC empty

    @property
    def subcarrier_hz(self) -> np.ndarray:
        return (self.k0 + self.subcarrier_offsets) * self.spec.scs_khz * 1e3


def draw_lte(rng: np.random.Generator, fc_hz: float = 0.0, snr_db: float = 20.0, max_bw_mhz: float = 20) -> CarrierSpec:
    bw = rng.choice([b for b in LTE_RB if b <= max_bw_mhz])
    return CarrierSpec("LTE", float(bw), 15, LTE_RB[bw], fc_hz, snr_db, load=rng.uniform(0.05, 1.0))


def draw_nr(rng: np.random.Generator, fc_hz: float = 0.0, snr_db: float = 20.0, max_bw_mhz: float = 40) -> CarrierSpec:
    scs = int(rng.choice([15, 30, 60]))
    bw = rng.choice([b for b in NR_RB[scs] if b <= max_bw_mhz] or [min(NR_RB[scs])])
    return CarrierSpec("NR", float(bw), scs, NR_RB[scs][bw], fc_hz, snr_db,
                       tdd=str(rng.choice(TDD_PATTERNS)), load=rng.uniform(0.1, 1.0))


def _qam(rng: np.random.Generator, n: int, order: int) -> np.ndarray:
    """Unit-power square QAM symbols."""
    m = int(np.sqrt(order))
    levels = (2 * rng.integers(0, m, (2, n), dtype=np.int8) - (m - 1)).astype(np.float32) * np.float32(np.sqrt(1.5 / (order - 1)))
    return levels[0] + np.complex64(1j) * levels[1]


def _fill(rng: np.random.Generator, grid: np.ndarray, mask: np.ndarray, order: int = 4) -> None:
    grid[mask] = _qam(rng, int(mask.sum()), order)


def lte_grid(rng: np.random.Generator, n_rb: int, n_subframes: int, load: float) -> np.ndarray:
    """LTE downlink grid (14 symbols per subframe): CRS always on, PDCCH, PSS/SSS/PBCH, per-subframe PDSCH."""
    nsc = 12 * n_rb
    grid = np.zeros((14 * n_subframes, nsc), np.complex64)
    crs = np.zeros((14, nsc), bool)
    crs[np.ix_([0, 4, 7, 11], np.arange(rng.integers(3), nsc, 3))] = True  # ports 0/1, v-shift
    centre = nsc // 2
    sync = np.zeros((14, nsc), bool)
    sync[5:7, centre - 31 : centre + 31] = True  # SSS, PSS (FDD), subframes 0 and 5
    pbch = np.zeros((14, nsc), bool)
    pbch[7:11, centre - 36 : centre + 36] = True  # subframe 0
    cfi = int(rng.integers(1, 4))
    for sf in range(n_subframes):
        rows = slice(14 * sf, 14 * sf + 14)
        busy = crs.copy()
        if sf % 5 == 0:
            busy |= sync
        if sf % 10 == 0:
            busy |= pbch & ~crs
        _fill(rng, grid[rows], busy)
        rb_load = np.clip(load + rng.normal(0, 0.2), 0, 1)
        allocated = rng.random(n_rb) < rb_load
        if allocated.any():
            control = np.zeros((14, nsc), bool)
            control[:cfi] = rng.random(nsc) < 0.5 + 0.5 * rb_load
            pdsch = np.zeros((14, nsc), bool)
            pdsch[cfi:] = np.repeat(allocated, 12)
            _fill(rng, grid[rows], control & ~busy)
            _fill(rng, grid[rows], pdsch & ~busy & ~control, int(rng.choice(QAM_ORDERS)))
    return grid


def _ssb_symbols(mu: int, n_slots: int, period_slots: int, rng: np.random.Generator) -> np.ndarray:
    """First OFDM symbol of each transmitted SSB (cases A/C, L=4; 60 kHz carriers carry a 30 kHz SSB)."""
    starts_30k = np.array([2, 8, 16, 22])  # within the first half frame, in 15 or 30 kHz symbols
    starts = starts_30k * (2 if mu == 2 else 1)
    starts = starts[rng.random(4) < 0.8]  # ssb-PositionsInBurst
    bursts = np.arange(0, n_slots, period_slots) * 14
    return (bursts[:, None] + starts[None, :]).ravel()


def nr_grid(rng: np.random.Generator, n_rb: int, mu: int, n_slots: int, tdd: str, load: float) -> np.ndarray:
    """NR downlink grid: SSB bursts, TDD slot pattern, per-slot CORESET + PDSCH allocations."""
    nsc = 12 * n_rb
    grid = np.zeros((14 * n_slots, nsc), np.complex64)
    pattern = (tdd * (n_slots // len(tdd) + 1))[:n_slots]
    coreset_rb = min(n_rb, 48)
    for slot, kind in enumerate(pattern):
        if kind == "U" or rng.random() > load:
            continue
        last = 14 if kind == "D" else SPECIAL_SLOT_DL_SYMBOLS
        rows = slice(14 * slot, 14 * slot + 14)
        mask = np.zeros((14, nsc), bool)
        for _ in range(rng.integers(1, 4)):  # one to three UEs
            length = int(rng.integers(1, n_rb + 1))
            start = int(rng.integers(0, n_rb - length + 1))
            first = int(rng.choice([2, 2, 2, 4]))  # mapping type A, or a short type-B allocation
            mask[first : last if first == 2 else min(last, first + 7), 12 * start : 12 * (start + length)] = True
        coreset = np.zeros((14, nsc), bool)
        coreset[:2, : 12 * coreset_rb] = np.repeat(rng.random(coreset_rb // 6 + 1) < 0.6, 72)[: 12 * coreset_rb]
        _fill(rng, grid[rows], coreset & ~mask)
        _fill(rng, grid[rows], mask, int(rng.choice(QAM_ORDERS)))
    ssb_width = 240 // (2 if mu == 2 else 1)
    if nsc >= ssb_width:
        first_sc = int(rng.integers(0, (nsc - ssb_width) // 12 + 1)) * 12
        for s in _ssb_symbols(mu, n_slots, period_slots=20 * 2**mu, rng=rng):
            span = 2 if mu == 2 else 1  # a 30 kHz symbol lasts two 60 kHz symbols
            block = grid[s : s + 4 * span, first_sc : first_sc + ssb_width]
            block[...] = _qam(rng, block.size, 4).reshape(block.shape)  # PSS, PBCH, SSS+PBCH, PBCH
    return grid


def fading(rng: np.random.Generator, n_sym: int, nsc: int, scs_hz: float, symbol_s: float) -> np.ndarray:
    """Tapped-delay-line channel on the grid: exponential delay profile, sum-of-sinusoids Doppler per tap.

    Applying it per resource element is exact while the delay spread stays inside the cyclic prefix.
    """
    n_taps = int(rng.integers(2, 8))
    spread = rng.uniform(30e-9, 1e-6)
    delays = np.sort(rng.uniform(0, 3 * spread, n_taps))
    delays[0] = 0.0
    power = np.exp(-delays / spread)
    power /= power.sum()
    doppler = rng.uniform(0, 300.0)
    t = np.arange(n_sym)[:, None, None] * symbol_s
    paths = 8
    angle = rng.uniform(0, 2 * np.pi, (1, n_taps, paths))
    phase = rng.uniform(0, 2 * np.pi, (1, n_taps, paths))
    gains = np.exp(1j * (2 * np.pi * doppler * np.cos(angle) * t + phase)).sum(-1) / np.sqrt(paths)
    k = np.arange(nsc) - nsc / 2
    steering = np.exp(-2j * np.pi * scs_hz * delays[:, None] * k[None, :])
    h = (gains * np.sqrt(power)) @ steering
    # Unit power over this realisation, not just on average: the stated SNR is the one received.
    return (h / np.sqrt(np.mean(np.abs(h) ** 2))).astype(np.complex64)


def modulate(freq: np.ndarray, scs_hz: float, fs: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """OFDM with 3GPP normal CP: (symbols, fs/SCS IFFT bins) -> (iq, symbol_start, symbol_end).

    Every half millisecond holds 7*2^mu symbols with CP = 9/128 of the FFT size; the samples left
    over lengthen the first CP of each half millisecond (LTE's 160/144, NR's extra 16 at 30.72 MS/s).
    """
    n_sym, n_fft = freq.shape
    half_ms = round(fs * 5e-4)
    per_half = round(7 * scs_hz / 15e3)
    cp = n_fft * 9 // 128
    extra = half_ms - per_half * (n_fft + cp)
    if abs(n_fft - fs / scs_hz) > 1e-6 or cp * 128 != n_fft * 9 or extra < 0:
        raise ValueError(f"sample rate {fs / 1e6} MS/s does not fit {scs_hz / 1e3:g} kHz OFDM; use a multiple of 3.84 MS/s")
    if n_sym % per_half:
        raise ValueError(f"grid has {n_sym} symbols, not a whole number of half milliseconds ({per_half} each)")
    sym = scipy.fft.ifft(freq, axis=1, norm="ortho", overwrite_x=True).astype(np.complex64, copy=False)
    blocks = np.empty((n_sym // per_half, half_ms), np.complex64)
    body = blocks[:, extra:].reshape(-1, per_half, n_fft + cp)
    body[..., :cp] = sym[:, n_fft - cp :].reshape(-1, per_half, cp)
    body[..., cp:] = sym.reshape(-1, per_half, n_fft)
    blocks[:, :extra] = sym[::per_half, n_fft - cp - extra : n_fft - cp]
    j = np.arange(n_sym) % per_half
    symbol_start = (np.arange(n_sym) // per_half) * half_ms + np.where(j > 0, extra + j * (n_fft + cp), 0)
    symbol_end = symbol_start + n_fft + cp + np.where(j == 0, extra, 0)
    return blocks.ravel(), symbol_start, symbol_end


def frequency_shift(iq: np.ndarray, shift_hz: float, fs: float, block: int) -> None:
    """Multiply ``iq`` in place by exp(j 2 pi shift t), with one exp() per block and per in-block sample."""
    n_blocks = -(-len(iq) // block)
    ramp = np.exp(2j * np.pi * shift_hz * np.arange(block) / fs).astype(np.complex64)
    starts = np.exp(2j * np.pi * shift_hz * np.arange(n_blocks) * block / fs).astype(np.complex64)
    iq *= (starts[:, None] * ramp).ravel()[: len(iq)]


def carrier(rng: np.random.Generator, spec: CarrierSpec, duration_ms: float) -> Carrier:
    """One carrier's faded grid for ``duration_ms`` (rounded up to 1 ms), scaled to ``spec.snr_db`` in band."""
    n_sub = int(np.ceil(duration_ms))
    mu = {15: 0, 30: 1, 60: 2}[spec.scs_khz]
    if spec.kind == "LTE":
        grid = lte_grid(rng, spec.n_rb, n_sub, spec.load)
        active = np.ones(grid.shape, bool)  # reference signals keep the whole carrier lit
    else:
        grid = nr_grid(rng, spec.n_rb, mu, n_sub * 2**mu, spec.tdd, spec.load)
        active = grid != 0
    scs = spec.scs_khz * 1e3
    snr = 10 ** (spec.snr_db / 10)
    mean_power = (np.abs(grid[active]) ** 2).mean() if active.any() else 1.0
    grid *= np.float32(np.sqrt(snr / mean_power))
    grid *= fading(rng, *grid.shape, scs, 1e-3 / (14 * 2**mu))
    return Carrier(spec, grid, active, round(spec.fc_hz / scs))


def modulate_carriers(carriers: list[Carrier], fs: float, n_samples: int) -> tuple[np.ndarray, dict]:
    """Sum of the carriers' OFDM signals, one IFFT per numerology: carriers sharing an SCS share symbol
    timing, so their grids go into one set of IFFT bins. Returns (iq, {scs_khz: (symbol_start, symbol_end)})."""
    iq = np.zeros(n_samples, np.complex64)
    timing = {}
    for scs_khz in sorted({c.spec.scs_khz for c in carriers}):
        group = [c for c in carriers if c.spec.scs_khz == scs_khz]
        n_fft = round(fs / (scs_khz * 1e3))
        freq = np.zeros((max(len(c.grid) for c in group), n_fft), np.complex64)
        for c in group:
            bins = (c.k0 + c.subcarrier_offsets) % n_fft
            # Runs of consecutive bins (split at DC and at the wrap) as slices: fancy indexing is 5x slower.
            cuts = np.flatnonzero(np.diff(bins) != 1) + 1
            for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(bins)]):
                freq[: len(c.grid), bins[lo] : bins[lo] + hi - lo] += c.grid[:, lo:hi]
        wave, start, end = modulate(freq, scs_khz * 1e3, fs)
        iq += wave[:n_samples]
        timing[scs_khz] = (start, end)
    return iq, timing
