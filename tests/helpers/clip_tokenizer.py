"""A real CLIP tokenizer folder (vocab.json + merges.txt) built offline from the CLIP BPE merges in the
shared test data, laid out as openai/clip-vit-* ship it, for ``CLIPTokenizer.from_pretrained``."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

ALL_MERGES = 49152 - 256 - 2


def bytes_to_unicode() -> dict[int, str]:
    """CLIP's reversible byte -> printable character table (the BPE vocabulary is written in it)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def build_clip_tokenizer(bpe_gz: Path | None, out: Path, n_merges: int = ALL_MERGES) -> Path:
    """Write the tokenizer files from the first ``n_merges`` merges (a smaller vocabulary loads and embeds
    faster and tokenises the same way, in more pieces); a byte-level vocabulary when ``bpe_gz`` is absent."""
    merges = []
    if bpe_gz is not None and Path(bpe_gz).is_file():
        merges = gzip.open(bpe_gz).read().decode("utf-8").split("\n")[1:n_merges + 1]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}), "utf-8")
    (out / "merges.txt").write_text("#version: 0.2\n" + "".join(m + "\n" for m in merges), "utf-8")
    (out / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 77, "tokenizer_class": "CLIPTokenizer",
                                                           "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
                                                           "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}))
    return out
