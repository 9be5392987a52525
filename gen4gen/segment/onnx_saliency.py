"""Salient-object models exported to ONNX (U²-Net-p, IS-Net/DIS), run with onnxruntime.

One session per model, shared by the worker threads (``InferenceSession.run`` is thread-safe); the
photo is resized to the model's input once, and the soft map comes back at the photo's size.

Coarse to fine (``zoom``): a model that sees every photo at 320 px gives a subject covering 5 % of the
frame about 70 px of its input. When the first pass's box covers less than ``zoom`` of the photo, the
photo is cropped around that box (plus ``zoom_margin`` of the box's long side on every side, for context,
and at least the model's input size: zooming past the photo's own pixels only blurs), the crop is segmented at the model's full resolution and placed back; outside the crop the first pass,
whose mask lies wholly inside it, is kept. A box at least ``zoom`` of the photo runs the single pass only.
s1 passes ``focus`` (see ``gen4gen.segment.objects``): when a second object was dropped, the crop is taken
around the chosen subject only; otherwise around the whole first pass, or, when stray specks far from the
subject make that crop too large to gain anything, around the subject without them. A crop that
magnifies less than ``zoom_min_gain`` (linear) would redraw the same mask at about the same detail: skipped.
"""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from gen4gen.errors import UserError
from gen4gen.segment.refine import guided_refine


class OnnxSaliency:
    """``model(rgb) -> HxW float32 in [0, 1]`` for any single-input saliency ONNX model whose first
    output is the saliency map (``[1, 1, h, w]``)."""

    name = "onnx"

    def __init__(self, model_path: str | Path, size: int = 320, mean=(0.485, 0.456, 0.406),
                 std=(0.229, 0.224, 0.225), scale: str = "max", flip_tta: bool = False, refine: str = "none",
                 pad: float = 0.0, threads: int = 0, zoom: float = 0.5, zoom_margin: float = 0.25,
                 zoom_min_gain: float = 1.05):
        import onnxruntime as ort

        path = Path(model_path).expanduser()
        if not path.is_file():
            raise UserError(f"{self.name}: model file {path} not found")
        opts = ort.SessionOptions()
        # 0 = all cores; the stage passes cores // workers so that threads x workers fits the machine
        opts.intra_op_num_threads = int(threads) if threads else 0
        opts.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=_providers(ort))
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise UserError(f"{self.name}: cannot load ONNX model {path}: {e}") from None
        inp = self.session.get_inputs()[0]
        self.input = inp.name
        static = [d for d in inp.shape[2:] if isinstance(d, int)]
        # a graph exported with a fixed input size can only take that size
        self.size = (int(inp.shape[2]), int(inp.shape[3])) if len(static) == 2 else (int(size), int(size))
        self.mean = np.asarray(mean, np.float32)
        self.std = np.asarray(std, np.float32)
        if scale not in ("max", "255"):
            raise UserError(f"{self.name}: scale must be 'max' (divide by the image maximum, U²-Net) or '255'")
        self.scale = scale
        self.flip_tta = bool(flip_tta)
        if refine not in ("none", "guided"):
            raise UserError(f"{self.name}: refine must be 'none' or 'guided', not {refine!r}")
        self.refine = refine
        if not 0.0 <= pad <= 0.5:
            raise UserError(f"{self.name}: pad must be a fraction of each side in [0, 0.5], got {pad}")
        self.pad = float(pad)
        if not 0.0 <= zoom <= 1.0 or zoom_margin < 0.0:
            raise UserError(f"{self.name}: zoom is a box-area fraction in [0, 1] (0: off) and zoom_margin >= 0, "
                            f"got zoom={zoom}, zoom_margin={zoom_margin}")
        self.zoom = float(zoom)
        self.zoom_margin = float(zoom_margin)
        if zoom_min_gain < 1.0:
            raise UserError(f"{self.name}: zoom_min_gain is a linear magnification >= 1, got {zoom_min_gain}")
        self.zoom_min_gain = float(zoom_min_gain)

    def preprocess(self, rgb: np.ndarray) -> np.ndarray:
        h, w = self.size
        x = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32)
        x /= max(float(x.max()), 1e-6) if self.scale == "max" else 255.0
        x = (x - self.mean) / self.std
        return np.ascontiguousarray(x.transpose(2, 0, 1)[None])

    def saliency(self, rgb: np.ndarray) -> np.ndarray:
        """The model's map at its own resolution, min-max normalised to [0, 1]."""
        x = self.preprocess(rgb)
        sal = self._run(x)
        if self.flip_tta:  # exported graphs often have a fixed batch of 1: two runs
            sal = (sal + self._run(np.ascontiguousarray(x[..., ::-1]))[:, ::-1]) / 2
        lo, hi = float(sal.min()), float(sal.max())
        return ((sal - lo) / max(hi - lo, 1e-6)).astype(np.float32)

    def _run(self, x: np.ndarray) -> np.ndarray:
        out = self.session.run(None, {self.input: x})[0]
        return np.asarray(out, np.float32).reshape(out.shape[-2:])

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        return self.segment(rgb)[0]

    def coarse(self, rgb: np.ndarray) -> np.ndarray:
        """The first pass: the model's map at its own resolution (what s1 chooses the subject on)."""
        return self._padded_saliency(rgb) if self.pad else self.saliency(rgb)

    def segment(self, rgb: np.ndarray, coarse: np.ndarray | None = None,
                focus: tuple = (None,)) -> tuple[np.ndarray, dict]:
        """The soft mask and ``{"zoom_xyxy": the zoom pass's crop (photo px) or None}``. ``coarse``: this
        photo's first pass when already computed; ``focus``: maps (any size) of what to zoom on, tried in
        order until one gives a crop worth taking; None stands for every pixel of the first pass at 0.5 or more."""
        sal = self.coarse(rgb) if coarse is None else coarse
        mask = self._to_photo(rgb, sal)
        crop = None
        for f in focus:
            crop = crop or self._zoom_crop(sal if f is None else f, rgb.shape[1], rgb.shape[0])
        if crop is not None:
            x0, y0, x1, y1 = crop
            part = rgb[y0:y1, x0:x1]
            mask[y0:y1, x0:x1] = self._to_photo(part, self.saliency(part))
        return mask, {"zoom_xyxy": crop}

    def _to_photo(self, rgb: np.ndarray, sal: np.ndarray) -> np.ndarray:
        if self.refine == "guided":
            return guided_refine(rgb, sal)
        h, w = rgb.shape[:2]
        return np.clip(cv2.resize(sal, (w, h), interpolation=cv2.INTER_LINEAR), 0.0, 1.0)

    def _zoom_crop(self, sal: np.ndarray, w: int, h: int) -> list[int] | None:
        """The crop (photo px) for the zoom pass, or None when the first pass's box is large (or empty)."""
        ys, xs = np.nonzero(sal >= 0.5)
        if not self.zoom or not len(xs):
            return None
        sh, sw = sal.shape
        bx0, bx1, by0, by1 = xs.min() / sw * w, (xs.max() + 1) / sw * w, ys.min() / sh * h, (ys.max() + 1) / sh * h
        if (bx1 - bx0) * (by1 - by0) >= self.zoom * w * h:
            return None
        m = self.zoom_margin * max(bx1 - bx0, by1 - by0)
        # a crop with fewer pixels than the model's input adds no detail, only blur: grow it to that size
        x0, x1 = _grow(bx0 - m, bx1 + m, self.size[1], w)
        y0, y1 = _grow(by0 - m, by1 + m, self.size[0], h)
        if (x1 - x0) * (y1 - y0) * self.zoom_min_gain ** 2 >= w * h:  # about the same detail again
            return None
        return [x0, y0, x1, y1]


    def _padded_saliency(self, rgb: np.ndarray) -> np.ndarray:
        """Saliency of the photo with its border pixels repeated around it, cropped back to the photo.
        A subject that fills the frame (a close-up of a face) can lose to its own details otherwise."""
        h, w = rgb.shape[:2]
        ph, pw = round(h * self.pad), round(w * self.pad)
        big = cv2.copyMakeBorder(rgb, ph, ph, pw, pw, cv2.BORDER_REPLICATE)
        sal = cv2.resize(self.saliency(big), (w + 2 * pw, h + 2 * ph), interpolation=cv2.INTER_LINEAR)
        return sal[ph:ph + h, pw:pw + w]


def _grow(lo: float, hi: float, least: int, limit: int) -> tuple[int, int]:
    """The span ``[lo, hi)`` widened about its centre to at least ``least`` px, kept inside ``[0, limit)``."""
    lo, hi = max(0, int(lo)), min(limit, int(np.ceil(hi)))
    if hi - lo < least:
        lo = max(0, min(limit - least, (lo + hi - least) // 2))
        hi = min(limit, lo + least)
    return lo, hi


def _providers(ort) -> list[str]:
    wanted = os.environ.get("GEN4GEN_ORT_PROVIDERS")
    if wanted:
        return wanted.split(",")
    have = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in have]
