"""The typed view of the stage tree (gen4gen.tree) and the concept registry (gen4gen.concepts): what later
stages read, read once, and tokens that never move."""
import json
import sys
from collections import Counter
from pathlib import Path

import pytest

from gen4gen.artefacts import Layout, S1Meta, S3Meta
from gen4gen.concepts import ConceptRegistry, record_concepts, registry_mismatch
from gen4gen.errors import UserError
from gen4gen.paths import STAGE_DIRS
from gen4gen.stages import export, s2_compose, s4_caption
from gen4gen.tree import TreeView
from tests.helpers.trees import fake_s1, make_pipeline

_OPENS: list[str] | None = None  # while a test records: every file opened


def _hook(event, args):
    if event == "open" and _OPENS is not None and isinstance(args[0], (str, Path)):
        _OPENS.append(str(args[0]))


sys.addaudithook(_hook)  # audit hooks cannot be removed: this one records only inside ``opened``


def opened(fn) -> Counter:
    """How often ``fn()`` opened each meta.json / layout.json / captions.json."""
    global _OPENS
    _OPENS = []
    try:
        fn()
    finally:
        seen, _OPENS = _OPENS, None
    return Counter(p for p in seen if p.endswith(("meta.json", "layout.json", "captions.json")))


def test_the_view_gives_current_items_typed_and_reads_each_file_once(tmp_path):
    info = make_pipeline(tmp_path)
    tree = TreeView(info["stages"])
    counts = opened(lambda: [tree.layout(e.meta.s2_dir(tree.stages_dir)) for e in tree.items("s3").values()]
                    + [tree.layout(e.meta.s2_dir(tree.stages_dir)) for e in tree.items("s3").values()]
                    + [tree.items("s1"), tree.items("s2")])
    assert sorted(tree.items("s3")) == sorted(info["finals"])
    assert all(isinstance(e.meta, S3Meta) for e in tree.items("s3").values())
    assert all(isinstance(e.meta, S1Meta) for e in tree.items("s1").values())
    assert counts and max(counts.values()) == 1  # asked twice, read once
    s3_metas = [p for p in counts if f"/{STAGE_DIRS['s3']}/" in p]
    assert len(s3_metas) == len(info["finals"])
    layout = tree.layout(next(iter(tree.items("s3").values())).meta.s2_dir(tree.stages_dir))
    assert isinstance(layout, Layout) and layout.objects[0].concept in {"cat", "dog", "plant"}


def test_each_upstream_file_is_opened_at_most_once_per_stage_run(tmp_path, cfg_factory):
    make_pipeline(tmp_path)
    cfg = cfg_factory("stage=s4")
    own4 = f"/{STAGE_DIRS['s4']}/"
    s4 = opened(lambda: s4_caption.run(cfg))
    assert {p: n for p, n in s4.items() if n > 1 and own4 not in p} == {}
    assert any(STAGE_DIRS["s1"] in p for p in s4)  # s3's currency rests on s1's hashes: read, once
    ex = opened(lambda: export.run(cfg_factory("stage=export")))
    # the dataset's own files are written, then read once more for the export's ownership record (owned.py)
    assert {p: n for p, n in ex.items() if n > 1 and "/outputs/datasets/" not in p} == {}
    assert sum(p.endswith("layout.json") and "/stages/" in p for p in ex) == 2  # the two compositions


def test_a_bad_meta_is_unreadable_not_current_and_a_stale_one_is_counted(tmp_path):
    info = make_pipeline(tmp_path)
    s3 = info["stages"] / STAGE_DIRS["s3"]
    first, second = sorted(info["finals"])
    (s3 / first / "meta.json").write_text('{"id": 3}')
    tree = TreeView(info["stages"])
    assert list(tree.items("s3")) == [second]
    folder, reason = tree.unreadable("s3")[first]
    assert folder == s3 / first and reason.startswith("s3 meta.json: ")
    assert tree.stale("s3") == 0


def test_tokens_never_move_when_concepts_come_and_go(tmp_path):
    reg = record_concepts(tmp_path, {"dog": "pets", "cat": "pets", "plant": "kitchen"})
    assert reg.tokens() == {"cat": "<new1>", "dog": "<new2>", "plant": "<new3>"}
    data = (tmp_path / "concepts.json").read_bytes()
    assert record_concepts(tmp_path, {"cat": "pets"}) == reg  # nothing new: the file is not rewritten
    assert (tmp_path / "concepts.json").read_bytes() == data
    # the dog goes, a bird and an ant come: ant sorts first but the dog's number is never reused
    reg = record_concepts(tmp_path, {"cat": "pets", "plant": "kitchen", "bird": "park", "ant": "park"})
    assert reg.tokens() == {"cat": "<new1>", "dog": "<new2>", "plant": "<new3>", "ant": "<new4>", "bird": "<new5>"}
    assert reg.tokens({"bird", "cat"}) == {"cat": "<new1>", "bird": "<new5>"}
    entry = ConceptRegistry.read(tmp_path).concepts[4]
    assert (entry.name, entry.class_words, entry.first_seen) == ("bird", "bird", "park")
    assert ConceptRegistry.read(tmp_path / "none").concepts == []


@pytest.mark.parametrize("text, why", [
    ("{not json", "not valid JSON"),
    ('{"concepts": [{"name": "cat", "token": "<new1>", "class_words": "cat"},'
     ' {"name": "dog", "token": "<new1>", "class_words": "dog"}]}', "a token appears twice"),
    ('{"concepts": [{"name": "cat", "token": "new1", "class_words": "cat"}]}', "concepts.0.token"),
])
def test_a_damaged_registry_is_one_line_and_never_renumbered(tmp_path, text, why):
    (tmp_path / "concepts.json").write_text(text)
    with pytest.raises(UserError, match=why) as e:
        record_concepts(tmp_path, {"cat": "pets"})
    assert "\n" not in str(e.value) and "renumbers" in str(e.value)
    assert (tmp_path / "concepts.json").read_text() == text


def test_a_moved_token_is_named(tmp_path):
    old = ConceptRegistry().adding({"cat": "a", "dog": "a"})
    new = ConceptRegistry.build({"concepts": [{"name": "bird", "token": "<new1>", "class_words": "bird"},
                                              {"name": "dog", "token": "<new2>", "class_words": "dog"}]})
    assert registry_mismatch(old, new) == "<new1> was cat, is now bird"
    assert registry_mismatch(old, old) == ""


def test_s2_records_the_concepts_of_cut_outs_and_source_folders(tmp_path, cfg_factory):
    fake_s1(tmp_path / "stages", {"pets": {"dog": 1, "cat": 1}})
    (tmp_path / "src" / "zoo" / "owl").mkdir(parents=True)  # a source folder s1 has not reached yet
    s2_compose.run(cfg_factory("stage=s2", "compose.size=[128,128]", "compose.num_samples=1"))
    reg = json.loads((tmp_path / "stages" / "concepts.json").read_text())
    assert reg == {"concepts": [{"name": "cat", "token": "<new1>", "class_words": "cat", "first_seen": "pets"},
                                {"name": "dog", "token": "<new2>", "class_words": "dog", "first_seen": "pets"},
                                {"name": "owl", "token": "<new3>", "class_words": "owl", "first_seen": "zoo"}]}


def test_the_dataset_carries_the_registry_its_captions_use(tmp_path, cfg_factory):
    info = make_pipeline(tmp_path)
    record_concepts(info["stages"], {"bird": "park"})  # known to the tree before s4: keeps <new1>
    s4_caption.run(cfg_factory("stage=s4"))
    export.run(cfg_factory("stage=export"))
    ds = tmp_path / "outputs/datasets/mycanvas"
    assert (ds / "concepts.json").read_bytes() == (info["stages"] / "concepts.json").read_bytes()
    reg = ConceptRegistry.read(ds).tokens()
    assert reg == {"bird": "<new1>", "cat": "<new2>", "dog": "<new3>", "plant": "<new4>"}
    rows = [json.loads(line) for line in (ds / "mycanvas/index.jsonl").read_text().splitlines()]
    assert all(row["modifier_tokens"] == {c: reg[c] for c in row["concepts"]} for row in rows)


def test_captions_whose_tokens_the_registry_does_not_hold_stay_out_of_the_dataset(tmp_path, cfg_factory):
    """A tree captioned before the registry existed (or a registry restored from elsewhere): the dataset never
    mixes two numberings; s4 rerun recaptions exactly the items whose tokens moved."""
    info = make_pipeline(tmp_path)
    s4_caption.run(cfg_factory("stage=s4"))
    (info["stages"] / "concepts.json").write_bytes(
        ConceptRegistry().adding({"dog": "pets"}).adding({"cat": "pets", "plant": "kitchen"}).dump())
    with pytest.raises(UserError, match=r"2 incomplete: captions use other tokens than the tree's concept "
                                        r"registry \(rerun stage=s4\)"):
        export.run(cfg_factory("stage=export"))
    ds = tmp_path / "outputs/datasets/mycanvas"
    again = s4_caption.run(cfg_factory("stage=s4"))
    assert (again.done, again.skipped) == (2, 0)  # every caption names a moved token: all redone
    assert export.run(cfg_factory("stage=export")).done == 2
    rows = [json.loads(line) for line in (ds / "mycanvas/index.jsonl").read_text().splitlines()]
    assert {c: t for r in rows for c, t in r["modifier_tokens"].items()} == {"dog": "<new1>", "cat": "<new2>",
                                                                            "plant": "<new3>"}
