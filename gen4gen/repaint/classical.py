"""The embedded s3 backend (CPU, no weights): concepts placed over the background by their own soft alpha (a
matte's edge as it is, its colour s1's estimated foreground; a hard mask feathered; a segmenter's faint haze far
outside faded), optional Poisson blending, colour harmonisation, a soft contact shadow on the ground and, each
switchable, re-exposure for the place (``repaint/exposure.py``), matched light, light wrap and the photo's grain
(``repaint/light.py``).

Only the repaint band (``job.repaint > 0``) and the background change, and the concepts' own colours where
re-exposure, matched light or grain is on (one gain, shift, blur and noise per object); with those off concept
interiors stay bit-exact. Either way s2's instance masks and boxes still hold for the s3 image.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Annotated

import cv2
import numpy as np
from pydantic import Field

from gen4gen.backends import typed_settings
from gen4gen.repaint import RepaintJob, keep_concepts
from gen4gen.repaint.exposure import expose
from gen4gen.repaint.light import light_match, soften

Share = Annotated[float, Field(ge=0, le=1)]
NonNegative = Annotated[float, Field(ge=0)]


class ClassicalInpainter:
    name = "classical"
    thread_safe = True  # no state between calls: the stage may run items in parallel threads

    batch_size = 1  # items are painted one by one (the stage runs them in threads)
    min_component = 0.002  # image fraction: smaller blobs cast no shadow

    @typed_settings
    def __init__(self, *, feather: NonNegative, harmonize: Share, band: Annotated[int, Field(ge=1)], poisson: bool,
                 shadow: Share, shadow_squash: NonNegative, standing_min_y: Share, match_light: Share, wrap: Share,
                 grain: bool, shadow_cast: float, matte_width: NonNegative, expose: Share,
                 expose_max_gain: Annotated[float, Field(ge=1)], haze: NonNegative):
        """The arguments are conf/inpainter/classical.yaml's (the yaml says what each one does)."""
        self.feather = feather  # px over which a concept's alpha ramps from 0 at its outline to 1
        # px: a concept whose soft edge (alpha 0.05-0.95) is on average this wide has a matte, kept unfeathered
        self.matte_width = matte_width
        self.haze = haze  # x an object's size: soft alpha further out than this fades out (0: kept)
        self.harmonize = harmonize  # 0: concept colours as they are; 1: band statistics = the background's
        self.band = band  # px: width of the rings whose Lab statistics are matched
        self.poisson = poisson  # cv2.seamlessClone (gradient-domain) for the band
        self.shadow = shadow  # opacity of the contact shadow; 0 = none
        self.shadow_squash = shadow_squash  # shadow height / object height
        self.standing_min_y = standing_min_y  # objects whose bottom is below this fraction of H stand
        self.match_light = match_light  # 0..1: share of the brightness / colour-cast gap to the place closed
        self.wrap = wrap  # 0..1: the background's light wrapped over the concept's outer edge
        self.grain = grain  # the photo's blur and noise next to the concept applied to it
        self.shadow_cast = shadow_cast  # shadow offset away from the light, x the object's width
        self.expose = expose  # 0..1: share (in stops) of the re-exposure for the photo (repaint/exposure.py)
        self.expose_max_gain = expose_max_gain  # at most this factor brighter or darker (4: two stops)

    def describe(self) -> dict:
        return {"backend": self.name, "feather": self.feather, "harmonize": self.harmonize, "band": self.band,
                "poisson": self.poisson, "shadow": self.shadow, "match_light": self.match_light, "wrap": self.wrap,
                "grain": self.grain, "expose": self.expose}

    def __call__(self, jobs: list[RepaintJob]) -> list[np.ndarray]:
        return [self.repaint(job) for job in jobs]

    def repaint(self, job: RepaintJob) -> np.ndarray:
        alpha = job.alpha.astype(np.float32)
        solid = (alpha > 0.5).astype(np.uint8)
        # px outside the concepts, and per pixel its nearest concept blob (`near`), so a grey dog on the left and an
        # orange cat on the right each keep their own edge, haze and surroundings
        outside, near = cv2.distanceTransformWithLabels(1 - solid, cv2.DIST_L2, 3, labelType=cv2.DIST_LABEL_CCOMP)
        bg = job.background
        if self.shadow > 0 and job.ground is not None:
            bg = self.darken(bg, self.shadow * self.contact_shadow(solid, job.ground, job.light))
        if self.expose > 0 and job.exposures and solid.any():
            job = replace(job, rgb=expose(job.rgb, alpha, solid, bg, job.exposures, self.expose, self.expose_max_gain))
        hazed = False
        if (self.match_light > 0 or self.wrap > 0 or self.grain) and solid.any():
            rgb, blur = light_match(job.rgb, alpha, solid, bg, self.band, self.match_light, self.wrap, self.grain,
                                    job.seed)
            if blur.any():  # blurred to the photo's softness: the outline as soft (haze faded first, or it cuts it)
                if self.haze > 0:
                    alpha, hazed = alpha * self.haze_fade(solid, outside, near), True
                rgb, alpha = soften(rgb, alpha, blur)
            job = replace(job, rgb=rgb)
        # the concept shows (partly) changed only where it has alpha and may be repainted: work there only
        visible = (job.repaint > 0) & (alpha > 0)
        comp = bg.copy()
        if visible.any():
            inside = cv2.distanceTransform(solid, cv2.DIST_L2, 3)  # px to the outline, inside the concepts
            fg = job.rgb[visible].astype(np.float32)
            if self.harmonize > 0:
                inner, outer = (inside > 0) & (inside <= self.band), (outside > 0) & (outside <= self.band)
                fg = self.harmonise(fg, near[visible], concept=(_lab(job.rgb[inner]), near[inner]),
                                    surround=(_lab(bg[outer]), near[outer]))
            a = alpha[visible]
            if self.feather > 0:
                # a binary mask (GrabCut, a thresholded one) gets a soft edge: ramped inward only, as an outward
                # feather would smear the cut-out's black surround into the scene. A matte's own soft edge is the
                # photograph's (its colour the estimated foreground): ramping it too shows the background
                # through the subject's rim, a dark or pale line where the photo had none
                hard = ~self.matted(alpha, inside, near)[near[visible]]
                a = np.where(hard, np.minimum(a, np.clip(inside[visible] / self.feather, 0.0, 1.0)), a)
            if self.haze > 0 and not hazed:
                a = a * self.haze_fade(solid, outside, near)[visible]
            a = a[:, None]
            mixed = fg * a + bg[visible].astype(np.float32) * (1.0 - a)
            comp[visible] = np.clip(mixed + 0.5, 0, 255).astype(np.uint8)
        if self.poisson and solid.any():
            comp = self.seamless(comp, bg, solid)
        return keep_concepts(comp, job.rgb, alpha, job.repaint, under=bg)

    def haze_fade(self, solid: np.ndarray, outside: np.ndarray, near: np.ndarray) -> np.ndarray:
        """HxW 0..1: 1 up to ``haze`` of each object's size (square root of its solid area) outside its silhouette,
        falling to 0 at twice that. A photograph's soft edge (defocus, motion, hair) spans a small share of the
        subject; faint alpha further out is the segmenter's haze over the old background (a grey veil beside a
        motorcycle's handlebars), and its estimated foreground colour is no colour the subject has."""
        n = int(near.max()) + 1
        # at least 2 px: a resampled edge, however sharp, spreads over a pixel or two
        reach = np.maximum(self.haze * np.sqrt(np.bincount(near[solid > 0], minlength=n)), 2.0)[near]
        return np.clip(2.0 - outside / reach, 0.0, 1.0)

    def matted(self, alpha: np.ndarray, inside: np.ndarray, near: np.ndarray) -> np.ndarray:
        """Per object label of ``near``: whether its soft edge (alpha 0.05-0.95, px counted per px of outline) is
        at least ``matte_width`` wide on average."""
        n = int(near.max()) + 1
        outline = np.bincount(near[(inside > 0) & (inside <= 1)], minlength=n)
        soft = np.bincount(near[(alpha > 0.05) & (alpha < 0.95)], minlength=n)
        return soft >= self.matte_width * np.maximum(outline, 1)

    @staticmethod
    def darken(image: np.ndarray, amount: np.ndarray) -> np.ndarray:
        """``image * (1 - amount)``, computed only inside the bounding box where ``amount`` > 0."""
        ys, xs = np.nonzero(amount > 1e-3)
        if len(ys) == 0:
            return image
        box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
        out = image.copy()
        out[box] = np.clip(image[box] * (1.0 - amount[box])[..., None] + 0.5, 0, 255).astype(np.uint8)
        return out

    def harmonise(self, fg: np.ndarray, labels: np.ndarray, *, concept: tuple, surround: tuple) -> np.ndarray:
        """Move each object's pixels ``fg`` (Nx3 RGB, object ``labels``) so that its Lab mean/std over its
        inner edge band go toward those of the background ring around it, by ``harmonize`` (a partial
        Reinhard transfer). ``concept`` / ``surround`` are (Lab pixels, labels) of the two rings."""
        n = int(max(labels.max(initial=0), concept[1].max(initial=0), surround[1].max(initial=0))) + 1
        mu_c, sd_c, n_c = _group_stats(*concept, n)
        mu_b, sd_b, n_b = _group_stats(*surround, n)
        t = self.harmonize
        mu_t, sd_t = mu_c + t * (mu_b - mu_c), sd_c + t * (sd_b - sd_c)
        scale = np.clip(sd_t / sd_c, 0.5, 2.0)
        ok = (n_c >= 16) & (n_b >= 16)  # too few pixels for statistics: leave that object as it is
        scale[~ok], mu_t[~ok], mu_c[~ok] = 1.0, 0.0, 0.0
        moved = (_lab(fg) - mu_c[labels]) * scale[labels] + mu_t[labels]
        rgb_out = cv2.cvtColor(moved.astype(np.float32)[:, None, :], cv2.COLOR_LAB2RGB)[:, 0, :]
        return np.clip(rgb_out * 255.0, 0, 255)

    def contact_shadow(self, solid: np.ndarray, ground: float = 0.0, light: float = 0.0) -> np.ndarray:
        """Float HxW 0..1: each standing object's silhouette squashed flat at its feet, moved away from the
        ``light`` (-1 left .. 1 right), blurred; only on the ground (rows below ``ground``, fraction of H) and
        only under objects whose feet are on it (a close-up cut by the bottom edge casts none)."""
        h, w = solid.shape
        shadow = np.zeros((h, w), np.float32)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(solid, connectivity=8)
        sigma = 1.0
        for i in range(1, n):
            x, y, bw, bh, area = (int(v) for v in stats[i])
            feet = y + bh
            if area < self.min_component * h * w or feet < max(self.standing_min_y, ground) * h or feet >= h - 1:
                continue
            sh = max(2, int(round(bh * self.shadow_squash)))
            foot = cv2.resize((labels[y:y + bh, x:x + bw] == i).astype(np.float32), (bw, sh),
                              interpolation=cv2.INTER_AREA)
            top = min(h, feet - sh // 2)  # centred on the feet line: half behind the object, half in front
            rows = min(sh, h - top)
            x0 = int(round(x - light * self.shadow_cast * bw))  # away from the light
            c0, c1 = max(0, x0), min(w, x0 + bw)
            if rows > 0 and c1 > c0:
                region = shadow[top:top + rows, c0:c1]
                np.maximum(region, foot[:rows, c0 - x0:c1 - x0], out=region)
            sigma = max(sigma, bw * 0.03)
        shadow[:max(0, int(np.ceil(ground * h)))] = 0.0  # never on the sky or a wall
        ys, xs = np.nonzero(shadow)
        if len(ys) == 0:
            return shadow
        pad = int(3 * sigma) + 1  # blur only the region the shadow can reach: a full-frame blur dominates
        box = (slice(max(0, ys.min() - pad), ys.max() + pad + 1), slice(max(0, xs.min() - pad), xs.max() + pad + 1))
        shadow[box] = np.clip(cv2.GaussianBlur(shadow[box], (0, 0), sigma), 0.0, 1.0)
        shadow[:max(0, int(np.ceil(ground * h)))] = 0.0  # the blur must not carry it above the ground line
        return shadow

    @staticmethod
    def seamless(comp: np.ndarray, bg: np.ndarray, solid: np.ndarray) -> np.ndarray:
        """Poisson-blend the composite's concept region into the background (OpenCV NORMAL_CLONE)."""
        mask = cv2.dilate(solid, np.ones((5, 5), np.uint8)) * 255
        mask[:2], mask[-2:], mask[:, :2], mask[:, -2:] = 0, 0, 0, 0  # seamlessClone needs a margin
        if not mask.any():
            return comp
        x, y, bw, bh = cv2.boundingRect(mask)
        center = (x + bw // 2, y + bh // 2)  # OpenCV places the ROI at center - size // 2 = (x, y)
        return cv2.seamlessClone(comp, bg, mask, center, cv2.NORMAL_CLONE)


def _lab(pixels: np.ndarray) -> np.ndarray:
    """Nx3 RGB 0..255 -> Nx3 Lab (only the pixels that matter: full-frame float conversions are slow)."""
    return cv2.cvtColor((pixels / np.float32(255.0)).astype(np.float32)[:, None, :], cv2.COLOR_RGB2LAB)[:, 0, :]


def _group_stats(values: np.ndarray, labels: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-label mean, std (+epsilon) and count of Nx3 ``values``, vectorised with bincount."""
    count = np.bincount(labels, minlength=n).astype(np.float64)
    denom = np.maximum(count, 1.0)[:, None]
    s1 = np.stack([np.bincount(labels, values[:, k], n) for k in range(3)], 1) / denom
    s2 = np.stack([np.bincount(labels, values[:, k].astype(np.float64) ** 2, n) for k in range(3)], 1) / denom
    return s1, np.sqrt(np.maximum(s2 - s1 ** 2, 0.0)) + 1e-3, count
