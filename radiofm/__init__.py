"""radiofm: radio foundation models (ViT + Masked Spectrogram Modeling) for RAN and edge deployment.

``import radiofm`` stays light: the SDK classes load on first use, and torch, onnxruntime and
tensorrt only when an engine needs them.
"""

__version__ = "0.1.0"

_SDK = ("Classifier", "Segmenter", "Encoder", "Prediction")

__all__ = ["__version__", *_SDK]


def __getattr__(name):
    if name in _SDK:
        from radiofm import sdk

        return getattr(sdk, name)
    raise AttributeError(f"module 'radiofm' has no attribute {name!r}")
