"""U²-Net-p saliency (ONNX, onnxruntime): the embedded default segmenter."""
from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np

from gen4gen import weights

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


class U2NetP:
    name = "u2netp"

    def __init__(self, model_path: str | None = None, size: int = 320, flip_tta: bool = True,
                 threads: int = 0):
        import onnxruntime as ort

        path = Path(model_path) if model_path else weights.path("u2netp")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.size = size
        self.flip_tta = flip_tta
        self._lock = threading.Lock()

    def preprocess(self, rgb: np.ndarray) -> np.ndarray:
        x = cv2.resize(rgb, (self.size, self.size), interpolation=cv2.INTER_AREA).astype(np.float32)
        x = x / max(float(x.max()), 1e-6)
        x = (x - MEAN) / STD
        return x.transpose(2, 0, 1)[None]

    def saliency(self, rgb: np.ndarray) -> np.ndarray:
        """Raw saliency at the model's resolution, min-max normalised."""
        x = self.preprocess(rgb)
        sal = self._run(x)
        if self.flip_tta:  # the exported graph has a fixed batch of 1
            sal = (sal + self._run(x[..., ::-1])[:, ::-1]) / 2
        lo, hi = float(sal.min()), float(sal.max())
        return ((sal - lo) / max(hi - lo, 1e-6)).astype(np.float32)

    def _run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input: np.ascontiguousarray(x)})[0][0, 0]

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        sal = self.saliency(rgb)
        h, w = rgb.shape[:2]
        return np.clip(cv2.resize(sal, (w, h), interpolation=cv2.INTER_LINEAR), 0, 1)
