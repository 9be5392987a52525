"""The one containment rule for a path read from a file (an index row, a list, a manifest, a layout): resolved,
symbolic links included, it must lie inside the folder it belongs to; anything else (``../``, an absolute path,
a link pointing out, a loop) is refused with one line, and the reader leaves that entry out. So a tampered or
hostile file never makes gen4gen read, train on or ship a file from elsewhere on the machine.
"""
from __future__ import annotations

from pathlib import Path

from gen4gen.errors import ItemFailed


class Escaped(ItemFailed):
    """A path read from a file that leads outside its folder: that entry is refused."""


def contained(value: str | Path, folder: str | Path, what: str) -> Path:
    """``folder / value`` when it resolves inside ``folder`` (itself resolved, so a folder reached through a
    link is fine); else :class:`Escaped` naming ``what`` (where the path was read: "index.jsonl image")."""
    folder = Path(folder)
    path = folder / value  # an absolute value stays absolute and is judged as it is
    try:
        root = folder.resolve()
        target = path.resolve()
    except (OSError, RuntimeError, ValueError) as e:  # a link loop, a NUL byte, a name too long
        raise Escaped(f"{what} {str(value)!r}: cannot be resolved ({type(e).__name__}); refused") from None
    if not target.is_relative_to(root):
        raise Escaped(f"{what} {str(value)!r} leads outside {folder} (to {target}); refused: a path read from a "
                      f"file must stay inside its folder")
    return path
