"""Split a joined part where its colours are not the concept's.

Saliency joins two things that touch (a rifle's bipod on a tree stump, a monkey sitting on it) into one
connected part, so choosing among parts has nothing to split. The concept's other photos say what its
subject looks like: their subjects' colour histogram (the median per bin over those photos, so one other
photo holding the same intruder does not vouch for it). This photo's subject is modelled as a mixture of
that histogram and one unknown other thing, whose histogram a few EM steps estimate; a pixel whose colour
the other thing explains at least 4x better than the concept (averaged over a small window) is foreign.
Where this photo's subject is the concept alone, the other thing comes out as the concept and nothing is
foreign. An object's foreign region, when large, becomes a piece of its own; the features
(``objects.choose``) then decide whether it is the concept: colour only proposes the cut.
"""
from __future__ import annotations

import cv2
import numpy as np

from gen4gen.segment.quality import PART_OF_LARGEST, PART_OF_PHOTO

LEVELS = 8  # colour bins per RGB channel: coarse, so a shift in light keeps a colour in its bin or the next
EM_STEPS = 5
# a colour is foreign where the other thing explains it at least 4x better than the concept does
FOREIGN = 0.2
SMOOTH = 0.02  # of the analysis map's long side: the window the back-projection is averaged over


def colour_index(rgb: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The photo at ``shape`` (the analysis map's) as one colour-bin index per pixel (uint16)."""
    small = cv2.resize(rgb, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)
    q = (small.astype(np.uint16) * LEVELS) // 256
    return (q[..., 0] * LEVELS + q[..., 1]) * LEVELS + q[..., 2]


def histogram(colours: np.ndarray, where: np.ndarray) -> np.ndarray | None:
    """The normalised colour histogram of the pixels ``where`` (None when there are none)."""
    n = int(where.sum())
    if not n:
        return None
    return np.bincount(colours[where].ravel(), minlength=LEVELS ** 3).astype(np.float32) / n


def concept_histogram(others: list[np.ndarray]) -> np.ndarray:
    """The concept's colours: the median per bin of the other photos' subject histograms, normalised (one
    other photo holding the same intruder does not vouch for it)."""
    concept = np.median(np.stack(others), axis=0)
    return concept / max(float(concept.sum()), 1e-9)


def concept_share(colours: np.ndarray, inside: np.ndarray, others: list[np.ndarray]) -> np.ndarray:
    """Per pixel of ``inside``, the probability that its colour is the concept's, averaged over a small
    window. This photo's subject is taken as a mixture of the concept (the other photos' histogram, their
    median per bin: one other photo holding the same intruder does not vouch for it) and one unknown other
    thing; a few EM steps estimate that thing's histogram and the mixture's weight."""
    concept = concept_histogram(others)
    c = colours[inside]
    f = concept[c]
    w = np.full(c.shape, 0.5, np.float32)
    for _ in range(EM_STEPS):
        other = np.bincount(c, weights=1.0 - w, minlength=LEVELS ** 3)
        other /= max(float(other.sum()), 1e-9)
        share = float(w.mean())
        g = other[c]
        w = (share * f / np.maximum(share * f + (1.0 - share) * g, 1e-12)).astype(np.float32)
    # the decision leaves the mixture's weight out: where this photo's subject is the concept alone, the
    # other thing's histogram comes out as the concept's and every pixel at 0.5, foreign nowhere
    prob = np.zeros(inside.shape, np.float32)
    prob[inside] = f / np.maximum(f + g, 1e-12)
    k = 2 * max(1, round(SMOOTH * max(inside.shape))) + 1
    return cv2.blur(prob, (k, k)) / np.maximum(cv2.blur(inside.astype(np.float32), (k, k)), 1e-6)


def foreign_pieces(colours: np.ndarray, labels: np.ndarray, others: list[np.ndarray]) -> np.ndarray:
    """Labels with the large foreign region of each object cut off as a new object (ids after the last).
    ``others``: the other photos' subject histograms."""
    inside = labels > 0
    if not inside.any() or not others:
        return labels
    smooth = concept_share(colours, inside, others)
    foreign = inside & (smooth < FOREIGN)
    areas = np.bincount(labels[inside].ravel())
    least = PART_OF_PHOTO * labels.size
    n, comp, stats, _ = cv2.connectedComponentsWithStats(foreign.astype(np.uint8), connectivity=8)
    out, next_id = labels.copy(), int(labels.max()) + 1
    for obj in range(1, len(areas)):
        # the foreign region must be one large coherent thing (a stump, a ghost), not patches of a subject
        # photographed in other light, scattered over it; the rest may be the small one (a small sailboat
        # before a large ghost). Its large pieces go together, so the rest is the concept's colours alone
        big = (stats[:, cv2.CC_STAT_AREA] >= max(least, PART_OF_LARGEST * areas[obj])) & \
            (np.bincount(comp[labels == obj], minlength=n) > 0)
        big[0] = False
        cut = big[comp] & (labels == obj)
        if not cut.any() or areas[obj] - int(cut.sum()) < least:
            continue  # nothing large is foreign, or all of it is (an object of its own already)
        out[cut] = next_id
        next_id += 1
    return out
