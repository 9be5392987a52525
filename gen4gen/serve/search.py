"""Model search for the app: the configured index opened once (built when missing or stale, as
``stage=search`` does), queries through the same ``Searcher``, and each hit's sample images."""
from __future__ import annotations

import threading
from pathlib import Path

from omegaconf import DictConfig

from gen4gen.errors import UserError
from gen4gen.search.scores import ranked
from gen4gen.search.build import discover, samples_root
from gen4gen.search.index import is_index
from gen4gen.search.searcher import PRIMARY, Searcher
from gen4gen.settings import SearchSettings, section

SAMPLES_SHOWN = 4


class ModelSearch:
    def __init__(self, cfg: DictConfig, root: Path, device: str = "cpu"):
        from gen4gen.search.index import ModelIndex
        from gen4gen.stages.search import open_index

        self.root = Path(root)
        path, _ = open_index(cfg, self.root, device)
        self.index = ModelIndex(path)
        self.searcher = Searcher(self.index, section(cfg, "search", SearchSettings), device, cfg.paths.cache_dir,
                                 cfg.io)
        # model -> its sample images (an index given directly has no samples folder: results show none)
        self.samples: dict[str, list[Path]] = {} if is_index(self.root) else discover(samples_root(self.root))
        self._lock = threading.Lock()  # the encoders are not shared between threads

    def query(self, kind: str, value: str, k: int) -> dict:
        """``kind``: text | image (a file path) | model. Hits ranked by the kind's primary method."""
        with self._lock:
            before = len(self.searcher.notes)
            scores = (self.searcher.text(value) if kind == "text" else self.searcher.model(value) if kind == "model"
                      else self.searcher.image(value))
            notes = sorted(set(self.searcher.notes[before:]))
        method = PRIMARY[kind]
        hits = ranked(self.index, scores[method], k)
        return {"kind": kind, "method": method, "n_models": len(self.index), "notes": notes, "results": hits}

    def sample(self, model: str, k: int) -> Path:
        images = self.samples.get(model, [])
        if not 0 <= k < min(len(images), SAMPLES_SHOWN):
            raise UserError(f"no sample {k} of model {model!r}")
        return images[k]

    def n_samples(self, model: str) -> int:
        return min(len(self.samples.get(model, [])), SAMPLES_SHOWN)
