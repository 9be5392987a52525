"""The background photo of each composition, chosen in s2 so that the layout can stand on its ground.

The scene comes from the user's folder: ``repaint.scene`` forces one, else the scenes that fit the concepts by
meaning (``layout/scene_fit.py``) take turns over the samples, each as often as it fits; a set that fits none well
still gets the best photo there is. Samples of a scene use its photos in turn. What is chosen goes into the plan
request (fixed scene phrases, the photo's horizon on the canvas) and into ``layout.json`` (``backdrop``).
"""
from __future__ import annotations

from dataclasses import replace

from gen4gen.errors import UserError
from gen4gen.hashing import stable_hash
from gen4gen.layout.scene_fit import SceneFit, minilm_embed
from gen4gen.layout.scenes import scene_words
from gen4gen.layout.schema import PlanRequest
from gen4gen.repaint.photo_crop import canvas_horizon
from gen4gen.repaint.photos import Library, library_for, scene_phrase
from gen4gen.stage_settings import IOSettings, RepaintSettings

HORIZON_RANGE = (0.05, 0.88)  # a planner horizon outside it leaves no ground, or no room above the objects


def find_scene(name: str, scenes: list[str]) -> str | None:
    """The scene ``name`` names: exactly, or by its words when only one scene has them ("living room" =
    "my_living_room", "beach" = "Beach 2" unless there is also a "Beach 1")."""
    if name in scenes:
        return name
    want = scene_words(scene_phrase(name))
    found = [s for s in scenes if scene_words(scene_phrase(s)) == want]
    return found[0] if len(found) == 1 else None


class BackdropChooser:
    def __init__(self, library: Library | None, fit: SceneFit | None = None, forced: str | None = None):
        self.library = library
        self.fit = fit or SceneFit(minilm_embed())
        self.forced = None
        if forced and library is not None:
            self.forced = find_scene(forced, sorted(library.scenes))
            if self.forced is None:
                folder = library.root / forced
                why = f"{folder} holds no usable photo (lines above)" if folder.is_dir() else \
                    f"{library.root} has no such scene"
                raise UserError(f"repaint.scene={forced!r}: {why}; its scenes with photos are "
                                f"{', '.join(sorted(library.scenes))}")
        elif forced:  # procedural backgrounds: the phrase itself
            self.forced = scene_phrase(forced) if not forced.startswith(("in ", "on ", "at ")) else forced

    @classmethod
    def from_settings(cls, repaint: RepaintSettings, io: IOSettings, cache_dir: str,
                      log=None) -> "BackdropChooser | None":
        library = library_for(repaint, io, log)
        if library is None and not repaint.scene:
            return None
        return cls(library, SceneFit(minilm_embed(cache_dir)), repaint.scene)

    def fingerprint(self) -> dict:
        """What the layouts depend on: the forced scene and every photo's scene, size, horizon and light."""
        photos = [] if self.library is None else sorted(
            (str(p.path), p.scene, list(p.size), p.horizon, p.light) for p in self.library.photos)
        return {"scene": self.forced, "photos": photos}

    def apply(self, request: PlanRequest) -> PlanRequest:
        """``request`` with its scenes fixed and, with photos, its photo and horizon."""
        concepts = [c.name for c in request.concepts]
        if self.library is None:
            return replace(request, scenes=(self.forced,))
        scenes = sorted(self.library.scenes)
        ranked_scores = dict(self.fit.rank(concepts, scenes))
        if self.forced:
            scene, ranked = self.forced, [self.forced] + [s for s, _ in self.fit.rank(concepts, scenes)]
            nth = int(request.sample)
        else:
            scene, ranked, nth = self.fit.choose(concepts, scenes, int(request.sample))
        photos = self.library.scenes[scene]
        turn = (stable_hash(f"{'+'.join(concepts)}/{scene}") + nth) % len(photos)  # the scene's photos in turn
        photo = photos[turn]
        horizon = canvas_horizon(photo, tuple(request.size))
        phrases = [scene_phrase(s) for s in dict.fromkeys([scene, *ranked])][:3]
        backdrop = {**photo.describe(), "chosen_by": "repaint.scene" if self.forced else "fit",
                    "fit": ranked_scores.get(scene), "canvas_horizon": round(horizon, 4)}
        return replace(request, scenes=tuple(phrases), backdrop=backdrop,
                       horizon=min(max(horizon, HORIZON_RANGE[0]), HORIZON_RANGE[1]))


__all__ = ["BackdropChooser", "find_scene", "HORIZON_RANGE"]
