"""Predictions written back into a SigMF recording as annotations, for any SigMF viewer to show.

A classifier gives one annotation per window it predicted: the window's samples and band (the
capture's, where the recording gives its sample rate), the top class as ``core:label`` and the
leading probabilities in ``core:comment``. A segmenter gives one per connected
region of each foreground class in a window's class map, as a time-frequency box: its samples, and
``core:freq_lower_edge`` / ``core:freq_upper_edge`` from the map's rows (row 0 is -fs/2 about the
capture's ``core:frequency``; 0 Hz where the recording gives none). A class's regions on the same
band with at most ``join_gap_s`` between them (5 ms by default) become one box: a TDD carrier's
bursts, its unscheduled slots, a window edge do not split it. Every annotation names radiofm and the
model in ``core:generator``; writing again replaces those and keeps every other annotation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

GENERATOR = "radiofm"
# A segmenter's regions smaller than this fraction of the window's class map are speckle, not
# emitters: at 256 x 256, under 66 pixels.
MIN_REGION_FRACTION = 0.001
BACKGROUND_CLASSES = ("noise",)  # a segmenter's classes that are not annotated
TOP_CLASSES = 3  # probabilities a classifier annotation's comment gives
# A segmenter's regions of one class on the same band this close in time are one emitter. NR TDD
# patterns leave uplink gaps of 0.5-3 ms (DDDSU at 30 kHz: 0.5 ms; DSUUU at 15 kHz: 3 ms).
JOIN_GAP_S = 5e-3
SAME_BAND = 0.5  # two regions share a band where they overlap over this share of the narrower one


@dataclass
class Window:
    """One prediction over the recording's samples ``start`` .. ``start + count``: for a classifier its
    class probabilities (K,), for a segmenter its class map (H, W), rows frequency, columns time."""

    start: int
    count: int
    probs: np.ndarray | None = None
    class_map: np.ndarray | None = None

    @classmethod
    def of(cls, pred, start: int, count: int, task: str) -> "Window":
        """The window of a ``Prediction`` over those samples: its first item's probabilities or class map."""
        if task == "segment":
            return cls(start, count, class_map=pred.indices[0])
        return cls(start, count, probs=pred.probs[0])


def generator_name(model: str) -> str:
    from radiofm import __version__

    return f"{GENERATOR} {__version__} {model}"


def is_ours(annotation: dict) -> bool:
    """Whether an annotation was written by radiofm (and is replaced by the next annotating run)."""
    generator = str(annotation.get("core:generator", ""))
    return generator == GENERATOR or generator.startswith(GENERATOR + " ")


def classifier_annotations(windows: list[Window], classes: list[str], sample_rate: float | None,
                           center_frequencies: list[float], generator: str) -> list[dict]:
    """One annotation per window; with a sample rate, its band is the whole capture's (fc +- fs/2)."""
    out = []
    for w, fc in zip(windows, center_frequencies):
        order = np.argsort(w.probs)[::-1][:TOP_CLASSES]
        annotation = {"core:sample_start": int(w.start), "core:sample_count": int(w.count)}
        if sample_rate:
            annotation.update({"core:freq_lower_edge": float(fc - sample_rate / 2),
                               "core:freq_upper_edge": float(fc + sample_rate / 2)})
        annotation.update({
            "core:label": classes[order[0]],
            "core:comment": ", ".join(f"{classes[k]} {w.probs[k]:.2f}" for k in order),
            "core:generator": generator,
        })
        out.append(annotation)
    return out


@dataclass
class Box:
    """A time-frequency box of one class: samples ``first`` .. ``end``, Hz ``lower`` .. ``upper``,
    from ``regions`` connected regions holding ``pixels`` pixels of a ``shape`` class map."""

    label: str
    first: int
    end: int
    lower: float
    upper: float
    pixels: int
    shape: tuple[int, int]
    regions: int = 1

    def joins(self, other: "Box", gap: float) -> bool:
        """Same class, same band (overlapping over ``SAME_BAND`` of the narrower), at most ``gap``
        samples apart in time (overlapping in time counts)."""
        if other.label != self.label or max(other.first - self.end, self.first - other.end) > gap:
            return False
        overlap = min(self.upper, other.upper) - max(self.lower, other.lower)
        return overlap > 0 and overlap >= SAME_BAND * min(self.upper - self.lower, other.upper - other.lower)

    def annotation(self, generator: str, join_gap_s: float) -> dict:
        rows, cols = self.shape
        what = (f"{self.pixels} pixels of the {rows}x{cols} class map" if self.regions == 1 else
                f"{self.regions} regions at most {join_gap_s * 1e3:g} ms apart, {self.pixels} pixels of the "
                f"{rows}x{cols} class map")
        return {"core:sample_start": int(self.first), "core:sample_count": int(self.end - self.first),
                "core:freq_lower_edge": float(self.lower), "core:freq_upper_edge": float(self.upper),
                "core:label": self.label, "core:comment": what, "core:generator": generator}


def join_boxes(boxes: list[Box], gap: float) -> list[Box]:
    """Boxes joined while any two join (``Box.joins``, ``gap`` in samples) into their bounding box,
    in order of start; the boxes given are left as they are."""
    boxes = sorted((replace(b) for b in boxes), key=lambda b: b.first)
    changed = True
    while changed:
        changed, out = False, []
        for b in boxes:
            into = next((o for o in out if o.joins(b, gap)), None)
            if into is None:
                out.append(b)
                continue
            into.first, into.end = min(into.first, b.first), max(into.end, b.end)
            into.lower, into.upper = min(into.lower, b.lower), max(into.upper, b.upper)
            into.pixels, into.regions = into.pixels + b.pixels, into.regions + b.regions
            changed = True
        boxes = sorted(out, key=lambda b: b.first)
    return boxes


def segment_regions(windows: list[Window], classes: list[str], sample_rate: float,
                    center_frequencies: list[float]) -> list[Box]:
    """A box around each connected region (8-neighbour) of every foreground class, per window, speckle
    left out; ``center_frequencies``: the capture frequency of each window."""
    from scipy import ndimage

    out = []
    for w, fc in zip(windows, center_frequencies):
        rows, cols = w.class_map.shape
        least = max(1, int(np.ceil(MIN_REGION_FRACTION * rows * cols)))
        for k, name in enumerate(classes):
            if name in BACKGROUND_CLASSES:
                continue
            regions, n = ndimage.label(w.class_map == k, structure=np.ones((3, 3), bool))
            sizes = np.bincount(regions.ravel(), minlength=n + 1)
            for r, (row_slice, col_slice) in enumerate(ndimage.find_objects(regions), start=1):
                if sizes[r] < least:
                    continue
                first = w.start + (col_slice.start * w.count) // cols
                end = w.start + -(-col_slice.stop * w.count // cols)  # ceil: the box holds the whole column
                out.append(Box(name, int(first), int(end), float(fc + (row_slice.start / rows - 0.5) * sample_rate),
                               float(fc + (row_slice.stop / rows - 0.5) * sample_rate), int(sizes[r]), (rows, cols)))
    return out


def segment_annotations(windows: list[Window], classes: list[str], sample_rate: float,
                        center_frequencies: list[float], generator: str, join_gap_s: float = JOIN_GAP_S) -> list[dict]:
    """Boxes around each connected region of every foreground class (``segment_regions``), those of a
    class on the same band at most ``join_gap_s`` seconds apart joined (0: a box per region)."""
    if not (join_gap_s >= 0 and np.isfinite(join_gap_s)):
        raise ValueError(f"the join gap is a duration of at least 0 s, got {join_gap_s}")
    boxes = segment_regions(windows, classes, sample_rate, center_frequencies)
    if join_gap_s > 0:
        boxes = join_boxes(boxes, join_gap_s * sample_rate)
    return [b.annotation(generator, join_gap_s) for b in boxes]


def sigmf_meta_path(path: str | Path) -> Path:
    """The ``.sigmf-meta`` file that annotations go into, for a recording named by its meta or data
    file; an archive (``.sigmf``) is refused: it would have to be rewritten whole."""
    path = Path(path)
    if path.suffix == ".sigmf":
        raise ValueError(f"{path} is a SigMF archive; annotations are written into a .sigmf-meta file: "
                         f"unpack it (tar -xf) and give its .sigmf-meta")
    if path.suffix not in (".sigmf-meta", ".sigmf-data"):
        raise ValueError(f"{path} is not a SigMF recording: --annotate writes SigMF annotations, "
                         f"into the .sigmf-meta beside a recording's .sigmf-data")
    return path.with_suffix(".sigmf-meta")


def annotate_recording(path: str | Path, windows: list[Window], classes: list[str], task: str, model: str,
                       join_gap_s: float = JOIN_GAP_S) -> int:
    """Write ``windows``' predictions into the recording's ``.sigmf-meta`` (atomically, checked
    against the SigMF schema first), replacing radiofm's earlier annotations; returns how many.
    ``join_gap_s``: a segmenter's regions of a class on one band this close are one box."""
    from sigmf import sigmffile

    from radiofm.checkpoint import write_text_atomic

    meta_path = sigmf_meta_path(path)
    try:
        metadata = json.loads(meta_path.read_text())
        record = sigmffile.SigMFFile(metadata=metadata, skip_checksum=True)
    except Exception as e:  # sigmf raises its own error types for bad metadata
        raise ValueError(f"{meta_path} is not readable SigMF metadata ({type(e).__name__}: {e})") from None
    offset = int(metadata["global"].get("core:offset", 0))  # annotations count samples from it
    windows = [Window(w.start + offset, w.count, w.probs, w.class_map) for w in windows]
    generator = generator_name(model)
    rate = metadata["global"].get("core:sample_rate")
    centers = [float(_capture(record, w.start).get("core:frequency", 0.0)) for w in windows]
    if task == "segment":
        if not rate:
            raise ValueError(f"{meta_path} records no core:sample_rate: a segmenter's regions need it for "
                             f"their frequency edges")
        ours = segment_annotations(windows, classes, float(rate), centers, generator, join_gap_s)
    else:
        ours = classifier_annotations(windows, classes, float(rate) if rate else None, centers, generator)
    kept = [a for a in metadata.get("annotations", []) if not is_ours(a)]
    metadata["annotations"] = sorted(kept + ours, key=lambda a: a["core:sample_start"])
    record = sigmffile.SigMFFile(metadata=metadata, skip_checksum=True)
    try:
        record.validate()
    except Exception as e:  # a schema error here is ours, but say which file it was for
        raise ValueError(f"the annotations for {meta_path} do not validate ({type(e).__name__}: {e})") from None
    write_text_atomic(meta_path, record.dumps() + "\n")
    return len(ours)


def _capture(record, sample: int) -> dict:
    """The capture segment holding ``sample`` (an empty one where the recording lists none)."""
    return record.get_capture_info(sample) if record.get_captures() else {}
