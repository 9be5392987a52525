"""Scenes on the CPU path before and after issue 23 (background photos, close-ups, matched light).

    python benchmarks/photo_scenes.py prepare WORK          # s1 tree from real photos + masks, a background folder
    PYTHONPATH=/work/main python benchmarks/photo_scenes.py run WORK before --sheet
    python benchmarks/photo_scenes.py run WORK after --sheet
    python benchmarks/photo_scenes.py run WORK after --many 200 --size 512
    python benchmarks/photo_scenes.py report WORK           # rates, edge colour, light, CPU time, contact sheet

    python benchmarks/photo_scenes.py prepare WORK --subjects   # the light variant: the segmentation set's subjects
    python benchmarks/photo_scenes.py run WORK expose1 --many 220 --size 512 --set inpainter.expose=1

``prepare`` (always with this branch) writes an s1 tree of real cut-outs with reference masks (the Gen4Gen pet
photos with IS-Net masks, U²-Net's test photos with U²-Net masks) and two scikit-image photos (a cup, a
motorcycle) cut out by the embedded u2netp, plus a background folder made of real photos: the largest part of
each that its reference mask says holds no subject (at least an eighth of the photo; scene sub-folders named by
hand). ``prepare --subjects`` makes the concepts the subjects of every photo of the segmentation set instead
(cut out with their reference masks), so the light of the composites can be compared with the real photos of
the same subjects; they are split in two halves (``SUBJECTS``), each concept set within one half, so the
composites of one half can also be compared with the real photos of the other (the honest measure: no
subject's own photo is in the reference it is judged against). ``run`` runs s2 + s3
(+ s4) in this process with whatever gen4gen is on PYTHONPATH and records process CPU time per stage.
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LUMA = np.array([0.2126, 0.7152, 0.0722], np.float32)  # linear RGB -> relative luminance
DATA = Path("/work/shared/data") if Path("/work/shared/data").is_dir() else ROOT.parent / "shared" / "data"
SEG = DATA / "segmentation"
# concept -> [(photo, reference mask)]; the cat photo is a face close-up cut by the bottom edge
CONCEPTS = {
    "cat": [(SEG / "gen4gen/images/cat_01.jpg", SEG / "gen4gen/isnet_ref/cat_01.png")],
    "dog": [(SEG / f"gen4gen/images/dog_0{k}.jpg", SEG / f"gen4gen/isnet_ref/dog_0{k}.png") for k in (1, 2)],
    "horse": [(SEG / "u2net/images/horse.jpg", SEG / "u2net/u2net_ref/horse.png")],
    "alpaca": [(SEG / "u2net/images/0003.jpg", SEG / "u2net/u2net_ref/0003.png")],
    "bicycle": [(SEG / "u2net/images/bike.jpg", SEG / "u2net/u2net_ref/bike.png")],
    "lamp": [(SEG / "u2net/images/lamp2_meitu_1.jpg", SEG / "u2net/u2net_ref/lamp2_meitu_1.png")],
}
SKIMAGE = {"cup": "coffee.png", "motorcycle": "motorcycle_left.png"}  # cut out by u2netp
SETS = {"pets": ("cat", "dog"), "breakfast": ("cup", "dog"), "garage": ("motorcycle", "dog"),
        "farm": ("alpaca", "horse"), "study": ("cup", "lamp"), "ride": ("bicycle", "dog")}
# background scene -> photos whose subject is removed (their reference masks say where it was)
BACKGROUNDS = {"meadow": ["horse.jpg", "girl.png", "rifle2.jpeg"], "beach": ["im_14.png"], "sea": ["boat.jpg"],
               "desert": ["im_27.png"], "desk": ["lamp2_meitu_1.jpg"], "lake": ["sailboat3.jpg"],
               "country_road": ["vangogh.jpeg"], "ice_rink": ["hockey.png"], "forest_boardwalk": ["bike.jpg"],
               "dirt_hill": ["rifle1.jpg"]}
# every photo of the segmentation set: its reference mask's subject as a concept -> (concept name, half). The halves
# are the 11/10 split whose real photos' ring differences are closest (distance 11.9; of 3000 random splits, seed
# 0, the median is 20.3, the first alternating one 23.0): a composite that kept each subject's photo contrast
# exactly then scores about that floor on the split measure, so the measure can tell compositors apart
SUBJECTS = {"u2net/0002-01": ("woman", "B"), "u2net/0003": ("alpaca", "A"), "u2net/bike": ("bicycle", "B"),
            "u2net/boat": ("boat", "B"), "u2net/girl": ("horse_and_girl", "A"), "u2net/hockey": ("hockey_players", "A"),
            "u2net/horse": ("horse", "B"), "u2net/im_01": ("airplanes", "A"), "u2net/im_14": ("people", "A"),
            "u2net/im_21": ("monkey", "A"), "u2net/im_27": ("ant", "B"), "u2net/lamp2_meitu_1": ("lamp", "B"),
            "u2net/long": ("calligraphy", "A"), "u2net/rifle1": ("rifle", "B"), "u2net/rifle2": ("scoped_rifle", "A"),
            "u2net/sailboat3": ("sailboat", "B"), "u2net/vangogh": ("couple", "B"), "u2net/whisk": ("meerkat", "A"),
            "gen4gen/cat_01": ("cat", "A"), "gen4gen/dog_01": ("standing_dog", "B"),
            "gen4gen/dog_02": ("lying_dog", "A")}
REF_DIR = {"u2net": "u2net/u2net_ref", "gen4gen": "gen4gen/isnet_ref"}


def subject_photo(key: str) -> tuple[Path, Path]:
    """(photo, reference mask) of a ``SUBJECTS`` key."""
    folder, stem = key.split("/")
    photo = next(p for p in (SEG / folder / "images").iterdir() if p.stem == stem)
    return photo, SEG / REF_DIR[folder] / f"{stem}.png"


SOLO = ("hockey_players",)  # cut by the photo's left and bottom edges: s2's close-up hides any partner (0 % visible)


def subject_sets() -> dict[str, tuple[str, ...]]:
    """Concept pairs within each half, each concept in two of them: (k, k+1) around the half; a ``SOLO`` concept
    in two sets of its own."""
    sets = {}
    for half in ("A", "B"):
        names = [c for c, h in SUBJECTS.values() if h == half and c not in SOLO]
        for k, c in enumerate(names):
            sets[f"{half}{k:02d}"] = (c, names[(k + 1) % len(names)])
        for c in (c for c, h in SUBJECTS.values() if h == half and c in SOLO):
            sets[f"{half}_{c}_1"], sets[f"{half}_{c}_2"] = (c,), (c,)
    return sets


def half_of(concept: str) -> str | None:
    return next((h for c, h in SUBJECTS.values() if c == concept), None)


def prepare(work: Path, subjects: bool = False) -> None:
    from gen4gen.images import read_image
    from gen4gen.segment.cutout import estimate_foreground
    from gen4gen.segment.quality import mask_stats
    from tests.helpers.tree import StageTree

    shutil.rmtree(work, ignore_errors=True)
    tree = StageTree(work / "s1tree" / "stages")
    if subjects:
        sets = subject_sets()
        cutouts = {c: [(read_image(p), read_image(m, mode="L"))] for c, (p, m) in
                   ((c, subject_photo(k)) for k, (c, _) in SUBJECTS.items())}
        work.mkdir(parents=True)
        (work / "subjects.json").write_text(json.dumps(sets, indent=1))  # marks the light variant
    else:
        sets = SETS
        cutouts = {c: [(read_image(p), read_image(m, mode="L")) for p, m in pairs] for c, pairs in CONCEPTS.items()}
        from gen4gen.segment.onnx_saliency import OnnxSaliency
        from gen4gen.weights import cache_dir
        import skimage

        net = OnnxSaliency(cache_dir() / "u2netp.onnx")
        for concept, name in SKIMAGE.items():
            rgb = read_image(Path(skimage.__file__).parent / "data" / name)
            mask, _ = net.segment(rgb)
            cutouts[concept] = [(rgb, (mask * 255 + 0.5).astype(np.uint8))]
    own = {}  # s1 item -> the subject's ring difference in its photo as shot (the cut-out's haze is recoloured)
    for scene, concepts in sets.items():
        for concept in concepts:
            for k, (rgb, mask) in enumerate(cutouts[concept]):
                f = min(1.0, 1024 / max(rgb.shape[:2]))
                size = (round(rgb.shape[1] * f), round(rgb.shape[0] * f))
                rgb_s = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
                m = cv2.resize(mask, size, interpolation=cv2.INTER_AREA)
                stats = mask_stats(m / 255.0)
                # as s1 stores it: the soft edge's colour is the estimated foreground, not the old background
                fg = estimate_foreground(rgb_s, m.astype(np.float32) / 255.0)
                own[f"{scene}/{concept}/photo{k}"] = rings(*_at_512(rgb_s, m / 255.0), 12, whole=True)
                tree.s1_item(scene, concept, f"photo{k}", np.dstack([fg, m]), config_hash="bench",
                             fingerprint=f"{concept}{k}", flags=stats["flags"],
                             cut_edges=[e for e in ("top", "bottom", "left", "right") if e in stats["border_contact"]])
    (work / "own_rings.json").write_text(json.dumps(own, indent=1))
    bg = work / "backgrounds"
    for scene, names in BACKGROUNDS.items():
        (bg / scene).mkdir(parents=True)
        for name in names:
            photo = read_image(SEG / "u2net/images" / name)
            ref = read_image(SEG / "u2net/u2net_ref" / (Path(name).stem + ".png"), mode="L")
            x0, y0, x1, y1 = free_rectangle(ref > 20)
            if (x1 - x0) * (y1 - y0) < 0.12 * ref.size:
                print(f"{name}: no subject-free part of an eighth of the photo, left out")
                continue
            cv2.imwrite(str(bg / scene / (Path(name).stem + ".jpg")), photo[y0:y1, x0:x1, ::-1],
                        [cv2.IMWRITE_JPEG_QUALITY, 95])
    print(f"prepared {work}: {sum(len(v) for v in sets.values())} concept slots, "
          f"{len(list(bg.glob('*/*.jpg')))} background photos")


def free_rectangle(subject: np.ndarray, side: int = 120) -> tuple[int, int, int, int]:
    """The largest rectangle of the photo with no subject pixel in it (x0, y0, x1, y1), aspect 0.6..1.8, found
    on a ``side``-px copy with the histogram method (the subject widened a little first)."""
    h, w = subject.shape
    f = side / max(h, w)
    small = cv2.resize(subject.astype(np.uint8), (max(1, round(w * f)), max(1, round(h * f))),
                       interpolation=cv2.INTER_AREA) > 0
    small = cv2.dilate(small.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    sh, sw = small.shape
    heights = np.zeros(sw, int)
    best, box = 0, (0, 0, sw, sh)
    for y in range(sh):
        heights = np.where(small[y], 0, heights + 1)
        for x0 in range(sw):
            hmin = heights[x0]
            for x1 in range(x0, sw):
                hmin = min(hmin, heights[x1])
                if hmin == 0:
                    break
                bw = x1 - x0 + 1
                bh = min(hmin, int(bw * 1.6)) if bw / hmin < 0.6 else hmin
                if bw / max(bh, 1) > 1.8:
                    continue
                if bw * bh > best:
                    best, box = bw * bh, (x0, y + 1 - bh, x1 + 1, y + 1)
    x0, y0, x1, y1 = box
    return int(x0 / f), int(y0 / f), min(w, int(x1 / f)), min(h, int(y1 / f))


def work_sets(work: Path) -> dict:
    """The concept sets a prepared folder holds (the light variant writes its own)."""
    marker = work / "subjects.json"
    return json.loads(marker.read_text()) if marker.is_file() else SETS


def run(work: Path, name: str, sheet: bool, many: int, size: int, settings: list[str] = ()) -> None:
    from gen4gen.stages import s2_compose, s3_repaint, s4_caption
    from tests.conftest import make_cfg

    out = work / name
    tfile = out / "timings.json"
    timings = json.loads(tfile.read_text()) if tfile.is_file() else {}
    jobs = [("procedural", []), ("photo", [f"repaint.backgrounds={work / 'backgrounds'}"])] if sheet else \
        [("photo", [f"repaint.backgrounds={work / 'backgrounds'}"])]
    for kind, extra in jobs:
        base = out / (kind if sheet else f"many_{kind}")
        shutil.rmtree(base, ignore_errors=True)
        shutil.copytree(work / "s1tree" / "stages", base / "stages")
        samples = 1 if sheet else max(1, many // len(work_sets(work)))
        over = ["workers=1", f"compose.size=[{size},{size}]", f"compose.num_samples={samples}",
                "compose.min_visible=0.4", f"paths.cache_dir={work / 'cache'}", *extra, *settings]  # warm: no MiniLM
        if (work / "subjects.json").is_file():
            over.append("compose.min_objects=1")  # the SOLO sets
        t = {}
        for stage, mod in (("s2", s2_compose), ("s3", s3_repaint), ("s4", s4_caption)):
            cfg = make_cfg(base, f"stage={stage}", *over)
            c0, w0 = time.process_time(), time.perf_counter()
            summary = mod.run(cfg)
            t[stage] = {"cpu_s": round(time.process_time() - c0, 2), "wall_s": round(time.perf_counter() - w0, 2),
                        "done": summary.done, "failed": summary.failed}
        timings[base.name] = t
        print(name, base.name, t, flush=True)
    tfile.write_text(json.dumps(timings, indent=1))


# ---------------------------------------------------------------- measures
def _finals(base: Path):
    from gen4gen.paths import STAGE_DIRS

    stages = base / "stages"
    for meta_path in sorted((stages / STAGE_DIRS["s3"]).glob("*/*/*/meta.json")):
        meta = json.loads(meta_path.read_text())
        comp = stages / STAGE_DIRS["s2"] / meta["composition"]
        caps = stages / STAGE_DIRS["s4"] / meta_path.parent.relative_to(stages / STAGE_DIRS["s3"]) / "captions.json"
        yield meta_path.parent, comp, meta, json.loads((comp / "layout.json").read_text()), \
            json.loads(caps.read_text()) if caps.is_file() else {}


def rates(base: Path, s1_root: Path) -> dict:
    """Photo used; cut-off subjects at their edge or left out with a reason; caption phrase == photo folder."""
    from gen4gen.images import read_image
    from gen4gen.layout.closeups import boxed_in
    from gen4gen.repaint.photos import scene_phrase

    cut = {}
    for meta_path in (s1_root / "stages").rglob("meta.json"):
        m = json.loads(meta_path.read_text())
        if m.get("cut_edges"):
            cut[meta_path.parent.relative_to(meta_path.parents[3]).as_posix()] = m["cut_edges"]
    n = photo = phrase_ok = 0
    cut_total = cut_ok = 0
    for final, comp, meta, layout, caps in _finals(base):
        n += 1
        bg = meta.get("background") or {}
        photo += bg.get("kind") == "photo"
        if bg.get("kind") == "photo":
            folder = Path(bg.get("source", "")).parent.name
            phrase_ok += bg.get("phrase") == scene_phrase(folder) and bg.get("phrase", "#") in caps.get("detailed", "")
        W, H = layout["size"]
        for o in layout["objects"]:
            edges = cut.get(o.get("source", ""))
            if not edges:
                continue
            cut_total += 1
            inst = read_image(comp / o["mask"], mode="L") > 127
            # the subject's pixels on each cut edge of its photo (paws, a whole chest) lie on that canvas edge
            src = read_image(base / "stages" / o["source_path"], mode="RGBA")[..., 3] > 127
            k = float(o["transform"]["scale"])
            on_photo = {"bottom": src[-1].sum(), "top": src[0].sum(), "left": src[:, 0].sum(), "right": src[:, -1].sum()}
            on_canvas = {"bottom": inst[-1].sum(), "top": inst[0].sum(), "left": inst[:, 0].sum(),
                         "right": inst[:, -1].sum()}
            lines = {e: on_canvas[e] >= 0.5 * k * on_photo[e] and on_canvas[e] > 0 for e in on_photo}
            flagged = boxed_in(edges) and bool((layout.get("closeup") or {}).get("flags"))  # all there is: flagged
            cut_ok += all(lines[e] for e in edges) or flagged
        for d in layout.get("left_out") or []:  # left out with a reason: counted as handled
            cut_total += 1
            cut_ok += bool(d.get("reason"))
    return {"finals": n, "photo_used": photo / max(n, 1), "phrase_is_folder": phrase_ok / max(photo, 1),
            "cut_off_at_edge_or_left_out": cut_ok / max(cut_total, 1), "cut_off_uses": cut_total}


def rings(rgb: np.ndarray, alpha: np.ndarray, width: int, whole: bool = False,
          clear: np.ndarray | None = None) -> list[tuple[float, float]]:
    """Per object (component of alpha >= 0.5; ``whole``: all of them as one): (L difference, a/b distance) between
    the mean of its inner ring and of the background ring just outside it, in Lab; the background ring only where
    ``clear`` (default: alpha < 0.05)."""
    solid = (alpha >= 0.5).astype(np.uint8)
    n, labels = (2, solid.astype(np.int32)) if whole else cv2.connectedComponents(solid)
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).astype(np.float32)
    lab[..., 0] *= 100 / 255
    lab[..., 1:] -= 128
    inside = cv2.distanceTransform(solid, cv2.DIST_L2, 3)
    outside = cv2.distanceTransform(1 - solid, cv2.DIST_L2, 3)
    clear = alpha < 0.05 if clear is None else clear
    out = []
    for k in range(1, n):
        mine = labels == k
        if mine.sum() < 0.005 * mine.size:
            continue
        near = cv2.dilate(mine.astype(np.uint8), np.ones((2 * width + 1,) * 2, np.uint8)) > 0
        inner = mine & (inside > 2) & (inside <= width)
        outer = near & ~mine & (outside > 2) & (outside <= width) & clear
        if inner.sum() < 50 or outer.sum() < 50:
            continue
        d = lab[inner].mean(0) - lab[outer].mean(0)
        out.append((float(d[0]), float(np.hypot(d[1], d[2]))))
    return out


def _at_512(rgb: np.ndarray, alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    f = 512 / max(rgb.shape[:2])
    size = (round(rgb.shape[1] * f), round(rgb.shape[0] * f))
    return (np.ascontiguousarray(cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)),
            cv2.resize(alpha, size, interpolation=cv2.INTER_AREA))


_REAL: dict[str, list[tuple[float, float]]] = {}


def real_rings(keys) -> np.ndarray:
    """The ring differences of every subject part in the real photos of ``keys`` (``SUBJECTS``), at 512 px."""
    from gen4gen.images import read_image

    out = []
    for key in keys:
        if key not in _REAL:
            photo, mask = subject_photo(key)
            rgb, a = _at_512(read_image(photo), read_image(mask, mode="L"))
            _REAL[key] = rings(rgb, a / 255.0, 12)
        out += _REAL[key]
    return np.array(out)


def own_contrast(base: Path, s1_root: Path) -> dict:
    """Per placed object (its instance mask, all its parts as one; the background ring clear of every object):
    its L difference on the composite - the one in its own photo as shot (``prepare``'s ``own_rings.json``; the
    s1 cut-out's haze carries the estimated foreground, which moved it by up to 28), per concept: how far the
    pasting moved a subject's contrast to its surroundings from the one its camera recorded. mean_abs over all
    objects; per concept (mean signed, mean abs, count, own L diff)."""
    from gen4gen.images import read_image

    own, diffs = json.loads((s1_root.parent / "own_rings.json").read_text()), {}
    for final, s2, meta, layout, _ in _finals(base):
        img = read_image(final / "image.png")
        clear = read_image(s2 / "mask.png", mode="L") < 13
        for o in layout["objects"]:
            mine = rings(img, read_image(s2 / o["mask"], mode="L") / 255.0, 12, whole=True, clear=clear)
            if own[o["source"]] and mine:
                ref = own[o["source"]][0][0]
                diffs.setdefault(o["concept"], []).append((mine[0][0] - ref, ref))
    flat = [d for v in diffs.values() for d, _ in v]
    per = {c: (np.array([d for d, _ in v]), v[0][1]) for c, v in sorted(diffs.items())}
    return {"mean_abs": round(float(np.mean(np.abs(flat))), 2) if flat else float("nan"), "objects": len(flat),
            "per_subject": {c: (round(float(d.mean()), 1), round(float(np.abs(d).mean()), 1), len(d), round(ref, 1))
                            for c, (d, ref) in per.items()}}


def composite_rings(base: Path, half: str | None = None) -> np.ndarray:
    """The ring differences of every object part on the composites (the union mask, at 512 px); ``half``: only
    compositions whose concepts are of that half of ``SUBJECTS``."""
    from gen4gen.images import read_image

    comp = []
    for final, s2, meta, layout, _ in _finals(base):
        if half is not None and half_of(layout["objects"][0]["concept"]) != half:
            continue
        rgb, a = _at_512(read_image(final / "image.png"), read_image(s2 / "mask.png", mode="L"))
        comp += rings(rgb, a / 255.0, 12)
    return np.array(comp)


def distance(real: np.ndarray, comp: np.ndarray) -> dict:
    """1-D Wasserstein distances of the L and a/b ring differences (summed), and the L / a/b statistics."""
    from scipy.stats import wasserstein_distance

    return {"distance": round(float(wasserstein_distance(real[:, 0], comp[:, 0]) +
                                    wasserstein_distance(real[:, 1], comp[:, 1])), 2),
            "parts": len(comp), "real_parts": len(real),
            "L": f"{comp[:, 0].mean():.1f} ± {comp[:, 0].std():.1f}",
            "real_L": f"{real[:, 0].mean():.1f} ± {real[:, 0].std():.1f}",
            "ab": round(float(comp[:, 1].mean()), 1), "real_ab": round(float(real[:, 1].mean()), 1)}


def light_measures(base: Path, subjects: bool) -> dict:
    """The existing set: composites vs the real photos of all segmentation subjects (27 parts, other subjects).
    The light variant (``subjects``): same subjects (all composites vs all photos), and the split: composites of
    half A vs the photos of half B and B vs A, with the floor a composite that kept each subject's photo contrast
    exactly would reach there (real A vs real B)."""
    everyone = real_rings(SUBJECTS)
    if not subjects:
        return {"vs_all_photos": distance(everyone, composite_rings(base)), "resampled_photos": resampled_photos()}
    half = {h: [k for k, (_, hh) in SUBJECTS.items() if hh == h] for h in "AB"}
    out = {"same_subjects": distance(everyone, composite_rings(base))}
    for h, other in (("A", "B"), ("B", "A")):
        out[f"{h}_vs_photos_{other}"] = distance(real_rings(half[other]), composite_rings(base, h))
    out["split_mean"] = round((out["A_vs_photos_B"]["distance"] + out["B_vs_photos_A"]["distance"]) / 2, 2)
    out["split_floor"] = distance(real_rings(half["B"]), real_rings(half["A"]))["distance"]
    out["resampled_photos"] = resampled_photos()
    return out


def resampled_photos(n: int = 1000) -> list[float]:
    """How far the real photos' own distribution lies from itself re-drawn: the distance of the 21 photos' parts
    to those of 21 photos drawn with replacement, quartiles over ``n`` draws (seeded). A composite set whose
    distribution were exactly the photos' would score about this against the 27 parts: the measure's noise."""
    keys = list(SUBJECTS)
    rng = np.random.default_rng(0)
    draws = [distance(real_rings(keys), real_rings([keys[i] for i in rng.integers(0, len(keys), len(keys))]))
             ["distance"] for _ in range(n)]
    return [round(float(v), 1) for v in np.percentile(draws, [25, 50, 75])]


def edge_error(base: Path) -> tuple[float, float, float]:
    """Mean colour distance in the soft band (alpha 0.05-0.95) between the final image and alpha * F + (1 - alpha)
    * B, B the final image just outside the band (a blurred ring 3-12 px out: the plate is not stored), two ways:
    F the cut-out's colour pushed inward from its solid part (the first measure), and F the foreground the
    pipeline has: s2's straight colour in the band, s1's estimated foreground resampled with the sprite. The
    first charges a perfect composite about 31 on these images (a textured subject's colour at its rim is not
    the blur of its interior), the second about 13 (B's texture); it is the fair one. A third: that F with each
    object's re-exposure (``_exposed``), so a gain on the whole subject is not counted as an edge error."""
    from gen4gen.images import read_image

    errs = []
    for final, s2, meta, layout, _ in _finals(base):
        img = read_image(final / "image.png").astype(np.float32)
        rgba = read_image(s2 / "image_rgba.png", mode="RGBA").astype(np.float32)
        a = rgba[..., 3] / 255.0
        band = (a > 0.05) & (a < 0.95)
        if band.sum() < 50:
            continue
        solid = (a >= 0.95).astype(np.float32)
        num = cv2.GaussianBlur(rgba[..., :3] * solid[..., None], (0, 0), 4)
        den = cv2.GaussianBlur(solid, (0, 0), 4)[..., None]
        pushed = np.where(den > 1e-3, num / np.maximum(den, 1e-3), rgba[..., :3])
        far = cv2.distanceTransform((a < 0.05).astype(np.uint8), cv2.DIST_L2, 3)
        ring = (far > 3) & (far < 12)  # the plate next to the band, where the background is seen unmixed
        bmean = cv2.GaussianBlur(img * ring[..., None], (0, 0), 6) / np.maximum(
            cv2.GaussianBlur(ring.astype(np.float32), (0, 0), 6), 1e-3)[..., None]
        ideal = [a[..., None] * fg + (1 - a[..., None]) * bmean
                 for fg in (pushed, rgba[..., :3], _exposed(rgba[..., :3], img, a))]
        errs.append([float(np.linalg.norm((img - i)[band], axis=1).mean()) for i in ideal])
    return tuple(float(v) for v in np.mean(errs, 0)) if errs else (float("nan"),) * 3


def _exposed(fg: np.ndarray, img: np.ndarray, a: np.ndarray) -> np.ndarray:
    """``fg`` (float sRGB) with each solid part's gain as the final image shows it (the median ratio of linear
    luminance over the part), applied within 7 px of it: the foreground as re-exposure left it."""
    from gen4gen.repaint.exposure import to_linear, to_srgb

    solid = (a >= 0.95).astype(np.uint8)
    n, labels = cv2.connectedComponents(solid)
    lin = to_linear(fg.astype(np.uint8))
    yf, yi = lin @ LUMA, to_linear(img.astype(np.uint8)) @ LUMA
    gain = np.ones(a.shape, np.float32)
    for k in range(1, n):
        mine = (labels == k) & (yf > 0.01)
        if mine.sum() > 20:
            near = cv2.dilate((labels == k).astype(np.uint8), np.ones((15, 15), np.uint8)) > 0
            gain[near] = np.median(yi[mine] / yf[mine])
    return to_srgb(lin * gain[..., None])


def contact_sheet(work: Path, path: Path, thumb: int = 400) -> None:
    rows = []
    for kind in ("procedural", "photo"):
        befores = {f.parent.parent.relative_to(f.parents[3]).as_posix(): f for f in
                   sorted((work / "before" / kind / "stages").glob("s3*/*/*/v0_*/image.png"))}
        for key, b in befores.items():
            a = next((work / "after" / kind / "stages").glob(f"s3*/{key}/v0_*/image.png"), None)
            if a is None:
                continue
            pair = []
            for label, f in (("before", b), ("after", a)):
                img = cv2.resize(cv2.imread(str(f)), (thumb, thumb), interpolation=cv2.INTER_AREA)
                cv2.putText(img, f"{label}: {key} ({kind})", (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 3)
                cv2.putText(img, f"{label}: {key} ({kind})", (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
                pair.append(img)
            rows.append(np.hstack(pair))
    grid = [np.hstack(rows[i:i + 2]) if i + 1 < len(rows) else np.hstack([rows[i], np.zeros_like(rows[i])])
            for i in range(0, len(rows), 2)]
    cv2.imwrite(str(path), np.vstack(grid))
    print(f"contact sheet: {path} ({len(rows)} compositions)")


def report(work: Path) -> None:
    out = {}
    names = sorted(p.name for p in work.iterdir() if (p / "timings.json").is_file())
    for name in names:
        for kind in ("procedural", "photo", "many_photo"):
            base = work / name / kind
            if not base.is_dir():
                continue
            res = rates(base, work / "s1tree")
            res["light"] = light_measures(base, (work / "subjects.json").is_file())
            res["own_contrast"] = own_contrast(base, work / "s1tree")
            res["edge_error"], res["edge_error_stored_f"], res["edge_error_exposed_f"] = \
                (round(v, 2) for v in edge_error(base))
            out[f"{name}/{kind}"] = res
            print(name, kind, json.dumps(res), flush=True)
        t = work / name / "timings.json"
        if t.is_file():
            out[f"{name}/timings"] = json.loads(t.read_text())
    (work / "report.json").write_text(json.dumps(out, indent=1))
    if (work / "before").is_dir() and (work / "after").is_dir():
        contact_sheet(work, ROOT / "benchmarks" / "photo_scenes_contact_sheet.jpg")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["prepare", "run", "report"])
    ap.add_argument("work", type=Path)
    ap.add_argument("name", nargs="?", default="after")
    ap.add_argument("--sheet", action="store_true", help="the 12 compositions of the contact sheet (1024 px)")
    ap.add_argument("--many", type=int, default=0, help="this many compositions with the background folder")
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--subjects", action="store_true",
                    help="prepare: the segmentation set's subjects as the concepts (the light variant)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a config override for s2-s4 (a variant: run WORK expose1 --set inpainter.expose=1)")
    a = ap.parse_args(argv)
    if a.what == "prepare":
        prepare(a.work, a.subjects)
    elif a.what == "run":
        run(a.work, a.name, a.sheet or not a.many, a.many, a.size, a.set)
    else:
        report(a.work)


if __name__ == "__main__":
    main()
