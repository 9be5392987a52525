"""Every file one step writes and a later step (or the bench) reads, as a pydantic model with one loader that turns
anything malformed into one line naming the file and the field (``base.explain``):

- ``stage``: the stage tree (s1..s4 ``meta.json``, ``layout.json``, ``captions.json``);
- ``dataset``: an exported dataset (``mycanvas/index.jsonl`` rows, ``customdiffusion/concepts_list.json``);
- ``run``: a train run (``meta.json``, ``personalization.json``);
- ``roster``: roster entries (``conf/roster/*.yaml`` written by users, ``roster_entry.yaml`` written by train);
- ``bench``: the bench's per-image records (``images/<model>/<set>/<prompt>_s<seed>.json``).
"""
from gen4gen.artefacts.base import Artefact, Box, Name, Number, Record, Size, Text, explain
from gen4gen.artefacts.bench import ImageRecord, read_records
from gen4gen.artefacts.dataset import CONCEPTS_LIST, ConceptsListEntry, MyCanvasRow, read_concepts_list
from gen4gen.artefacts.roster import ROSTER_ENTRY, CostSpec, LoraSpec, Roster, RosterEntry, read_roster_entry
from gen4gen.artefacts.run import FORMAT, MANIFEST, TRAINER_NAMES, Manifest, TokenFile, TrainMeta
from gen4gen.artefacts.stage import (META_MODELS, Captions, Layout, LayoutObject, S1Meta, S2Meta, S3Meta, S4Meta,
                                     StageMeta, stage_path, stage_rel)

__all__ = ["Number", "Text", "Name", "Box", "Size", "Record", "Artefact", "explain", "StageMeta", "S1Meta",
           "LayoutObject", "Layout", "S2Meta", "S3Meta", "Captions", "S4Meta", "META_MODELS", "stage_rel",
           "stage_path", "MyCanvasRow", "ConceptsListEntry", "CONCEPTS_LIST", "read_concepts_list", "TrainMeta",
           "Manifest", "TokenFile", "MANIFEST", "FORMAT", "TRAINER_NAMES", "Roster", "RosterEntry", "LoraSpec",
           "CostSpec", "ROSTER_ENTRY", "read_roster_entry", "ImageRecord", "read_records"]
