"""U²-Net-p saliency (ONNX, onnxruntime): the embedded default segmenter."""
from __future__ import annotations

from gen4gen import weights
from gen4gen.segment.onnx_saliency import OnnxSaliency


class U2NetP(OnnxSaliency):
    """The 4.6 MB U²-Net-p at 320x320, weights pinned in ``gen4gen.weights`` (or ``model_path``)."""

    name = "u2netp"

    def __init__(self, model_path: str | None = None, size: int = 320, flip_tta: bool = False,
                 refine: str = "none", pad: float = 0.0, threads: int = 0, zoom: float = 0.5,
                 zoom_margin: float = 0.25, zoom_min_gain: float = 1.05):
        super().__init__(model_path or weights.path("u2netp"), size=size, scale="max",
                         flip_tta=flip_tta, refine=refine, pad=pad, threads=threads,
                         zoom=zoom, zoom_margin=zoom_margin, zoom_min_gain=zoom_min_gain)
