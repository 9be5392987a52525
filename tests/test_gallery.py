"""The HTML gallery: every thumbnail it shows exists, captions and failures are on the page, the layout
picture has its boxes drawn, and the page renders in headless Chromium (needs("chromium"))."""
import html
import json
import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
from PIL import Image

from gen4gen.paths import STAGE_DIRS
from gen4gen.stages import export, s4_caption
from tests.conftest import make_cfg
from tests.helpers.needs import chromium_path
from tests.helpers.trees import COLOURS, add_failure, make_pipeline


@pytest.fixture(scope="module")
def gallery(tmp_path_factory):
    root = tmp_path_factory.mktemp("gallery")
    info = make_pipeline(root, size=(200, 200), scenes={
        "pets": ("cat+dog_000", "in the garden",
                 [("dog", 0, (100, 60, 40, 80)), ("dog", 1, (148, 68, 36, 72)), ("cat", 0, (12, 80, 48, 60))])})
    add_failure(info["stages"], "s3", "pets/cat+dog_001/v0_photo",
                "background <photo> unreadable")
    cfg = make_cfg(root, "export.formats=[mycanvas]")
    s4_caption.run(cfg)
    summary = export.run(cfg)
    return Path(summary.notes["gallery"])


class Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs, self.hrefs = [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.srcs.append(unquote(a["src"]))
        if tag == "a":
            self.hrefs.append(unquote(a["href"]))


def test_page_shows_every_thumbnail_caption_and_failure(gallery):
    text = gallery.read_text()
    parser = Images()
    parser.feed(text)
    # 4 cut-outs, 1 layout, 1 final image
    assert len(parser.srcs) == 6 and all((gallery.parent / s).is_file() for s in parser.srcs)
    assert all((gallery.parent / h).resolve().is_file() for h in parser.hrefs) and parser.hrefs
    assert "a photo of &lt;new1&gt; cat and two &lt;new2&gt; dogs in the garden" in text
    assert "The cat is to the left of the dogs." in text
    assert text.count("procedural background: a preview, not a photograph") == 1  # the one procedural variant
    assert "background &lt;photo&gt; unreadable" in text and "<photo>" not in text  # escaped
    assert re.search(r"<b>1</b> final image<", text) and re.search(r"<b>3</b> instances", text)
    assert re.search(r"<b>1</b> scene<", text) and re.search(r"<b>0</b> final images left out", text)


def test_a_photo_variant_names_its_photo_and_its_flag(tmp_path):
    finals = make_pipeline(tmp_path, size=(120, 120), variants=("v0_photo", "v1_photo"), background={
        "source": "/home/me/bg/garden/<lawn>.jpg", "scene": "garden", "crop": 2,
        "flag": "a salient object of the photo covers 20% of where the concepts stand"})["finals"]
    cfg = make_cfg(tmp_path, "export.formats=[mycanvas]")
    s4_caption.run(cfg)
    text = Path(export.run(cfg).notes["gallery"]).read_text()
    assert text.count("background photo: garden/&lt;lawn&gt;.jpg, crop 2") == len(finals) > 1  # folder/file, escaped
    assert text.count("a salient object of the photo covers 20% of where the concepts stand") == len(finals)
    assert "a preview, not a photograph" not in text


def test_layout_thumbnail_has_labelled_boxes(gallery):
    thumb = np.asarray(Image.open(gallery.parent / "thumbs/pets__cat+dog_000__layout.jpg").convert("RGB")).astype(int)
    comp = gallery.parents[4] / f"stages/{STAGE_DIRS['s2']}/pets/cat+dog_000"
    plain = np.asarray(Image.open(comp / "image.png").convert("RGB")).astype(int)
    assert thumb.shape == plain.shape  # 200 px: thumb_size 256 does not upscale
    drawn = np.abs(thumb - plain).sum(-1) > 90
    layout = json.loads((comp / "layout.json").read_text())
    for obj in layout["objects"]:
        x, y, w, h = obj["box"]
        left, bottom = drawn[y + 2:y + h - 2, x], drawn[y + h - 1, x + 2:x + w - 2]
        assert left.mean() > 0.8 and bottom.mean() > 0.8, obj["name"]  # the rectangle is there
        assert drawn[max(0, y - 12):y, x:x + 30].mean() > 0.1, obj["name"]  # and a label above it (text pixels)
    assert drawn.mean() < 0.2  # the rest is the composition


def run_chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [chromium_path(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


@pytest.mark.needs("chromium")
def test_renders_in_headless_chromium(gallery, tmp_path):
    shot = tmp_path / "shot.png"
    run_chromium(tmp_path, "--window-size=1000,1200", f"--screenshot={shot}", gallery.as_uri())
    assert shot.is_file(), "Chromium wrote no screenshot"
    page = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    # the thumbnails were decoded and drawn: the cat's orange and the dogs' brown are on the page
    for colour in (COLOURS["cat"], COLOURS["dog"]):
        assert (np.abs(page - np.array(colour)).sum(-1) < 40).sum() > 200, colour


# Run inside a copy of the page (same folder, so the same relative links): every <img> source is decoded by the
# browser (lazy images too), and every element of a card must lie inside the card.
CHECK = """<script>
window.addEventListener("load", async () => {
  const imgs = [...document.images];
  const ok = await Promise.all(imgs.map(img => new Promise(done => {
    const probe = new Image();
    probe.onload = () => done(probe.naturalWidth > 0);
    probe.onerror = () => done(false);
    probe.src = img.src;
  })));
  const overflow = [];
  for (const card of document.querySelectorAll("figure")) {
    const box = card.getBoundingClientRect();
    for (const el of [card, ...card.querySelectorAll("*")]) {
      const r = el.getBoundingClientRect();
      if (r.right > box.right + 0.5 || r.left < box.left - 0.5 || el.scrollWidth > el.clientWidth + 1)
        overflow.push(el.tagName + ": " + el.textContent.slice(0, 80));
    }
  }
  const out = document.createElement("pre");
  out.id = "check";
  out.textContent = JSON.stringify({images: imgs.length, broken: imgs.filter((_, i) => !ok[i]).map(i => i.src),
                                    overflow, cards: document.querySelectorAll("figure").length,
                                    width: document.documentElement.clientWidth});
  document.body.appendChild(out);
});
</script>"""


def check_in_chromium(page: Path, tmp_path: Path) -> dict:
    probe = page.with_name("check.html")
    probe.write_text(page.read_text().replace("</body>", CHECK + "</body>"))
    result = run_chromium(tmp_path, "--window-size=1400,1000", "--virtual-time-budget=60000", "--dump-dom",
                          probe.as_uri())
    found = re.search(r'<pre id="check">(.*?)</pre>', result.stdout, re.S)
    assert found, f"the check did not run in Chromium: {result.stderr[-2000:]}"
    return json.loads(html.unescape(found.group(1)))


@pytest.mark.needs("chromium")
def test_200_items_load_every_image_and_nothing_overflows_at_1400px(tmp_path):
    long = "hippopotamusxylophonebutterflyextravaganza"  # one long word: names and ids must wrap in their cards
    objects = [(long, 0, (10, 40, 30, 30)), ("dog", 0, (60, 40, 30, 30))]
    make_pipeline(tmp_path, size=(96, 96),
                  scenes={"pets": [(f"{long}+dog_{i:03d}", "in the garden", objects) for i in range(200)]})
    cfg = make_cfg(tmp_path, "export.formats=[mycanvas]", "export.gallery_per_scene=0", "export.thumb_size=96")
    s4_caption.run(cfg)
    page = Path(export.run(cfg).notes["gallery"])
    found = check_in_chromium(page, tmp_path)
    # 4 cut-outs, then per composition its layout and its final image
    assert found["images"] == 4 + 200 * 2 and found["cards"] == 4 + 200 * 2
    assert found["width"] >= 1380
    assert found["broken"] == [] and found["overflow"] == []


@pytest.mark.needs("chromium")
def test_the_check_sees_a_broken_image_and_an_overflowing_caption(gallery, tmp_path):
    """The browser check is not vacuous: a missing thumbnail and an unbreakable over-wide caption are found."""
    broken = gallery.with_name("broken.html")
    page = re.sub(r'src="thumbs/[^"]*__layout\.jpg"', 'src="thumbs/missing.jpg"', gallery.read_text())
    broken.write_text(page.replace("</body>", '<figure><figcaption style="overflow-wrap:normal">' + "x" * 300
                      + "</figcaption></figure></body>"))
    found = check_in_chromium(broken, tmp_path)
    assert [Path(unquote(b)).name for b in found["broken"]] == ["missing.jpg"]
    assert found["overflow"] and found["overflow"][0].startswith("FIGURE: xxx")


def test_gallery_shows_at_most_the_configured_compositions_per_scene(tmp_path):
    objects = [("cat", 0, (10, 40, 30, 30)), ("dog", 0, (60, 40, 30, 30))]
    make_pipeline(tmp_path, scenes={"pets": [(f"cat+dog_{i:03d}", "in the garden", objects) for i in range(3)]})
    cfg = make_cfg(tmp_path, "export.formats=[]", "export.gallery_per_scene=2")
    s4_caption.run(cfg)
    page = Path(export.run(cfg).notes["gallery"])
    text = page.read_text()
    assert "showing 2 of 3 compositions" in text and "<b>3</b> final images" in text
    assert "pets/cat+dog_002" not in text and not (page.parent / "thumbs/pets__cat+dog_002__v0_procedural.jpg").exists()


def test_bench_gallery_escapes_prompts_and_quotes_links(tmp_path):
    from gen4gen.bench.report import gallery_html

    rows = [{"model": "sd<1>", "prompt_key": "p&1", "prompt": 'a <script>alert("x")</script> cat', "category": "a&b",
             "image": f"images/sd<1>/p#1 s{s}.png", "seed": s} for s in (1, 0)]
    text = gallery_html(rows, tmp_path / "run", tmp_path / "run/report/gallery.html")
    assert "<script>" not in text and "a &lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; cat" in text
    assert "<th>sd&lt;1&gt;</th>" in text and "<b>p&amp;1</b> <i>a&amp;b</i>" in text
    parser = Images()
    parser.feed(text)
    # seeds in order; '#' quoted so the browser does not read it as a fragment
    assert parser.srcs == ["../images/sd<1>/p#1 s0.png", "../images/sd<1>/p#1 s1.png"]
    assert 'src="../images/sd%3C1%3E/p%231%20s0.png"' in text
