"""OpenCV GrabCut: colour-model graph cut, no weights.

Seeded from a centre box (the subject of a personal photo is usually central) or from another
segmenter's soft mask. GrabCut is slow at full size (~17 s for 1024² here), so it runs with the
long side at most ``max_side`` px; the hard result is smoothed and upsampled to a soft mask.
"""
from __future__ import annotations

import cv2
import numpy as np

from gen4gen.errors import ItemFailed, UserError


class GrabCut:
    name = "grabcut"

    def __init__(self, seed=None, margin: float = 0.1, max_side: int = 512, iterations: int = 5,
                 band: float = 0.03, softness: float = 1.0):
        """``seed``: None for a centre box inset by ``margin`` of each side, or a segmenter (any
        ``rgb -> soft mask`` callable, e.g. a ``segmenter`` node Hydra instantiated) whose mask seeds
        the colour models; ``band`` is the width (fraction of the long side) of the uncertain zone
        around that mask's edge that GrabCut may relabel."""
        if not 0.0 <= margin < 0.5:
            raise UserError(f"grabcut: margin must be in [0, 0.5), got {margin}")
        self.seed = seed
        self.margin = float(margin)
        self.max_side = int(max_side)
        self.iterations = int(iterations)
        self.band = float(band)
        self.softness = float(softness)
        if seed is not None:
            self.name = f"grabcut+{getattr(seed, 'name', type(seed).__name__)}"

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        return self.segment(rgb)[0]

    def segment(self, rgb: np.ndarray) -> tuple[np.ndarray, dict]:
        """The soft mask and ``{"frame_xyxy": the centre box (photo px) or None}``: a centre-box GrabCut can
        mark nothing outside its box, so its masks are judged against the box (cut off by it, filling it)."""
        h, w = rgb.shape[:2]
        s = min(1.0, self.max_side / max(h, w))
        ws = (max(1, round(w * s)), max(1, round(h * s)))
        small = cv2.resize(rgb, ws, interpolation=cv2.INTER_AREA)
        bgr = np.ascontiguousarray(small[..., ::-1])
        labels = self._seed_labels(rgb, ws)
        if (labels == cv2.GC_BGD).all() or not np.isin(labels, (cv2.GC_BGD, cv2.GC_PR_BGD)).any():
            raise ItemFailed("grabcut: the seed leaves no foreground or no background to learn colours from")
        bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        cv2.grabCut(bgr, labels, None, bgd, fgd, self.iterations, cv2.GC_INIT_WITH_MASK)
        hard = np.isin(labels, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.float32)
        # soft edge: a small blur at the working size becomes a few pixels of feathering when upsampled
        soft = cv2.GaussianBlur(hard, (0, 0), self.softness) if self.softness > 0 else hard
        mask = np.clip(cv2.resize(soft, (w, h), interpolation=cv2.INTER_LINEAR), 0.0, 1.0)
        if self.seed is not None:
            return mask, {"frame_xyxy": None}
        mx, my = max(1, round(self.margin * ws[0])) / s, max(1, round(self.margin * ws[1])) / s
        return mask, {"frame_xyxy": [round(mx), round(my), w - round(mx), h - round(my)]}

    def _seed_labels(self, rgb: np.ndarray, ws: tuple[int, int]) -> np.ndarray:
        w, h = ws
        if self.seed is None:
            labels = np.full((h, w), cv2.GC_BGD, np.uint8)
            mx, my = max(1, round(self.margin * w)), max(1, round(self.margin * h))
            labels[my:h - my, mx:w - mx] = cv2.GC_PR_FGD
            return labels
        prior = cv2.resize(np.asarray(self.seed(rgb), np.float32), ws, interpolation=cv2.INTER_LINEAR)
        hard = (prior >= 0.5).astype(np.uint8)
        k = max(3, int(self.band * max(ws)) | 1)
        ker = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
        labels = np.where(hard > 0, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
        labels[cv2.erode(hard, ker) > 0] = cv2.GC_FGD  # deep inside the prior: keep
        labels[cv2.dilate(hard, ker) == 0] = cv2.GC_BGD  # far outside: keep
        return labels
