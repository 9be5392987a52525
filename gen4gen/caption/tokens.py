"""How many CLIP tokens a caption takes (a Stable Diffusion text encoder reads 77, start and end included).

With a CLIP tokenizer on disk (a local folder, or a hub id already in the local cache) the count is
exact; without one a conservative rule counts instead: every run of letters costs one token per
two letters (rounded up), every digit and every punctuation mark one. Real BPE gives common words one
token and splits rare ones into pieces of two to five letters, so the rule over-counts (tests compare
it with the real tokenizer); captions are short, so the margin costs nothing.
A modifier token (``<new1>``) counts as one token: the trainer adds it to the vocabulary.
"""
from __future__ import annotations

import logging
import math
import re
from pathlib import Path

log = logging.getLogger(__name__)
CLIP_MAX_TOKENS = 77
_MODIFIER = re.compile(r"<new\d+>")
_PIECES = re.compile(r"[a-z]+|[0-9]|[^\sa-z0-9]", re.I)  # CLIP's pre-tokenizer also splits digits one by one


class ClipTokenCounter:
    def __init__(self, tokenizer: str | None = None):
        self.source = "rule"
        self._tok = None
        if tokenizer and _on_disk(str(tokenizer)):
            try:
                from transformers import CLIPTokenizer

                tok = CLIPTokenizer.from_pretrained(str(tokenizer), local_files_only=True)
                if len(tok) < 1000:  # an empty shell (transformers builds one when files are missing)
                    raise ValueError(f"vocabulary of {len(tok)} tokens")
                tok.model_max_length = 1 << 30  # we count; the 77 limit is ours to apply
                self._tok, self.source = tok, str(tokenizer)
            except Exception as e:  # noqa: BLE001 - unusable: the rule is the documented fallback
                log.info("CLIP tokenizer %s unusable (%s); counting tokens by rule", tokenizer, e)

    def count(self, text: str) -> int:
        """Tokens including the start and end tokens."""
        text = _MODIFIER.sub("x", text)  # "x" is one token in CLIP's vocabulary and for the rule
        if self._tok is not None:
            return len(self._tok(text, truncation=False)["input_ids"])
        return 2 + sum(math.ceil(len(p) / 2) if p[0].isalpha() else 1 for p in _PIECES.findall(text))

    def fits(self, text: str, limit: int = CLIP_MAX_TOKENS) -> bool:
        return self.count(text) <= limit


def _on_disk(name: str) -> bool:
    """A tokenizer folder, or a hub id whose files are already in the local cache (never downloaded)."""
    path = Path(name)
    if path.is_dir():
        return (path / "vocab.json").is_file() or (path / "tokenizer.json").is_file()
    try:
        from huggingface_hub import try_to_load_from_cache

        return any(isinstance(try_to_load_from_cache(name, f), str) for f in ("vocab.json", "tokenizer.json"))
    except Exception:  # noqa: BLE001 - not a valid repo id
        return False
