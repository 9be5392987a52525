"""Each segmenter backend through its real loading path: GrabCut (no weights), IS-Net from an ONNX
file the test exports, SAM from a checkpoint of a tiny model built from segment-anything's classes."""
from __future__ import annotations

import functools
import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from gen4gen.app import run
from gen4gen.errors import UserError
from gen4gen.paths import STAGE_DIRS
from gen4gen.segment.grabcut import GrabCut
from tests.helpers import fake_torchvision

ROOT = Path(__file__).resolve().parents[1]


def _iou(a, b) -> float:
    a, b = np.asarray(a) >= 0.5, np.asarray(b) >= 0.5
    return float((a & b).sum() / max((a | b).sum(), 1))


def synthetic(h: int = 240, w: int = 320, seed: int = 0):
    """A textured orange blob on a textured blue-green background, and its exact mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    truth = (((yy - h * 0.5) / (h * 0.3)) ** 2 + ((xx - w * 0.45) / (w * 0.22)) ** 2 <= 1) | (
        (np.abs(yy - h * 0.62) < h * 0.05) & (xx > w * 0.45) & (xx < w * 0.72))  # a body and a "tail"
    img = np.empty((h, w, 3), np.float32)
    img[:] = (40, 120, 130)
    img[truth] = (220, 130, 40)
    img += rng.normal(0, 18, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), truth.astype(np.float32)


# ---------------------------------------------------------------- GrabCut
def test_grabcut_from_a_centre_box_finds_the_object():
    img, truth = synthetic()
    mask = GrabCut()(img)
    assert mask.shape == truth.shape and mask.dtype == np.float32
    assert 0.0 <= mask.min() and mask.max() <= 1.0
    assert ((mask > 0.05) & (mask < 0.95)).any()  # soft edge, not a hard cut
    assert _iou(mask, truth) >= 0.9


def test_grabcut_refines_a_rough_seed_mask():
    img, truth = synthetic(seed=1)
    rough = cv2.dilate(truth, np.ones((15, 15), np.uint8))  # a sloppy mask, 7 px too wide
    seg = GrabCut(seed=lambda rgb: rough, band=0.05)
    mask = seg(img)
    assert seg.name == "grabcut+function"
    assert _iou(mask, truth) >= 0.95 > _iou(rough, truth)


def test_grabcut_runs_on_a_small_copy_of_a_large_photo(monkeypatch):
    img, truth = synthetic(900, 1200)
    seen = []
    real = cv2.grabCut
    monkeypatch.setattr(cv2, "grabCut", lambda im, *a: (seen.append(im.shape), real(im, *a))[1])
    mask = GrabCut(max_side=256)(img)
    assert seen == [(192, 256, 3)] and mask.shape == (900, 1200)
    assert _iou(mask, truth) >= 0.9


def test_grabcut_bad_settings_and_empty_seed():
    with pytest.raises(UserError, match="margin"):
        GrabCut(margin=0.6)
    img, _ = synthetic(64, 64)
    from gen4gen.errors import ItemFailed

    with pytest.raises(ItemFailed, match="no foreground"):
        GrabCut(seed=lambda rgb: np.zeros(rgb.shape[:2], np.float32))(img)


# ---------------------------------------------------------------- IS-Net (ONNX)
def red_channel_onnx(path: Path, gain: float, size: int | None = None, sigmoid: bool = True) -> Path:
    """A one-layer ONNX 'IS-Net': a 1x1 convolution reading the red channel, then a sigmoid."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    dims = [1, 3, size, size] if size else [1, 3, "H", "W"]
    out_dims = [1, 1, size, size] if size else [1, 1, "H", "W"]
    w = numpy_helper.from_array(np.array([gain, 0, 0], np.float32).reshape(1, 3, 1, 1), "w")
    nodes = [helper.make_node("Conv", ["input", "w"], ["logits" if sigmoid else "mask"])]
    if sigmoid:
        nodes.append(helper.make_node("Sigmoid", ["logits"], ["mask"]))
    graph = helper.make_graph(nodes, "tiny_isnet", [helper.make_tensor_value_info("input", TensorProto.FLOAT, dims)],
                              [helper.make_tensor_value_info("mask", TensorProto.FLOAT, out_dims)], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def test_isnet_preprocesses_like_dis_and_segments(tmp_path):
    from gen4gen.segment.isnet import ISNet

    img, truth = synthetic()
    seg = ISNet(model_path=str(red_channel_onnx(tmp_path / "id.onnx", 1.0, sigmoid=False)), size=128)
    assert seg.size == (128, 128)  # dynamic graph: the configured size
    x = seg.preprocess(img)
    expected = cv2.resize(img, (128, 128), interpolation=cv2.INTER_AREA)[..., 0] / 255.0 - 0.5  # mean .5, std 1
    assert np.allclose(seg._run(x), expected, atol=1e-5)

    seg = ISNet(model_path=str(red_channel_onnx(tmp_path / "isnet.onnx", 12.0)), size=256)
    mask = seg(img)
    assert mask.shape == truth.shape and _iou(mask, truth) >= 0.95


def test_isnet_fixed_size_graph_and_clear_errors(tmp_path):
    from gen4gen.segment.isnet import ISNet

    fixed = ISNet(model_path=str(red_channel_onnx(tmp_path / "fixed.onnx", 12.0, size=96)))
    assert fixed.size == (96, 96)  # the graph's own size wins over the 1024 default
    assert fixed(synthetic()[0]).shape == (240, 320)
    with pytest.raises(UserError, match="needs a checkpoint"):
        ISNet()
    pth = tmp_path / "isnet-general-use.pth"
    pth.write_bytes(b"x")
    with pytest.raises(UserError, match="export it to ONNX"):
        ISNet(model_path=str(pth))
    with pytest.raises(UserError, match="not found"):
        ISNet(model_path=str(tmp_path / "missing.onnx"))
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(UserError, match="cannot load ONNX"):
        ISNet(model_path=str(tmp_path / "junk.onnx"))


def test_isnet_through_the_stage(tmp_path, cfg_factory):
    img, truth = synthetic()
    d = tmp_path / "src" / "s" / "c"
    d.mkdir(parents=True)
    Image.fromarray(img).save(d / "blob.png")
    model = red_channel_onnx(tmp_path / "isnet.onnx", 12.0)
    assert run(cfg_factory("stage=s1", "segmenter=isnet", f"segmenter.model_path={model}", "segmenter.size=256")) == 0
    item = tmp_path / "stages" / STAGE_DIRS["s1"] / "s" / "c" / "blob"
    assert json.loads((item / "meta.json").read_text())["backend"] == "isnet"
    mask = np.asarray(Image.open(item / "mask.png"), np.float32) / 255
    assert _iou(mask, truth) >= 0.95


# ---------------------------------------------------------------- SAM
@pytest.fixture(scope="module")
def tiny_sam(tmp_path_factory):
    """segment-anything imported against the torchvision stand-in, a tiny registry entry built with its
    own ``_build_sam`` (the real builders hard-code ViT sizes), and a checkpoint saved from it."""
    import torch

    fake_torchvision.forget()
    fake_torchvision.install()
    try:
        with pytest.MonkeyPatch.context() as mp:
            from segment_anything.build_sam import _build_sam, sam_model_registry

            build = functools.partial(_build_sam, encoder_embed_dim=16, encoder_depth=1, encoder_num_heads=1,
                                      encoder_global_attn_indexes=[])
            mp.setitem(sam_model_registry, "vit_tiny", build)
            torch.manual_seed(0)
            model = build()
            ckpt = tmp_path_factory.mktemp("sam") / "sam_vit_tiny.pth"
            torch.save(model.state_dict(), ckpt)
            yield ckpt, model.state_dict()
    finally:
        fake_torchvision.forget()


class Spy:
    """Records SamPredictor.predict calls and results."""

    def __init__(self, monkeypatch):
        from segment_anything import SamPredictor

        self.calls = []
        real = SamPredictor.predict

        def predict(predictor, **kw):
            out = real(predictor, **kw)
            self.calls.append((kw, out))
            return out

        monkeypatch.setattr(SamPredictor, "predict", predict)


def test_sam_loads_the_checkpoint_and_prompts_with_the_saliency_box(tiny_sam, monkeypatch):
    from gen4gen.segment.sam import SAM

    ckpt, state = tiny_sam
    img, truth = synthetic(120, 160)
    seg = SAM(checkpoint=str(ckpt), model_type="vit_tiny", prompt=lambda rgb: truth, device="cpu",
              point_refine=False, box_margin=0.0)
    loaded = seg.predictor.model.state_dict()
    assert all(torch_equal(loaded[k], v) for k, v in state.items())  # the checkpoint's weights, not fresh ones
    spy = Spy(monkeypatch)
    mask = seg(img)
    ys, xs = np.nonzero(truth)
    (kw, (logits, scores, low)), = spy.calls
    assert kw["multimask_output"] and np.allclose(kw["box"], [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    assert logits.shape == (3, 120, 160)
    best = 1 / (1 + np.exp(-logits[int(np.argmax(scores))]))  # the multimask output SAM rates best
    assert mask.shape == (120, 160) and np.allclose(mask, best, atol=1e-5)


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a.cpu(), b.cpu()))


def test_sam_point_refinement_and_large_photos(tiny_sam, monkeypatch):
    from gen4gen.segment.sam import SAM

    ckpt, _ = tiny_sam
    img, truth = synthetic(300, 400)
    seg = SAM(checkpoint=str(ckpt), model_type="vit_tiny", prompt=lambda rgb: cv2.resize(truth, rgb.shape[1::-1]),
              device="cpu", point_refine=True, max_side=200)
    spy = Spy(monkeypatch)
    mask = seg(img)
    assert mask.shape == (300, 400) and 0 <= mask.min() and mask.max() <= 1
    assert len(spy.calls) == 2
    (kw1, (l1, s1, low1)), (kw2, (l2, s2, _)) = spy.calls
    assert l1.shape == (3, 150, 200)  # SAM saw the photo at max_side, the mask comes back full size
    x, y = kw2["point_coords"][0]
    small_truth = cv2.resize(truth, (200, 150))
    assert small_truth[int(y), int(x)] >= 0.5  # the click lies inside the prompt mask
    assert kw2["point_labels"].tolist() == [1]
    best = int(np.argmax(s1))
    assert np.array_equal(kw2["mask_input"][0], low1[best])
    chosen = l2[0] if s2[0] >= s1[best] else l1[best]
    expected = cv2.resize((1 / (1 + np.exp(-chosen))).astype(np.float32), (400, 300), interpolation=cv2.INTER_LINEAR)
    assert np.allclose(mask, expected, atol=1e-5)


@pytest.mark.needs("weights")  # the default SAM prompt
def test_sam_through_the_stage_with_the_u2netp_prompt(tiny_sam, tmp_path, cfg_factory):
    ckpt, _ = tiny_sam
    d = tmp_path / "src" / "s" / "c"
    d.mkdir(parents=True)
    Image.fromarray(synthetic(96, 128)[0]).save(d / "blob.png")
    cfg = cfg_factory("stage=s1", "segmenter=sam", f"segmenter.checkpoint={ckpt}", "segmenter.model_type=vit_tiny",
                      "device=cpu")
    assert run(cfg) == 0
    meta = json.loads((tmp_path / "stages" / STAGE_DIRS["s1"] / "s" / "c" / "blob" / "meta.json").read_text())
    assert meta["backend"] == "sam" and meta["size"] == [128, 96]


def test_sam_clear_errors(tiny_sam, tmp_path):
    from gen4gen.segment.sam import SAM

    ckpt, _ = tiny_sam
    with pytest.raises(UserError, match="needs segmenter.checkpoint"):
        SAM()
    with pytest.raises(UserError, match="unknown model_type"):
        SAM(checkpoint=str(ckpt), model_type="vit_xxl")
    with pytest.raises(UserError, match="cannot load sam_vit_tiny.pth as a vit_b"):
        SAM(checkpoint=str(ckpt), model_type="vit_b")


def test_sam_without_torchvision_says_what_to_install(tmp_path):
    try:  # the distribution, not sys.modules (which may hold the stand-in)
        importlib.metadata.distribution("torchvision")
        pytest.skip("torchvision is installed here")
    except importlib.metadata.PackageNotFoundError:
        pass
    ckpt = tmp_path / "sam.pth"
    ckpt.write_bytes(b"x")
    code = (f"from gen4gen.segment.sam import SAM\nfrom gen4gen.errors import UserError\n"
            f"try:\n    SAM(checkpoint={str(ckpt)!r})\nexcept UserError as e:\n    print(e)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert r.returncode == 0, r.stderr
    assert "needs segment-anything and torchvision" in r.stdout and "pip install" in r.stdout
    # the command keeps the installed torch (a bare `pip install torchvision` replaces it)
    assert f"-c <(echo torch=={importlib.metadata.version('torch')})" in r.stdout and "make sam" in r.stdout


def test_gen4gen_never_imports_torchvision():
    code = ("import sys, gen4gen.app, gen4gen.stages.s1_segment, gen4gen.segment.sam, gen4gen.segment.grabcut, "
            "gen4gen.segment.isnet, gen4gen.examples; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('torchvision', 'segment_anything')]; "
            "assert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert r.returncode == 0, r.stderr


# ---------------------------------------------------------------- U²-Net-p options
def _u2netp(**kw):
    from gen4gen.segment.u2netp import U2NetP

    return U2NetP(**kw)


@pytest.mark.needs("weights")
def test_u2netp_flip_tta_is_mirror_equivariant():
    seg = _u2netp(flip_tta=True, threads=1)
    img, truth = synthetic(160, 200, seed=3)
    a, b = seg(img), seg(np.ascontiguousarray(img[:, ::-1]))
    assert np.allclose(a, b[:, ::-1], atol=1e-4)
    assert _iou(a, truth) >= 0.9


@pytest.mark.needs("weights")
def test_stage_splits_cores_between_workers(tmp_path, cfg_factory, monkeypatch):
    _u2netp()
    from gen4gen.stages import s1_segment

    monkeypatch.setattr(s1_segment, "usable_cores", lambda: 8)
    stage = s1_segment.SegmentStage(cfg_factory("workers=2"))
    assert stage.segmenter.session.get_session_options().intra_op_num_threads == 4
    stage = s1_segment.SegmentStage(cfg_factory("workers=2", "segmenter.threads=3"))
    assert stage.segmenter.session.get_session_options().intra_op_num_threads == 3


def test_guided_refinement_moves_a_blurred_edge_onto_the_photo_edge():
    from gen4gen.segment.refine import guided_refine

    img, truth = synthetic(480, 640, seed=4)
    # what a low-resolution model gives: the right shape, but coarse and 2 px too wide
    coarse = cv2.resize(cv2.dilate(truth, np.ones((5, 5), np.uint8)), (80, 60), interpolation=cv2.INTER_AREA)
    stretched = cv2.resize(coarse, (640, 480), interpolation=cv2.INTER_LINEAR)
    refined = guided_refine(img, coarse, work=512, radius=4)
    assert refined.shape == truth.shape and 0 <= refined.min() and refined.max() <= 1
    assert _iou(refined, truth) > max(0.985, _iou(stretched, truth) + 0.02)
    band = (cv2.dilate(truth, np.ones((9, 9))) > 0) & (cv2.erode(truth, np.ones((9, 9))) == 0)
    # along the edge the refined alpha is much closer to the exact mask
    assert np.abs(refined - truth)[band].mean() < 0.7 * np.abs(stretched - truth)[band].mean()
    # an edge farther off than the filter's radius cannot be found: the mask stays where it was
    far = cv2.resize(cv2.dilate(truth, np.ones((41, 41), np.uint8)), (80, 60), interpolation=cv2.INTER_AREA)
    assert abs(_iou(guided_refine(img, far, radius=1), truth) - _iou(cv2.resize(far, (640, 480)), truth)) < 0.02


@pytest.mark.needs("weights")
def test_u2netp_pad_rescues_a_frame_filling_close_up():
    from skimage import data

    seg, padded = _u2netp(threads=1), _u2netp(threads=1, pad=0.1)
    cat = np.asarray(data.chelsea())
    h, w = cat.shape[:2]
    close_up = np.ascontiguousarray(cat[int(0.08 * h):h - int(0.04 * h), int(0.08 * w):w - int(0.08 * w)])
    # without context U²-Net-p keeps only the eyes; with the border repeated around it, the cat
    assert (seg(close_up) >= 0.5).mean() < 0.15
    mask = padded(close_up)
    assert mask.shape == close_up.shape[:2] and (mask >= 0.5).mean() > 0.6
    with pytest.raises(UserError, match="pad"):
        _u2netp(pad=0.9)
