"""What a finished train run leaves for people and for the bench: the loss curve, the card (``README.md``)
and the roster entry (``roster_entry.yaml``) that ``roster.models`` takes as it is."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from gen4gen.artefacts import TRAINER_NAMES, Manifest

USE = {
    "custom_diffusion": ("`pipe.unet.load_attn_procs(run, weight_name=\"pytorch_custom_diffusion_weights.bin\", "
                         "_pipeline=pipe)` (diffusers' own call; its safetensors twin cannot be installed this way)"),
    "lora": "`pipe.load_lora_weights(run, weight_name=\"pytorch_lora_weights.safetensors\")`",
}


def loss_png(losses: list[float]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y = np.asarray(losses, dtype=float)
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    ax.plot(np.arange(1, len(y) + 1), y, lw=0.8, alpha=0.4, label="per step")
    k = max(1, len(y) // 20)
    if len(y) >= k > 1:
        ax.plot(np.arange(k, len(y) + 1), np.convolve(y, np.ones(k) / k, mode="valid"), lw=1.6,
                label=f"mean of {k}")
    ax.set_xlabel("step")
    ax.set_ylabel("diffusion loss")
    ax.legend(loc="upper right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def roster_entry(name: str, man: Manifest, run_dir: Path, resolution: int) -> dict:
    """A bench roster entry: the base loaded as usual, then this run installed by ``personalize.load``."""
    return {"name": name, "source": man.base, "pipeline": man.base_kind, "train_run": str(Path(run_dir).resolve()),
            "resolution": resolution, "steps": 50, "guidance": 5.0 if man.base_kind == "sdxl" else 7.5,
            "base_model": man.base, "tags": ["personalized", man.trainer]}


def card(name: str, man: Manifest, settings: dict, info: dict, files: list[str]) -> str:
    tokens = ", ".join(f"`{t.token}` {t.noun}" for t in man.tokens)
    lines = [f"# {name}", "",
             f"{TRAINER_NAMES[man.trainer]} fine-tuning of `{man.base}` ({man.base_kind}) made by "
             f"gen4gen `stage=train`.", "",
             "| | |", "|---|---|",
             f"| base | `{man.base}` ({man.base_kind}) |",
             f"| data | `{settings['data']}` from `{info['dataset']}`: {info['examples']} examples"
             f"{' + %d class images (prior preservation)' % info['priors'] if info['priors'] else ''} |",
             f"| captions | `{settings['caption']}` (e.g. \"{info['example_caption']}\") |",
             f"| tokens | {tokens} |",
             f"| steps | {settings['max_steps']} x batch {settings['batch_size']} x accumulation {settings['grad_accum']}, "
             f"lr {settings['lr']}, resolution {settings['resolution']}, {info['precision']} on {info['device']} |",
             f"| loss | {info['loss_first']:.4f} (first 10 steps) -> {info['loss_last']:.4f} (last 10) |",
             f"| time | {info['seconds']:.1f} s ({info['steps_per_s']:.3f} steps/s) |",
             f"| peak memory | {info['peak_memory_gb']:.2f} GB ({info['memory_kind']}) |",
             f"| left out | {info['left_out']} example(s), see failures.jsonl |", "",
             "## Files", ""]
    lines += [f"- `{f}`" for f in files]
    lines += [""] + use(name, man, info["run_dir"], info["example_caption"], files)
    return "\n".join(lines) + "\n"


def use(name: str, man: Manifest, run_dir: str, example: str, files: list[str]) -> list[str]:
    """A snippet that runs as pasted (imports, the run's absolute folder), diffusers' own calls, and the web UIs."""
    from gen4gen.train.webui import DIR, embedding_stem

    pipeline = "StableDiffusionXLPipeline" if man.base_kind == "sdxl" else "StableDiffusionPipeline"
    lines = ["## Use", "", "```python", f"from diffusers import {pipeline}", "", "import gen4gen.personalize", "",
             f"run_dir = {json.dumps(run_dir)}", f"pipe = {pipeline}.from_pretrained({json.dumps(man.base)})",
             "gen4gen.personalize.load(pipe, run_dir)  # tokens into the text encoder(s), weights into the UNet",
             f"image = pipe({json.dumps(example)}).images[0]", "```", "",
             f"With diffusers alone: {USE[man.trainer]}, then per token "
             + ("`pipe.load_textual_inversion(run / \"<newK>.safetensors\")`." if man.base_kind == "sd" else
                "`state = safetensors.torch.load_file(run / \"<newK>.safetensors\")` and "
                "`pipe.load_textual_inversion(state[\"clip_l\"], token=\"<newK>\", text_encoder=pipe.text_encoder, "
                "tokenizer=pipe.tokenizer)` (same with `clip_g`, `text_encoder_2`, `tokenizer_2`)."),
             "", "In the bench: add `roster_entry.yaml` to a roster's `models`."]
    if f"{DIR}/{name}.safetensors" in files:
        lines += ["", "### AUTOMATIC1111 / Forge / ComfyUI", "",
                  f"- `{DIR}/{name}.safetensors`: the LoRA with kohya's keys; copy it to `models/Lora/` and add "
                  f"`<lora:{name}:1>` to the prompt (ComfyUI: a LoraLoader node). diffusers reads it too: "
                  f"`pipe.load_lora_weights(run_dir + \"/{DIR}\", weight_name=\"{name}.safetensors\")`.",
                  "- the tokens as A1111 embeddings: copy them to `embeddings/` and write the word on the right where "
                  "the captions say the token (ComfyUI: `embedding:<word>`):", "",
                  "| token | concept | embedding file | prompt word |", "|---|---|---|---|"]
        lines += [f"| `{t.token}` | {t.concept} | `{DIR}/embeddings/{embedding_stem(name, t.token)}.safetensors` | "
                  f"`{embedding_stem(name, t.token)}` |" for t in man.tokens]
    return lines
