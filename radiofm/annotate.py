"""Predictions written back into a SigMF recording as annotations, for any SigMF viewer to show.

A classifier gives one annotation per window it predicted: the window's samples and band (the
capture's, where the recording gives its sample rate), the top class as ``core:label`` and the
leading probabilities in ``core:comment``. A segmenter gives one per connected
region of each foreground class in a window's class map, as a time-frequency box: its samples, and
``core:freq_lower_edge`` / ``core:freq_upper_edge`` from the map's rows (row 0 is -fs/2 about the
capture's ``core:frequency``; 0 Hz where the recording gives none). Every annotation names radiofm
and the model in ``core:generator``; writing again replaces those and keeps every other annotation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

GENERATOR = "radiofm"
# A segmenter's regions smaller than this fraction of the window's class map are speckle, not
# emitters: at 256 x 256, under 66 pixels.
MIN_REGION_FRACTION = 0.001
BACKGROUND_CLASSES = ("noise",)  # a segmenter's classes that are not annotated
TOP_CLASSES = 3  # probabilities a classifier annotation's comment gives


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


def segment_annotations(windows: list[Window], classes: list[str], sample_rate: float,
                        center_frequencies: list[float], generator: str) -> list[dict]:
    """Boxes around each connected region (8-neighbour) of every foreground class, per window;
    ``center_frequencies``: the capture frequency of each window."""
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
                out.append({
                    "core:sample_start": int(first),
                    "core:sample_count": int(end - first),
                    "core:freq_lower_edge": float(fc + (row_slice.start / rows - 0.5) * sample_rate),
                    "core:freq_upper_edge": float(fc + (row_slice.stop / rows - 0.5) * sample_rate),
                    "core:label": name,
                    "core:comment": f"{int(sizes[r])} pixels of the {rows}x{cols} class map",
                    "core:generator": generator,
                })
    return out


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


def annotate_recording(path: str | Path, windows: list[Window], classes: list[str], task: str, model: str) -> int:
    """Write ``windows``' predictions into the recording's ``.sigmf-meta`` (atomically, checked
    against the SigMF schema first), replacing radiofm's earlier annotations; returns how many."""
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
        ours = segment_annotations(windows, classes, float(rate), centers, generator)
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
