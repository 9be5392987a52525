"""Content-based model search (ModelVerse): per-model feature moments in memory-mapped files and
ranked queries by text, image, sketch, another model or a mix."""
