"""Segment Anything (``segment-anything``) prompted by a box around the saliency mask.

segment-anything imports torchvision at import time; it is imported here, inside ``SAM.__init__``,
so nothing else in gen4gen needs torchvision. The photo is resized here with OpenCV and handed to
``SamPredictor.set_torch_image``, the same tensor ``set_image`` would build.
"""
from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np

from gen4gen.device import resolve_device
from gen4gen.errors import UserError


class SAM:
    name = "sam"

    def __init__(self, checkpoint: str | None = None, model_type: str = "vit_b", prompt=None,
                 device: str = "auto", box_margin: float = 0.02, point_refine: bool = True,
                 max_side: int = 1024):
        """``checkpoint``: a SAM ``.pth`` for ``model_type`` (vit_h | vit_l | vit_b), loaded by
        ``sam_model_registry[model_type](checkpoint=...)``; ``prompt``: the segmenter whose mask gives
        the box (and the refinement point); None segments the central 80 % box."""
        if not checkpoint:
            raise UserError("segmenter=sam needs segmenter.checkpoint=/path/to/sam_vit_b_01ec64.pth "
                            "(from the segment-anything model zoo) and the matching segmenter.model_type")
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise UserError(f"sam: checkpoint {path} not found")
        try:
            import torch
            from segment_anything import SamPredictor, sam_model_registry
        except ModuleNotFoundError as e:
            from importlib.metadata import version

            # a bare `pip install torchvision` replaces torch with whatever build torchvision wants
            raise UserError(f"segmenter=sam needs segment-anything and torchvision ({e}): `make sam`, or "
                            f"pip install 'gen4gen[sam]' -c <(echo torch=={version('torch')}) to keep your torch; "
                            "or pick another segmenter") from None
        self.device = resolve_device(device, "segmenter.device")  # before the (slow) load
        if model_type not in sam_model_registry:
            raise UserError(f"sam: unknown model_type {model_type!r}; one of {', '.join(sam_model_registry)}")
        try:
            model = sam_model_registry[model_type](checkpoint=str(path))
        except (RuntimeError, OSError, KeyError) as e:  # wrong size / not a state dict
            raise UserError(f"sam: cannot load {path.name} as a {model_type} checkpoint: {str(e)[:300]}") from None
        self.torch = torch
        self.predictor = SamPredictor(model.to(self.device).eval())
        self.prompt = prompt
        self.box_margin = float(box_margin)
        self.point_refine = bool(point_refine)
        self.max_side = int(max_side)
        self._lock = threading.Lock()  # the predictor holds one image's embedding at a time

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        h, w = rgb.shape[:2]
        s = min(1.0, self.max_side / max(h, w))
        ws = (max(1, round(w * s)), max(1, round(h * s)))
        small = cv2.resize(rgb, ws, interpolation=cv2.INTER_AREA) if s < 1 else rgb
        prior = self._prior(small)
        box = _box(prior, ws, self.box_margin)
        with self._lock, self.torch.inference_mode():
            self._set_image(small)
            logits, scores, low_res = self.predictor.predict(box=box, multimask_output=True, return_logits=True)
            best = int(np.argmax(scores))
            mask, score = logits[best], float(scores[best])
            if self.point_refine and prior is not None:
                point = _inner_point(prior >= 0.5, mask > 0)
                if point is not None:
                    l2, s2, _ = self.predictor.predict(point_coords=point[None], point_labels=np.array([1]),
                                                       box=box, mask_input=low_res[best][None],
                                                       multimask_output=False, return_logits=True)
                    if float(s2[0]) >= score:  # keep the refinement only when SAM rates it at least as good
                        mask = l2[0]
        soft = 1.0 / (1.0 + np.exp(-np.clip(mask, -30, 30)))
        return np.clip(cv2.resize(soft.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR), 0.0, 1.0)

    def _prior(self, rgb: np.ndarray) -> np.ndarray | None:
        if self.prompt is None:
            return None
        return np.asarray(self.prompt(rgb), np.float32)

    def _set_image(self, rgb: np.ndarray) -> None:
        target = self.predictor.model.image_encoder.img_size
        h, w = rgb.shape[:2]
        s = target / max(h, w)
        resized = cv2.resize(rgb, (int(w * s + 0.5), int(h * s + 0.5)), interpolation=cv2.INTER_LINEAR)
        x = self.torch.as_tensor(resized, device=self.predictor.device).permute(2, 0, 1).contiguous()[None]
        self.predictor.set_torch_image(x, (h, w))


def _box(prior: np.ndarray | None, size: tuple[int, int], margin: float) -> np.ndarray:
    """xyxy box around the prior mask (the central 80 % when there is none), widened by ``margin``."""
    w, h = size
    if prior is not None and (prior >= 0.5).any():
        ys, xs = np.nonzero(prior >= 0.5)
        x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    else:
        x0, y0, x1, y1 = 0.1 * w, 0.1 * h, 0.9 * w, 0.9 * h
    mx, my = margin * w, margin * h
    return np.array([max(0, x0 - mx), max(0, y0 - my), min(w, x1 + mx), min(h, y1 + my)], np.float32)


def _inner_point(*masks: np.ndarray) -> np.ndarray | None:
    """The pixel deepest inside every mask (distance-transform peak): a safe positive click."""
    inside = np.logical_and.reduce(masks).astype(np.uint8)
    if not inside.any():
        return None
    dist = cv2.distanceTransform(inside, cv2.DIST_L2, 5)
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return np.array([x, y], np.float32)
