"""Model and preprocessing configuration: plain dataclasses with a JSON round trip.

A model folder's ``config.json`` is ``ModelConfig.to_dict()``; everything needed to rebuild the
network and to repeat training's preprocessing at inference lives here.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

FORMAT_VERSION = 1
TASKS = ("mae", "classify", "segment", "encode")
POOLS = ("cls", "avg")


@dataclass
class PreprocessConfig:
    """IQ -> spectrogram -> model input, as the paper's generator and data loader do it.

    ``offset``/``scale`` are the affine dB scaling ``(db + offset) / scale``; ``mean``/``std`` the
    Normalize that follows (one value, or one per input channel). The defaults are the paper-era
    constants; ``PREPROCESS_PRESETS["later"]`` holds the later code base's.
    """

    kind: str = "spectrogram"  # "spectrogram" (from IQ) or "csi" (CSI amplitude, antennas as channels)
    n_fft: int = 1024
    hop: int = 512
    window: str = "hann"
    db_eps: float = 1e-12
    offset: float = 155.8
    scale: float = 147.39
    mean: list[float] = field(default_factory=lambda: [0.634])
    std: list[float] = field(default_factory=lambda: [0.0664])
    resize: str = "bicubic"
    sample_rate: float | None = None  # Hz the model was trained at; None = not fixed
    # Per model input in training (the streaming window): IQ samples, or for CSI packets (after the
    # loader's decimation). None: not one length.
    capture_samples: int | None = None
    # For a model trained on captures of varying length, each resized onto its grid (the lte-nr
    # segmenter's 10-40 ms): the most IQ samples it takes in one piece. A longer capture is cut into
    # the fewest equal windows no longer than this, each seen at a time scale the model knows.
    # None: any length in one piece.
    max_capture_samples: int | None = None
    # (H, W) the training set stored its spectrograms at, area-averaged in linear power (the lte-nr
    # generator's 256x256, the MATLAB example's layout); IQ input is brought there the same way
    # before the loader's steps. None: stored as the STFT made them (signals).
    stored_size: list[int] | None = None

    def __post_init__(self) -> None:
        self.mean = _as_float_list(self.mean, "mean")
        self.std = _as_float_list(self.std, "std")
        if self.kind not in ("spectrogram", "csi"):
            raise ValueError(f"preprocess.kind must be 'spectrogram' or 'csi', got {self.kind!r}")
        if self.n_fft <= 0 or self.hop <= 0:
            raise ValueError(f"preprocess n_fft and hop must be positive, got {self.n_fft}, {self.hop}")
        if self.scale == 0 or any(s <= 0 for s in self.std):
            raise ValueError("preprocess scale must be non-zero and std positive")
        for name in ("capture_samples", "max_capture_samples"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
                raise ValueError(f"preprocess.{name} must be a positive whole number or null, got {value!r}")
        if self.stored_size is not None:
            size = list(self.stored_size)
            if len(size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size):
                raise ValueError(f"preprocess.stored_size must be two positive whole numbers (H, W), got {self.stored_size!r}")
            self.stored_size = size


PREPROCESS_PRESETS: dict[str, dict[str, Any]] = {
    "paper": dict(offset=155.8, scale=147.39, mean=[0.634], std=[0.0664]),
    "later": dict(offset=120.0, scale=119.5, mean=[0.451], std=[0.043]),
}


@dataclass
class ModelConfig:
    """Architecture, task and labels of one model. Sizes follow timm / MAE naming."""

    name: str = "vit-nano"
    img_size: tuple[int, int] = (128, 128)
    patch_size: int = 16
    in_chans: int = 1
    embed_dim: int = 192
    depth: int = 6
    num_heads: int = 3
    mlp_ratio: float = 4.0
    decoder_embed_dim: int = 128
    decoder_depth: int = 2
    decoder_num_heads: int = 4
    seg_depth: int = 2
    task: str = "mae"
    num_classes: int = 0
    labels: list[str] = field(default_factory=list)
    pool: str = "avg"
    norm_pix_loss: bool = False
    mask_ratio: float = 0.75
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    format_version: int = FORMAT_VERSION
    radiofm_version: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.preprocess, dict):
            self.preprocess = PreprocessConfig(**self.preprocess)
        if isinstance(self.img_size, int):
            self.img_size = (self.img_size, self.img_size)
        self.img_size = (int(self.img_size[0]), int(self.img_size[1]))
        self.labels = list(self.labels)
        if not self.radiofm_version:
            from radiofm import __version__

            self.radiofm_version = __version__
        self.validate()

    def validate(self) -> None:
        h, w = self.img_size
        p = self.patch_size
        if p <= 0 or h % p or w % p:
            raise ValueError(f"img_size {self.img_size} must be divisible by patch_size {p}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.decoder_embed_dim % self.decoder_num_heads:
            raise ValueError(
                f"decoder_embed_dim {self.decoder_embed_dim} is not divisible by "
                f"decoder_num_heads {self.decoder_num_heads}"
            )
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {self.pool!r}")
        if self.task in ("classify", "segment") and self.num_classes < 2:
            raise ValueError(f"task {self.task!r} needs num_classes >= 2, got {self.num_classes}")
        if self.labels and len(self.labels) != self.num_classes:
            raise ValueError(f"{len(self.labels)} labels given for num_classes={self.num_classes}")
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {self.mask_ratio}")
        if len(self.preprocess.mean) not in (1, self.in_chans):
            raise ValueError(
                f"preprocess.mean has {len(self.preprocess.mean)} values for {self.in_chans} channels"
            )

    @property
    def grid_size(self) -> tuple[int, int]:
        return self.img_size[0] // self.patch_size, self.img_size[1] // self.patch_size

    @property
    def num_patches(self) -> int:
        gh, gw = self.grid_size
        return gh * gw

    @property
    def class_names(self) -> list[str]:
        return self.labels or [str(i) for i in range(self.num_classes)]

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["img_size"] = list(self.img_size)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        version = int(d.get("format_version", FORMAT_VERSION))
        if version > FORMAT_VERSION:
            raise ValueError(
                f"model format version {version} is newer than this radiofm understands "
                f"({FORMAT_VERSION}); upgrade radiofm (pip install -U radiofm)"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown model config keys: {', '.join(unknown)}")
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> "ModelConfig":
        return cls.from_dict(json.loads(text))


def _as_float_list(value: Any, name: str) -> list[float]:
    values = [value] if isinstance(value, (int, float)) else list(value)
    if not values:
        raise ValueError(f"preprocess.{name} must hold at least one value")
    return [float(v) for v in values]


_PRESETS: dict[str, dict[str, Any]] = {
    # The paper's sizes (224x224, patch 16); decoders as in the original implementation.
    "vit-s": dict(img_size=(224, 224), embed_dim=512, depth=12, num_heads=8,
                  decoder_embed_dim=256, decoder_depth=8, decoder_num_heads=8),
    "vit-m": dict(img_size=(224, 224), embed_dim=768, depth=12, num_heads=12,
                  decoder_embed_dim=512, decoder_depth=8, decoder_num_heads=16),
    "vit-l": dict(img_size=(224, 224), embed_dim=1024, depth=24, num_heads=16,
                  decoder_embed_dim=512, decoder_depth=8, decoder_num_heads=16),
    # Small sizes for CPU work and tests.
    "vit-tiny": dict(img_size=(224, 224), embed_dim=192, depth=12, num_heads=3,
                     decoder_embed_dim=128, decoder_depth=4, decoder_num_heads=4),
    "vit-nano": dict(img_size=(128, 128), embed_dim=192, depth=6, num_heads=3,
                     decoder_embed_dim=128, decoder_depth=2, decoder_num_heads=4),
    # The zoo's size: vit-nano's grid at two thirds of the width and depth, ~3x faster to train on a CPU.
    "vit-pico": dict(img_size=(128, 128), embed_dim=128, depth=4, num_heads=4,
                     decoder_embed_dim=96, decoder_depth=2, decoder_num_heads=3),
    "vit-micro": dict(img_size=(32, 32), patch_size=8, embed_dim=64, depth=2, num_heads=2,
                      decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2),
}

PRESET_NAMES = tuple(_PRESETS)


def preset(name: str, **overrides: Any) -> ModelConfig:
    """A named size (``vit-s``, ``vit-m``, ``vit-l``, ``vit-tiny``, ``vit-nano``, ``vit-pico``, ``vit-micro``)."""
    if name not in _PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose one of {', '.join(_PRESETS)}")
    return ModelConfig(name=name, **{**_PRESETS[name], **overrides})
