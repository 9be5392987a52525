"""The objects of a first-pass mask, and which of them is the concept.

A mask's large connected parts (``quality.large_parts``) are not all objects: a plant's leaves, a horse's
legs behind a fence, a wheel's spokes are parts of one subject. Parts are one object when they lie close
together (gap at most ``NEAR`` of the subject's scale, the square root of its large parts' area), or
further apart (up to ``FAR``) and look alike (feature cosine at least ``SAME``). Specks (small parts) join
the object they lie near, else they are fragments: dropped from the cut-out.

The concept is what its photos share: each object of a photo is scored by how much it looks like the
subjects of the concept's other photos (mean over those photos of the best cosine to one of their
objects; then once more against the subjects that scoring chose). Objects within ``MARGIN`` of the best
are the concept; one further below is a second object, dropped with its area and score on record. Two or
more objects all within the margin: the photo is ambiguous.

Before the scoring, a part that joins the concept to something whose colours none of the other photos'
subjects show is cut in two (``shared_colours``): the pieces are scored like objects and remember the
object they were cut from; a cut piece also goes when that object, whole, is less like the concept than
the rest of it alone (``WHOLE_WORSE``). Pieces of one object the concept keeps are one subject.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
from PIL import Image

from gen4gen.encoders import unit
from gen4gen.segment.quality import PART_OF_LARGEST, PART_OF_PHOTO
from gen4gen.segment.shared_colours import colour_index, concept_histogram, foreign_pieces, histogram

ANALYSIS = 320  # long side (px) the objects are found at
NEAR, FAR, SAME = 0.15, 0.4, 0.8
MARGIN = 0.35  # cosine below the best object's that makes an object another thing (EfficientNet-Lite0)
# a piece cut off by its colours (``shared_colours``) is also dropped when the part it was cut from, whole, is
# less like the concept than the rest without it by more than this: a leaf in other light belongs to the plant
# (the plant with it is as like the plant's other photos), a ghost beside a sailboat does not
WHOLE_WORSE = 0.05
CROP = 224  # feature crops: the object on grey, padded to a square


@dataclass
class PhotoObjects:
    """One photo's objects at the analysis size: ``labels`` 0 background, k > 0 object k, -1 a fragment."""
    labels: np.ndarray
    areas: list[float]  # fraction of the photo, per object (1-based ids: areas[k - 1])
    features: np.ndarray | None = None  # objects x dim, unit rows
    scores: list[float | None] = field(default_factory=list)
    kept: list[bool] = field(default_factory=list)
    colours: np.ndarray | None = None  # colour-bin index per analysis pixel (``shared_colours``)
    # per object, the object (1-based id) it was cut from when a joined part was split; empty: none was
    parents: list[int] = field(default_factory=list)
    # features of each object that was cut, whole (all its pieces), by its 1-based id
    wholes: dict[int, np.ndarray] = field(default_factory=dict)
    # the colours of the concept's other photos' subjects (``shared_colours.concept_histogram``); None: no others
    concept_colours: np.ndarray | None = None

    @property
    def count(self) -> int:
        return len(self.areas)

    def parent(self, k: int) -> int:
        """The object (1-based) that object ``k`` (1-based) is, or was cut from."""
        return self.parents[k - 1] if self.parents else k

    @property
    def separate(self) -> int:
        """How many separate objects the photo held: the kept ones count once per object they were cut from
        (pieces of one joined part the concept keeps are one subject); each dropped one counts alone."""
        kept = self.kept or [True] * self.count
        return len({self.parent(k + 1) for k, keep in enumerate(kept) if keep}) + kept.count(False)

    def focus(self) -> np.ndarray:
        """The concept's objects (analysis size, bool): what the zoom pass and the cut-out keep."""
        ids = [k + 1 for k, keep in enumerate(self.kept) if keep] or list(range(1, self.count + 1))
        return np.isin(self.labels, ids)

    @property
    def dropped_whole(self) -> bool:
        """Whether a separate object (not a piece cut from a joined part) was dropped."""
        return any(not keep and self.parent(k) == k for k, keep in enumerate(self.kept, 1))

    def dropped(self, width: int, height: int) -> np.ndarray | None:
        """Photo-size pixels nearer to a dropped object than to a kept one (None when nothing was dropped):
        a piece cut from a joined part goes with its side of the cut, whatever later passes draw there."""
        gone = [k + 1 for k, keep in enumerate(self.kept) if not keep]
        if not gone:
            return None
        objects = self.labels > 0
        _, near = cv2.distanceTransformWithLabels((~objects).astype(np.uint8), cv2.DIST_L2, 5,
                                                  labelType=cv2.DIST_LABEL_PIXEL)
        owner = np.zeros(int(near.max()) + 1, np.int16)  # DIST_LABEL_PIXEL numbers the objects' pixels
        owner[near[objects]] = self.labels[objects]
        drop = np.isin(owner[near], gone).astype(np.uint8)
        return cv2.resize(drop, (width, height), interpolation=cv2.INTER_NEAREST) > 0

    def focus_all(self) -> np.ndarray:
        """Every object, fragments left out."""
        return self.labels > 0

    @property
    def ambiguous(self) -> bool:
        """Two or more separate objects, all about as like the concept's other photos."""
        kept = {self.parent(k + 1) for k, keep in enumerate(self.kept) if keep}
        return len(kept) > 1 and all(s is not None for s in self.scores)

    def record(self) -> list[dict]:
        """What ``meta.json`` says of each object: area, similarity to the concept, whether it is the concept."""
        out = [{"area_fraction": a, "concept_score": s, "concept": k}
               for a, s, k in zip(self.areas, self.scores or [None] * self.count, self.kept or [True] * self.count)]
        for k, o in enumerate(out, 1):
            if self.parent(k) != k:
                o["cut_from"] = self.parent(k)
        return out


def analysis_map(soft: np.ndarray, width: int, height: int) -> np.ndarray:
    """A mask or saliency map of any size as the photo's shape at long side ``ANALYSIS`` px."""
    s = ANALYSIS / max(width, height)
    size = (max(1, round(width * s)), max(1, round(height * s)))
    inter = cv2.INTER_AREA if soft.shape[1] > size[0] else cv2.INTER_LINEAR
    return cv2.resize(soft.astype(np.float32), size, interpolation=inter)


def find_objects(soft: np.ndarray, rgb: np.ndarray | None = None, encoder=None, compared: bool = True) -> PhotoObjects:
    """``soft``: an analysis map (``analysis_map``). With an encoder, far parts that look alike are merged
    and, when ``compared`` (the concept has other photos to choose against), every object of a photo with
    two gets a feature; without one, parts are grouped by distance only. A photo alone in its concept gets
    features only when two of its parts lie far apart but not too far (their likeness decides): the encoder
    costs ~1.5 s to load and ~50 ms a photo, for a choice that does not exist."""
    hard = (soft >= 0.5).astype(np.uint8)
    n, comp, stats, _ = cv2.connectedComponentsWithStats(hard, connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA].astype(np.int64)
    if not len(areas):
        return PhotoObjects(np.zeros(hard.shape, np.int16), [])
    least = max(PART_OF_LARGEST * areas.max(), PART_OF_PHOTO * hard.size)
    large = [k + 1 for k in np.argsort(-areas, kind="stable") if areas[k] >= least]
    scale = float(np.sqrt(areas[[k - 1 for k in large]].sum()))
    gaps = _gaps(comp, large)
    group = {k: k for k in large}

    def root(k):
        while group[k] != k:
            k = group[k]
        return k

    def join(a, b):
        group[max(root(a), root(b))] = min(root(a), root(b))

    for (a, b), gap in gaps.items():
        if gap <= NEAR * scale:
            join(a, b)
    labels = _relabel(comp, large, root)
    objects = PhotoObjects(labels, _areas(labels, hard.size))
    far = [(a, b) for (a, b), gap in gaps.items() if NEAR * scale < gap <= FAR * scale and root(a) != root(b)]
    if encoder is not None and rgb is not None and objects.count > 1 and (compared or far):
        objects.features = features(encoder, rgb, objects)
        for a, b in far:
            fa, fb = objects.features[labels[comp == a][0] - 1], objects.features[labels[comp == b][0] - 1]
            if float(fa @ fb) >= SAME:
                join(a, b)
        merged = _relabel(comp, large, root)
        if not np.array_equal(merged, labels):
            objects = PhotoObjects(merged, _areas(merged, hard.size))
            objects.features = features(encoder, rgb, objects)
    _assign_specks(objects.labels, comp, [k for k in range(1, n) if k not in large], FAR * scale)
    if rgb is not None:
        objects.colours = colour_index(rgb, hard.shape)
    return objects


def split_foreign(photos: dict[str, PhotoObjects]) -> None:
    """Cut every photo's joined parts where their colours are foreign to the concept's other photos
    (``shared_colours.foreign_pieces``); the pieces need features again."""
    hists = {pid: histogram(p.colours, p.labels > 0) for pid, p in photos.items() if p.colours is not None}
    for pid, p in photos.items():
        others = [h for q, h in hists.items() if q != pid and h is not None]
        if others:  # kept for the clean-up: a doubted patch in the concept's colours is the subject's
            p.concept_colours = concept_histogram(others)
        if p.colours is None or not p.count or not others:
            continue
        labels = foreign_pieces(p.colours, p.labels, others)
        if labels.max() > p.labels.max():
            cut = [int(p.labels[labels == k][0]) for k in range(p.count + 1, int(labels.max()) + 1)]
            p.parents = [p.parent(k) for k in range(1, p.count + 1)] + [p.parent(c) for c in cut]
            p.labels, p.areas, p.features = labels, _areas(labels, labels.size), None


def _gaps(comp: np.ndarray, parts: list[int]) -> dict[tuple[int, int], float]:
    """The smallest pixel distance between every two of ``parts``."""
    out = {}
    for i, a in enumerate(parts[:-1]):
        dist = cv2.distanceTransform((comp != a).astype(np.uint8), cv2.DIST_L2, 3)
        for b in parts[i + 1:]:
            out[a, b] = float(dist[comp == b].min())
    return out


def _relabel(comp: np.ndarray, large: list[int], root) -> np.ndarray:
    """Object ids 1..k by first appearance in ``large`` (largest part first); everything else 0."""
    ids: dict[int, int] = {}
    lut = np.zeros(int(comp.max()) + 1, np.int16)  # kept per photo until its item runs: small
    for k in large:
        lut[k] = ids.setdefault(root(k), len(ids) + 1)
    return lut[comp]


def _areas(labels: np.ndarray, size: int) -> list[float]:
    counts = np.bincount(labels[labels > 0].ravel(), minlength=int(labels.max()) + 1)
    return [round(float(c) / size, 5) for c in counts[1:]]


def _assign_specks(labels: np.ndarray, comp: np.ndarray, specks: list[int], reach: float) -> None:
    """Each speck joins the object it lies within ``reach`` of (the nearest), else becomes a fragment (-1)."""
    if not specks:
        return
    if labels.max() < 1:
        return
    dist, near = cv2.distanceTransformWithLabels((labels <= 0).astype(np.uint8), cv2.DIST_L2, 5,
                                                 labelType=cv2.DIST_LABEL_PIXEL)
    # DIST_LABEL_PIXEL numbers the zero pixels (the objects' pixels); map each back to its object id
    owner = np.zeros(int(near.max()) + 1, np.int32)
    owner[near[labels > 0]] = labels[labels > 0]
    for k in specks:
        at = comp == k
        d = dist[at]
        i = int(np.argmin(d))
        labels[at] = int(owner[near[at][i]]) if d[i] <= reach else -1


def features(encoder, rgb: np.ndarray, objects: PhotoObjects) -> np.ndarray:
    """Unit features of each object: its pixels on grey, cropped to its box, padded to a square. An object
    that was cut into pieces also gets its whole's features (``objects.wholes``)."""
    h, w = rgb.shape[:2]
    lab = cv2.resize(objects.labels, (w, h), interpolation=cv2.INTER_NEAREST)
    cut = sorted({objects.parent(k) for k in range(1, objects.count + 1) if objects.parent(k) != k})
    regions = [lab == k for k in range(1, objects.count + 1)]
    regions += [np.isin(lab, [k for k in range(1, objects.count + 1) if objects.parent(k) == c]) for c in cut]
    crops = []
    for region in regions:
        ys, xs = np.nonzero(region)
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        part = np.where(region[y0:y1, x0:x1, None], rgb[y0:y1, x0:x1], 124).astype(np.uint8)
        side = max(part.shape[:2])
        sq = np.full((side, side, 3), 124, np.uint8)
        oy, ox = (side - part.shape[0]) // 2, (side - part.shape[1]) // 2
        sq[oy:oy + part.shape[0], ox:ox + part.shape[1]] = part
        crops.append(Image.fromarray(cv2.resize(sq, (CROP, CROP), interpolation=cv2.INTER_AREA if side > CROP
                                                else cv2.INTER_LINEAR)))
    out = unit(encoder.encode_images(crops), np.float32)
    objects.wholes = {c: out[objects.count + i] for i, c in enumerate(cut)}
    return out[:objects.count]


def choose(photos: dict[str, PhotoObjects]) -> None:
    """Score every object of every photo of one concept against the concept's other photos and set
    ``scores`` and ``kept``. Photos without features (one object each, or no encoder) score as their one
    object; a concept of one photo keeps everything unscored."""
    ids = sorted(photos)
    for pid in ids:
        p = photos[pid]
        p.scores, p.kept = [None] * p.count, [True] * p.count
    scored = [pid for pid in ids if photos[pid].features is not None and len(photos[pid].features)]
    if len(scored) < 2:
        return
    subject = {pid: photos[pid].features for pid in scored}  # first: every object of each photo
    for _ in range(2):
        best = {}
        for pid in scored:
            others = [subject[q] for q in scored if q != pid]
            sims = np.stack([(photos[pid].features @ o.T).max(1) for o in others]).mean(0)
            p = photos[pid]
            p.scores = [round(float(s), 4) for s in sims]
            top = float(sims.max())
            p.kept = [bool(s >= top - MARGIN) for s in sims]
            for c, f in p.wholes.items():  # the whole cut part against the rest of it alone
                whole = float(np.mean([(f @ o.T).max() for o in others]))
                if whole < sims[c - 1] - WHOLE_WORSE:
                    p.kept = [keep and (p.parent(k + 1) != c or k + 1 == c) for k, keep in enumerate(p.kept)]
            best[pid] = photos[pid].features[[k for k, keep in enumerate(p.kept) if keep]]
        subject = best
