"""Issue 14 #11: a stage with nothing to do because of upstream failures prints the first upstream reasons,
not just "check the failures.jsonl"."""
from __future__ import annotations

import pytest
from PIL import Image

from gen4gen.errors import UserError
from gen4gen.stages import s2_compose
from tests.conftest import make_cfg
from tests.helpers.pipeline_run import cli
from tests.helpers.trees import fake_s1


def photo(path, seed: int) -> None:
    from skimage import data

    img = Image.fromarray([data.chelsea(), data.coffee(), data.astronaut()][seed % 3])
    img.thumbnail((160, 160))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def run_all(tmp_path):
    return cli(tmp_path, "stage=all", "segmenter=grabcut", "compose.num_samples=1", "compose.size=[128,128]",
               check=False)


@pytest.mark.slow
def test_photos_directly_in_the_scene_folder(tmp_path):
    photo(tmp_path / "src" / "pets" / "cat.jpg", 0)
    photo(tmp_path / "src" / "pets" / "dog.jpg", 1)
    result = run_all(tmp_path)
    assert result.returncode == 2
    [line] = [ln for ln in result.stderr.splitlines() if ln.startswith("s2: no usable")]
    assert "no usable s1 cut-outs" in line
    assert "upstream failures: s1 pets/cat.jpg: a photo outside a concept folder: photos go in <scene>/<concept>/; " \
           "s1 pets/dog.jpg: a photo outside a concept folder" in line
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_scene_with_one_concept(tmp_path):
    photo(tmp_path / "src" / "solo" / "cat" / "a.jpg", 0)
    photo(tmp_path / "src" / "solo" / "cat" / "b.jpg", 2)
    result = run_all(tmp_path)
    assert result.returncode == 2
    [line] = [ln for ln in result.stderr.splitlines() if ln.startswith("s3: nothing")]
    assert line.startswith("s3: nothing to repaint: no s2 composition in stages/s2_object_compositions; "
                           "upstream failures: s2 solo: scene 'solo' has 1 usable concept(s) (cat); "
                           "compose.min_objects=2 needs at least 2")


def test_only_empty_masks_says_so(tmp_path):
    fake_s1(tmp_path / "stages", {"pets": {"cat": 2, "dog": 1}}, empty={("pets", "cat"), ("pets", "dog")})
    with pytest.raises(UserError, match=r"s1_segmented_foreground: 3 cut-out\(s\) with an empty mask \(s1 flag 'empty'\)$"):
        s2_compose.run(make_cfg(tmp_path, "stage=s2"))
