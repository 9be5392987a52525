"""Test helpers: ``tree`` writes stage folders through the real artefact models (``StageTree``) and
draws the synthetic shapes they hold; ``trees`` holds the canned trees the tests start from."""
