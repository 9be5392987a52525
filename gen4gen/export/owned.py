"""What an export owns in its dataset folder: the files it wrote, listed with size and hash in
``.gen4gen-export.json`` (written last). A rerun replaces the folder only when it holds exactly those files,
unchanged; a folder that is not one of its datasets (no record, a file of someone else's, a file edited since)
is refused with one line before anything is written, so the export never deletes or overwrites what it did not
write. The old dataset is removed file by file from the record, never as a whole tree.

Two things other steps of the workflow add to a dataset are its own too, and a rerun carries them into the new
dataset (``KEPT``): ``split.json`` (``python -m gen4gen.bench.split``: the held-out concept sets) and the class
images ``customdiffusion/train.sh`` generates for prior preservation (hours of GPU time to make again).
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from gen4gen.errors import UserError
from gen4gen.hashing import file_fingerprint
from gen4gen.io import write_atomic

RECORD = ".gen4gen-export.json"
FORMAT = "gen4gen-export/1"
SHOWN = 3  # foreign paths named in the refusal
# added to a dataset by the workflow's own steps, kept across re-exports: a file, or a folder with all below it
KEPT = ("split.json", "customdiffusion/class_images")


def kept(rel: str) -> bool:
    """``rel`` (posix, relative to the dataset) is one of ``KEPT`` or lies inside one of its folders."""
    return any(rel == k or rel.startswith(k + "/") for k in KEPT)


class OwnedFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    size: int
    blake2b: str  # no mtimes: the same items give the same bytes, the record included


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: Literal["gen4gen-export/1"] = FORMAT
    files: dict[str, OwnedFile]  # posix path relative to the dataset folder

    @classmethod
    def read(cls, folder: Path) -> "Record | None":
        try:
            return cls.model_validate_json((folder / RECORD).read_bytes())
        except (OSError, ValidationError, ValueError):
            return None


def write_record(folder: Path) -> None:
    """List every file now under ``folder`` (the freshly built dataset) as the export's own."""
    files = {}
    for path in sorted(_entries(folder)):
        files[path.relative_to(folder).as_posix()] = OwnedFile(size=path.lstat().st_size,
                                                             blake2b=file_fingerprint(path))
    write_atomic(folder / RECORD, (Record(files=files).model_dump_json(indent=1) + "\n").encode("utf-8"))


def foreign(folder: Path) -> list[str] | None:
    """What in ``folder`` the export did not write or that changed since (relative paths, sorted); None when
    the folder has no readable record at all (not one of its datasets)."""
    record = Record.read(folder)
    if record is None:
        return None
    dirs = {p for name in record.files for p in Path(name).parents}
    out = []
    for path in _entries(folder, with_dirs=True):
        rel = path.relative_to(folder).as_posix()
        if rel == RECORD or kept(rel) or any(k.startswith(rel + "/") for k in KEPT):  # a KEPT entry or a folder above one
            continue
        if path.is_dir() and not path.is_symlink():
            if Path(rel) not in dirs:
                out.append(rel + "/")
            continue
        own = record.files.get(rel)
        if own is None or path.is_symlink() or not path.is_file() or path.stat().st_size != own.size or \
                file_fingerprint(path) != own.blake2b:
            out.append(rel)
    return sorted(out)


def unchanged(folder: Path) -> bool:
    """``folder`` holds exactly what its record lists, each file as written: nothing added, edited or removed (the
    export's done check: such a dataset needs no rebuild)."""
    record = Record.read(folder)
    return record is not None and foreign(folder) == [] and all((folder / name).is_file() for name in record.files)


def check_replaceable(final: Path, option: str) -> None:
    """``final`` may be (re)written: absent, empty, or one of the export's own datasets, untouched. Else one
    line naming what is there and ``option`` (how to write elsewhere)."""
    if not os.path.lexists(final):
        return
    if final.is_symlink() or not final.is_dir():
        why = "it is a symbolic link" if final.is_symlink() else "it is a file"
    elif not any(final.iterdir()):
        return
    else:
        extra = foreign(final)
        if extra == []:
            return
        why = f"it has no {RECORD} (the list of files an export wrote)" if extra is None else \
            f"it holds {len(extra)} file(s) the export did not write or that changed since it did: " + \
            ", ".join(extra[:SHOWN]) + (", ..." if len(extra) > SHOWN else "")
    raise UserError(f"{final} is not a dataset this export wrote, so nothing there is replaced ({why}); "
                    f"export elsewhere with {option}, or move that folder away")


def swap(tmp: Path, final: Path, option: str) -> None:
    """Put the new dataset (``tmp``, recorded) in place; the old one goes only once the new one is there,
    and only the files it lists (checked again here: something may have been added while the export ran)."""
    check_replaceable(final, option)
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    if os.path.lexists(final):
        os.replace(final, old)
    os.replace(tmp, final)
    carry_kept(old, final)  # once the new one is in place: a failure before leaves them in the old folder, never lost
    remove_owned(old)


def carry_kept(old: Path, new: Path) -> None:
    """Move the ``KEPT`` entries of the old dataset into the new one (same file system: renames)."""
    for rel in KEPT:
        src, dst = old / rel, new / rel
        if os.path.lexists(src) and not os.path.lexists(dst):
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)


def remove_owned(folder: Path) -> None:
    """Delete the recorded, unchanged files of an old dataset, then its folders once empty; anything else stays."""
    if not folder.is_dir() or folder.is_symlink():
        return
    record = Record.read(folder)
    if record is None:
        if not any(folder.iterdir()):
            folder.rmdir()
        return
    extra = set(foreign(folder) or ())
    for name in record.files:
        if name not in extra:
            (folder / name).unlink(missing_ok=True)
    (folder / RECORD).unlink(missing_ok=True)
    for path in sorted(_entries(folder, with_dirs=True), key=lambda p: -len(p.parts)):
        if path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
            path.rmdir()
    if not any(folder.iterdir()):
        folder.rmdir()


def clear_leftovers(datasets: Path, name: str) -> None:
    """The hidden folders an export that was killed left: a half-built dataset (only ever written by an
    export) or an old one not yet removed (removed by its record, so a file added to it stays)."""
    if not datasets.is_dir():
        return
    for path in datasets.iterdir():
        m = re.fullmatch(rf"\.{re.escape(name)}\.(partial|old)-\d+", path.name)
        if not m or path.is_symlink() or not path.is_dir():
            continue
        if m.group(1) == "partial":
            shutil.rmtree(path, ignore_errors=True)
        else:
            if (datasets / name).is_dir() and not (datasets / name).is_symlink():  # killed between the two renames
                carry_kept(path, datasets / name)
            remove_owned(path)


def _entries(folder: Path, with_dirs: bool = False):
    """Every file (and folder) under ``folder``, without following symbolic links."""
    for top, dirnames, filenames in os.walk(folder):
        base = Path(top)
        for d in list(dirnames):
            if (base / d).is_symlink():
                dirnames.remove(d)
                filenames.append(d)  # a link is an entry of its own, never walked into
            elif with_dirs:
                yield base / d
        for f in filenames:
            yield base / f

