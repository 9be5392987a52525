"""s1 segmentation benchmark: images/s and mean IoU of each backend on the shared real photos.

    python benchmarks/segment.py [--backends u2netp_single,u2netp,u2netp_flip,u2netp_guided,grabcut,grabcut_u2netp]
                                 [--isnet isnet.onnx] [--sam sam_vit_b.pth --sam-type vit_b] [--workers 2]

Sets (``GEN4GEN_SHARED_DATA``, default ../shared/data): ``segmentation/u2net`` (18 web photos) against the
masks of the reference U²-Net-p and U²-Net PyTorch models, ``segmentation/gen4gen`` (3 pet photos, one
3800 px) against the Gen4Gen authors' IS-Net masks, and the pasted set (``benchmarks/pasted_set.py``: real
cut-outs pasted at 5-60 % of the frame onto other real photos, exact masks), mean IoU per size band, overall,
the worst photo and how many fall below 0.85. IoU thresholds both masks at 0.5. Throughput counts
reading the photo and segmenting it (what s1 does per item, minus PNG writing) with ``--workers``
threads; ``cpu s/img`` is process CPU time per image, which does not depend on other load on the machine,
and ``img/s (2 free cores)`` = 2 / cpu s/img is the rate two otherwise idle cores would sustain.
First, how far the references themselves agree (U²-Net-p's masks vs U²-Net's, both from the authors' PyTorch
models): the pasted set's truth comes from such masks, so no backend is measured more finely than that.
``--plates``: each backend's pasted-set IoU per background photo (a plate that still holds an object, such as
dog_01's tree stump, is a photo with a second object: flagged, and kept by ``segmenter.keep=all``).
The ``stage`` rows time the whole s1 stage (PNG writing included) on the u2net set, zoom on (the default)
and off, the 18 photos as one concept (unrelated subjects compared with each other) and, zoom on, each photo
as its own concept (no subject choice to make, as for a user's one-subject folders).

``--stage-sets``: the whole stage (its cross-photo subject choice, zoom and clean-up included) on every set,
photos grouped into concepts as a user's folders would be: the pasted set's four cases of one subject are
one concept, each u2net photo is its own, the pets are ``cat`` and ``dog``, and every ``--pairs DIR`` (any
folder of image/mask pairs: ``DIR/images/<name>.*`` + ``DIR/masks/<name>.png``, or one sub-folder per concept
in both; mask 255 = subject, 0 = background, exactly 128 = not classified, as a trimap's band along the outline,
left out of the IoU) adds a set; ``--keep-outputs DIR`` keeps what the stage wrote for it (masks, cut-outs, metas). Then the quality flags against ``benchmarks/flag_labels.csv`` (photos labelled by eye as
one subject / two objects / close-up): precision and recall of ``multiple_objects`` for "two" and of
``cut_edges`` for "close-up".
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.pasted_set import BANDS, band_name, build
from gen4gen.device import usable_cores
from gen4gen.images import read_image

SHARED = Path(os.environ.get("GEN4GEN_SHARED_DATA", ROOT.parent / "shared" / "data")).resolve()
SETS = [("u2net", ("u2netp_ref", "u2net_ref")), ("gen4gen", ("isnet_ref",))]


def backends(args) -> dict:
    from gen4gen.segment.grabcut import GrabCut
    from gen4gen.segment.u2netp import U2NetP

    threads = max(1, usable_cores() // args.workers)
    make = {
        "u2netp_single": lambda: U2NetP(threads=threads, zoom=0.0),
        "u2netp": lambda: U2NetP(threads=threads),
        "u2netp_flip": lambda: U2NetP(threads=threads, flip_tta=True),
        "u2netp_guided": lambda: U2NetP(threads=threads, refine="guided"),
        "grabcut": lambda: GrabCut(),
        "grabcut_u2netp": lambda: GrabCut(seed=U2NetP(threads=threads)),
    }
    chosen = {name: make[name] for name in args.backends.split(",") if name}
    if args.isnet:
        from gen4gen.segment.isnet import ISNet

        chosen["isnet"] = lambda: ISNet(model_path=args.isnet, threads=threads)
    if args.sam:
        from gen4gen.segment.sam import SAM

        chosen["sam"] = lambda: SAM(checkpoint=args.sam, model_type=args.sam_type, device=args.device,
                                    prompt=U2NetP(threads=threads))
    return chosen


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU at 0.5 of ``a`` against the truth ``b``, whose NaN pixels (not classified) count for neither."""
    a, b = (a >= 0.5) & ~np.isnan(b), b >= 0.5
    return float((a & b).sum() / max((a | b).sum(), 1))


def measure(seg, photos: list, workers: int) -> tuple[dict[str, np.ndarray], float, float]:
    """``photos``: paths (read as s1 does) or pasted-set cases (already in memory)."""
    def one(p):
        return (p.stem, seg(read_image(p))) if isinstance(p, Path) else (p.name, seg(p.rgb))
    one(photos[0])  # warm-up: first-call allocations are not throughput
    t0, c0 = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(workers) as pool:
        masks = dict(pool.map(one, photos))
    return masks, time.perf_counter() - t0, time.process_time() - c0


def _timed_stage(tmp: str, workers: int, *overrides: str):
    """The s1 stage over ``<tmp>/src`` into ``<tmp>/st`` with the default config plus ``overrides``, its weights
    loaded untimed; the summary, wall and CPU seconds."""
    from hydra import compose, initialize_config_dir

    from gen4gen.__main__ import conf_dir
    from gen4gen.runner import run_stage
    from gen4gen.stages.s1_segment import SegmentStage

    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"paths.source_dir={tmp}/src", f"paths.stages_dir={tmp}/st",
                                                       f"workers={workers}", *overrides])
    stage = SegmentStage(cfg)
    stage.prepare([])
    t0, c0 = time.perf_counter(), time.process_time()
    summary = run_stage(stage, cfg)
    return summary, time.perf_counter() - t0, time.process_time() - c0


def stage_row(workers: int, *overrides: str, alone: bool = False) -> dict:
    """The s1 stage with its default config (plus ``overrides``), end to end (read, segment, write
    cutout/mask/meta). The 18 photos form one concept (18 unrelated subjects compared with each other: every
    photo gets features and the colour cut runs), or with ``alone`` each is its own concept, as a user's
    folders of one subject each would be (no choice to make)."""
    with tempfile.TemporaryDirectory() as tmp:
        photos = sorted((SHARED / "segmentation" / "u2net" / "images").iterdir())
        for p in photos:
            concept = Path(tmp, "src", "web", p.stem if alone else "things")
            concept.mkdir(parents=True, exist_ok=True)
            (concept / p.name).symlink_to(p)
        summary, wall, cpu = _timed_stage(tmp, workers, *overrides)
    return {"n": summary.done, "wall": wall, "cpu": cpu}


def stage_masks(concepts: dict[str, list], workers: int, *overrides: str,
                keep: Path | None = None) -> tuple[dict, dict, float, float]:
    """Run the whole s1 stage on ``{concept: [(name, path or rgb), ...]}`` (photos in memory are written as
    PNGs first, untimed); the masks and metas by name, wall and CPU seconds. ``keep``: a folder the stage's
    output is copied to, to look at."""
    from PIL import Image

    from gen4gen.stages.s1_segment import DIR_NAME

    with tempfile.TemporaryDirectory() as tmp:
        where = {}
        for concept, photos in concepts.items():
            folder = Path(tmp, "src", "set", concept)
            folder.mkdir(parents=True)
            for name, photo in photos:
                if isinstance(photo, Path):
                    (folder / f"{name}{photo.suffix}").symlink_to(photo)
                else:
                    Image.fromarray(photo).save(folder / f"{name}.png", compress_level=1)
                where[name] = Path(tmp, "st", DIR_NAME, "set", concept, name)
        _, wall, cpu = _timed_stage(tmp, workers, *overrides)
        masks = {n: read_image(d / "mask.png", mode="L").astype(np.float32) / 255 for n, d in where.items()
                 if (d / "meta.json").is_file()}
        metas = {n: json.loads((d / "meta.json").read_text("utf-8")) for n, d in where.items() if n in masks}
        if keep is not None:
            shutil.copytree(Path(tmp, "st", DIR_NAME, "set"), keep, dirs_exist_ok=True)
    return masks, metas, wall, cpu


def pairs(folder: Path) -> dict[str, list[tuple[str, Path, Path]]]:
    """``{concept: [(name, image, mask), ...]}`` of a folder of image/mask pairs (see the module's doc)."""
    images, masks = folder / "images", folder / "masks"
    out: dict[str, list] = {}
    for p in sorted(images.rglob("*")):
        if not p.is_file() or p.name.startswith("."):
            continue
        rel = p.relative_to(images).with_suffix("")
        mask = next((m for m in (masks / rel.parent).glob(f"{rel.name}.*")), None)
        if mask is None:
            print(f"  {p}: no mask in {masks / rel.parent}, left out")
            continue
        concept = rel.parent.as_posix() if rel.parent.parts else rel.name
        out.setdefault(concept.replace("/", "_"), []).append((rel.as_posix().replace("/", "_"), p, mask))
    return out


def read_truth(mask: Path) -> np.ndarray:
    """A hand-made mask as float32: 1 subject (> 128), 0 background, NaN where it is exactly 128 (a trimap's
    "not classified" band along the outline, which ``iou`` leaves out)."""
    grey = read_image(mask, mode="L")
    return np.where(grey == 128, np.nan, grey > 128).astype(np.float32)


def set_rows(label: str, concepts: dict, refs: dict[str, dict], workers: int, *overrides: str,
             keep: Path | None = None) -> dict:
    """One stage run over a set, one row per reference (``{ref name: {photo: truth}}``); the metas."""
    masks, metas, wall, cpu = stage_masks(concepts, workers, *overrides, keep=keep)
    for ref, truths in refs.items():
        scores = {n: iou(masks[n], t) for n, t in truths.items() if n in masks}
        v = np.array(list(scores.values()))
        worst = min(scores, key=scores.get)
        print(f"| {label}{f' vs {ref}' if ref else ''} | {len(v)} | {v.mean():.4f} | {v.min():.3f} ({worst}) | "
              f"{(v < 0.85).sum()}/{len(v)} | {len(v) / wall:.2f} | {cpu / len(v):.3f} | {2 * len(v) / cpu:.2f} |",
              flush=True)
    return metas


def stage_sets(args, pasted: list) -> None:
    """The whole stage's IoU and speed per set, then its flags against the labelled photos."""
    over = args.stage_overrides.split()
    print(f"\nwhole stage, {' '.join(over) or 'defaults'}, {args.workers} workers")
    print("| set | photos | mean IoU | worst | < 0.85 | img/s (wall) | cpu s/img | img/s (2 free cores) |")
    print("|---|---|---|---|---|---|---|---|")
    concepts = {}
    for c in pasted:
        concepts.setdefault(c.subject, []).append((c.name, c.rgb))
    set_rows("pasted (21 concepts of 4)", concepts, {"": {c.name: c.truth.astype(np.float32) for c in pasted}},
             args.workers, *over)
    metas = {}
    for s, refs in SETS:
        root = SHARED / "segmentation" / s
        photos = sorted((root / "images").iterdir())
        group = (lambda p: p.stem) if s == "u2net" else (lambda p: p.stem.split("_")[0])
        concepts = {}
        for p in photos:
            concepts.setdefault(group(p), []).append((p.stem, p))
        truths = {r: {p.stem: read_image(root / r / f"{p.stem}.png", mode="L").astype(np.float32) / 255
                      for p in photos} for r in refs}
        m = set_rows(s, concepts, truths, args.workers, *over)
        metas.update({f"segmentation/{s}/images/{p.name}": m[p.stem] for p in photos if p.stem in m})
    for folder in args.pairs:
        found, truths = pairs(Path(folder)), {}
        for items in found.values():
            for n, im, m in items:
                try:
                    truths[n] = read_truth(m)
                except Exception as e:  # noqa: BLE001 - one bad mask is one line, the set goes on
                    print(f"  {m}: unreadable mask ({e}), left out")
        found = {c: [it for it in items if it[0] in truths] for c, items in found.items()}
        concepts = {c: [(n, im) for n, im, _ in items] for c, items in found.items() if items}
        keep = Path(args.keep_outputs, Path(folder).name) if args.keep_outputs else None
        m = set_rows(f"{Path(folder).name} (hand-made masks)", concepts, {"": truths}, args.workers, *over, keep=keep)
        for items in found.values():
            for n, im, _ in items:
                if n in m:
                    metas[f"handmasks/{Path(folder).name}/{im.relative_to(Path(folder)).as_posix()}"] = m[n]
    flag_scores(metas)


def flag_scores(metas: dict) -> None:
    """Precision and recall of the flags on the labelled photos that were run."""
    labels = {}
    for line in (ROOT / "benchmarks" / "flag_labels.csv").read_text("utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            photo, label = line.rsplit(",", 1)
            labels[photo.strip()] = label.strip()
    seen = {p: lab for p, lab in labels.items() if p in metas}
    print(f"\nflags on {len(seen)} labelled photos ({sum(v == 'one' for v in seen.values())} one subject, "
          f"{sum(v == 'two' for v in seen.values())} two objects, {sum(v == 'closeup' for v in seen.values())} close-up)")
    for flag, label, fired in (("multiple_objects", "two", lambda m: bool(m.get("multiple_objects"))),
                               ("two large parts (the flag before)", "two", lambda m: len(m.get("parts", [])) > 1),
                               ("cut_edges", "closeup", lambda m: bool(m.get("cut_edges"))),
                               ("touches_border", "closeup", lambda m: "touches_border" in m.get("flags", []))):
        tp = [p for p, lab in seen.items() if lab == label and fired(metas[p])]
        fp = [p for p, lab in seen.items() if lab != label and fired(metas[p])]
        fn = [p for p, lab in seen.items() if lab == label and not fired(metas[p])]
        prec = len(tp) / max(1, len(tp) + len(fp))
        rec = len(tp) / max(1, len(tp) + len(fn))
        print(f"  {flag} for '{label}': precision {prec:.2f} ({len(tp)}/{len(tp) + len(fp)}), recall {rec:.2f} "
              f"({len(tp)}/{len(tp) + len(fn)}); wrongly fired: {', '.join(Path(p).parent.name + '/' + Path(p).stem for p in fp) or '-'}; "
              f"missed: {', '.join(Path(p).parent.name + '/' + Path(p).stem for p in fn) or '-'}")


def edge_colour(pasted: list) -> None:
    """How far the cut-out's colours in the soft edge are from the pasted subject's own colours, given the
    exact alpha: the photo's colours (the plate mixed in) vs the estimated foreground. The subject's own edge
    colours are themselves mixed with its first photo's background, so this truth is not a pure foreground:
    an estimator that removes every background is marked down for removing that one too."""
    from gen4gen.segment.cutout import estimate_foreground

    before, after, t = [], [], 0.0
    for c in pasted:
        x, y = c.at
        h, w = c.alpha.shape
        alpha = np.zeros(c.truth.shape, np.float32)
        alpha[y:y + h, x:x + w] = c.alpha
        alpha = (alpha * 255 + 0.5).astype(np.uint8) / 255.0  # as s1 writes it
        t0 = time.process_time()
        est = estimate_foreground(c.rgb, alpha)
        t += time.process_time() - t0
        a = alpha[y:y + h, x:x + w]
        band = (a > 0.05) & (a < 0.95)
        true = c.fg[band].astype(np.float32)
        before.append(np.linalg.norm(c.rgb[y:y + h, x:x + w][band].astype(np.float32) - true, axis=1).mean())
        after.append(np.linalg.norm(est[y:y + h, x:x + w][band].astype(np.float32) - true, axis=1).mean())
    print(f"edge colour (pasted set, exact alpha, soft band 0.05-0.95, mean RGB distance to the subject's own "
          f"colours): photo {np.mean(before):.1f}, estimated foreground {np.mean(after):.1f} "
          f"(photos better: {sum(b > a for b, a in zip(before, after))}/{len(before)}; "
          f"{1000 * t / len(pasted):.0f} ms CPU per 1024 px photo)")


def reference_agreement() -> tuple[float, float, str]:
    """Mean and worst IoU of the u2net set's two reference masks (U²-Net-p vs U²-Net), and the worst photo."""
    root = SHARED / "segmentation" / "u2net"
    scores = {p.stem: iou(*(read_image(root / r / f"{p.stem}.png", mode="L").astype(np.float32) / 255
                            for r in ("u2netp_ref", "u2net_ref"))) for p in sorted((root / "images").iterdir())}
    worst = min(scores, key=scores.get)
    return float(np.mean(list(scores.values()))), scores[worst], worst


def by_plate(pasted: list, scores: dict[str, float]) -> str:
    rows = {}
    for c in pasted:
        rows.setdefault(c.plate, []).append(scores[c.name])
    return "; ".join(f"{k} {np.mean(v):.3f} (n={len(v)}, {sum(x < 0.85 for x in v)} < 0.85)"
                     for k, v in sorted(rows.items(), key=lambda kv: np.mean(kv[1])))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backends", default="u2netp_single,u2netp,u2netp_flip,u2netp_guided,grabcut,grabcut_u2netp")
    ap.add_argument("--isnet", help="IS-Net ONNX file")
    ap.add_argument("--sam", help="SAM checkpoint (.pth)")
    ap.add_argument("--sam-type", default="vit_b")
    ap.add_argument("--device", default="auto", help="for SAM: auto | cpu | cuda")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-stage", action="store_true", help="skip the end-to-end stage row")
    ap.add_argument("--plates", action="store_true", help="pasted-set IoU per background photo, per backend")
    ap.add_argument("--stage-sets", action="store_true", help="the whole stage on every set, and its flags")
    ap.add_argument("--stage-overrides", default="", help="config overrides for --stage-sets, space-separated")
    ap.add_argument("--pairs", action="append", default=[], help="a folder of image/mask pairs (repeatable)")
    ap.add_argument("--keep-outputs", help="with --pairs: copy the stage's output for each set to DIR/<set>")
    ap.add_argument("--edge-colour", action="store_true", help="foreground estimation on the pasted set's soft edges")
    args = ap.parse_args()
    if not (SHARED / "segmentation").is_dir():
        sys.exit(f"shared data not found at {SHARED} (set GEN4GEN_SHARED_DATA)")
    mean, worst, photo = reference_agreement()
    print(f"reference masks agree (u2net set, U²-Net-p vs U²-Net): mean IoU {mean:.4f}, worst {worst:.3f} ({photo})")
    pasted = build(SHARED)
    if args.edge_colour:
        edge_colour(pasted)
        return
    if args.stage_sets:
        stage_sets(args, pasted)
        return
    bands = [band_name(*b) for b in BANDS]
    cols = [f"{s} vs {r}" for s, refs in SETS for r in refs] + [f"pasted {b}" for b in bands] + \
        ["pasted all", "pasted worst", "pasted < 0.85"]
    print(f"| backend | {' | '.join(cols)} | img/s (wall, {args.workers} workers) | cpu s/img | img/s (2 free cores) |")
    print("|---" * (len(cols) + 4) + "|")
    for name, make in backends(args).items():
        seg = make()
        ious, n, wall, cpu = [], 0, 0.0, 0.0
        for s, refs in SETS:
            photos = sorted((SHARED / "segmentation" / s / "images").iterdir())
            masks, w, c = measure(seg, photos, args.workers)
            if s == "u2net":  # throughput on the typical photos; the 3800 px cat is reported by IoU only
                n, wall, cpu = len(photos), w, c
            for r in refs:
                ious.append(np.mean([iou(masks[p.stem], read_image(SHARED / "segmentation" / s / r / f"{p.stem}.png",
                                                                  mode="L").astype(np.float32) / 255) for p in photos]))
        masks, _, _ = measure(seg, pasted, args.workers)
        scores = {c.name: iou(masks[c.name], c.truth.astype(np.float32)) for c in pasted}
        ious += [np.mean([scores[c.name] for c in pasted if c.band == b]) for b in bands]
        cells = [f"{x:.4f}" for x in ious] + [f"{np.mean(list(scores.values())):.4f}", f"{min(scores.values()):.3f}",
                                              f"{sum(v < 0.85 for v in scores.values())}/{len(scores)}"]
        print(f"| {name} | {' | '.join(cells)} | {n / wall:.2f} | {cpu / n:.3f} | {2 * n / cpu:.2f} |", flush=True)
        if args.plates:
            print(f"  {name} by plate: {by_plate(pasted, scores)}", flush=True)
    if not args.no_stage:
        for label, overrides, alone in (("zoom on (default), one concept", (), False),
                                        ("zoom on (default), each photo its own concept", (), True),
                                        ("zoom off, one concept", ("segmenter.zoom=0",), False)):
            r = stage_row(args.workers, *overrides, alone=alone)
            print(f"| stage, u2netp {label}, writes PNGs | {' | '.join('' for _ in cols)} | {r['n'] / r['wall']:.2f} "
                  f"| {r['cpu'] / r['n']:.3f} | {2 * r['n'] / r['cpu']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
