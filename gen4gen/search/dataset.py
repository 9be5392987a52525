"""An exported dataset as a search index's samples (``search.index=outputs/datasets/<name>``, or one of its format
folders such as ``imagefolder/``): not five format folders as five models, but what it is. ``search.dataset_by``:
``concept`` (default) makes one entry per concept whose samples are the scenes showing it; ``dataset`` makes the
whole dataset one model's samples. Captions are the scenes' detailed captions, read through the export's own
row model (``mycanvas/index.jsonl``, else ``imagefolder/metadata.jsonl``); every image path is contained
in the dataset. The index goes to ``<outputs>/search/<dataset name>/``, never into the dataset.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from pydantic import BaseModel, ConfigDict, StrictStr, ValidationError

from gen4gen.contain import Escaped, contained
from gen4gen.errors import ItemFailed, UserError
from gen4gen.artefacts import MyCanvasRow

log = logging.getLogger(__name__)
GROUPS = ("concept", "dataset")
INDEX = Path("mycanvas") / "index.jsonl"
METADATA = Path("imagefolder") / "metadata.jsonl"  # beside images/ (gen4gen.export.imagefolder)
FORMAT_FOLDERS = ("mycanvas", "customdiffusion", "imagefolder", "coco", "webdataset", "kohya", "gallery", "images")


class ImagefolderRow(BaseModel):
    """The fields of an exported ``imagefolder/metadata.jsonl`` row that search reads (``file_name`` is
    ``images/<key>.png``; ``caption_plain`` is the detailed caption, as in ``mycanvas``)."""
    model_config = ConfigDict(extra="ignore")
    file_name: StrictStr
    caption_plain: StrictStr = ""
    concepts: list[StrictStr] = []


def dataset_root(path: Path) -> Path | None:
    """The exported dataset ``path`` is, or is a format folder of (``imagefolder/``, ``imagefolder/images/``);
    None for any other folder."""
    path = Path(path)
    for candidate in (path, path.parent, path.parent.parent):
        if (candidate / INDEX).is_file() or (candidate / METADATA).is_file():
            inside = path.relative_to(candidate).parts
            if all(p in FORMAT_FOLDERS for p in inside):
                return candidate
    return None


def default_index_dir(dataset: Path, outputs_dir: Path) -> Path:
    return Path(outputs_dir) / "search" / dataset.name


def dataset_samples(dataset: Path, by: str) -> tuple[dict[str, list[Path]], dict[Path, str]]:
    """Entry name -> its images, and image -> its caption."""
    if by not in GROUPS:
        raise UserError(f"search.dataset_by={by!r}: choose one of {', '.join(GROUPS)}")
    rows, problems = _rows(dataset)
    for p in problems[:5]:
        log.warning("search: %s", p)
    if len(problems) > 5:
        log.warning("search: %d more rows of %s left out", len(problems) - 5, dataset)
    models: dict[str, list[Path]] = {}
    captions: dict[Path, str] = {}
    for image, concepts, caption in rows:
        for name in (concepts if by == "concept" else [dataset.name]):
            models.setdefault(name, []).append(image)
        if caption:
            captions[image] = caption
    if not models:
        raise UserError(f"dataset {dataset}: no image with its captions to index"
                        + (f" ({problems[0]})" if problems else ""))
    return {k: sorted(set(v)) for k, v in sorted(models.items())}, captions


def _rows(dataset: Path) -> tuple[list[tuple[Path, list[str], str]], list[str]]:
    rows, problems = [], []
    source = dataset / (INDEX if (dataset / INDEX).is_file() else METADATA)
    folder = source.parent
    for n, line in enumerate(source.read_text("utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            if source.name == INDEX.name:
                row = MyCanvasRow.parse(data, INDEX.name)
                image, concepts, caption = row.image, list(row.concepts), row.captions.get("detailed") or ""
                if image is None:
                    raise ItemFailed("image: missing")
            else:
                row = ImagefolderRow.model_validate(data)
                image, concepts, caption = row.file_name, list(row.concepts), row.caption_plain
            path = contained(image, folder, f"{source.name} image")
        except (ValueError, RecursionError, ItemFailed, ValidationError, Escaped) as e:
            problems.append(f"{source}:{n}: left out ({str(e).splitlines()[0]})")
            continue
        if not concepts:
            problems.append(f"{source}:{n}: left out (no concepts)")
            continue
        rows.append((path, concepts, " ".join(str(caption).split())))
    return rows, problems
