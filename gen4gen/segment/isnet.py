"""IS-Net / DIS (Qin et al., "Highly Accurate Dichotomous Image Segmentation") from a user checkpoint.

The network code is not part of gen4gen, so the checkpoint must be an ONNX export. From the DIS
repository (``IS-Net/models/isnet.py``)::

    net = ISNetDIS(); net.load_state_dict(torch.load("isnet-general-use.pth", map_location="cpu")); net.eval()
    torch.onnx.export(net, torch.zeros(1, 3, 1024, 1024), "isnet.onnx", input_names=["input"],
                      output_names=["mask"], opset_version=17)
"""
from __future__ import annotations

from pathlib import Path

from gen4gen.errors import UserError
from gen4gen.segment.onnx_saliency import OnnxSaliency

EXPORT_HINT = ("export it to ONNX with the DIS repository's ISNetDIS class (see the gen4gen.segment.isnet "
               "docstring: torch.onnx.export(net, torch.zeros(1, 3, 1024, 1024), 'isnet.onnx')) and set "
               "segmenter.model_path=isnet.onnx")


class ISNet(OnnxSaliency):
    name = "isnet"

    def __init__(self, model_path: str | None = None, size: int = 1024, mean=(0.5, 0.5, 0.5),
                 std=(1.0, 1.0, 1.0), scale: str = "255", flip_tta: bool = False, refine: str = "none",
                 pad: float = 0.0, threads: int = 0, zoom: float = 0.5,
                 zoom_margin: float = 0.25, zoom_min_gain: float = 1.05):
        if not model_path:
            raise UserError("segmenter=isnet needs a checkpoint: segmenter.model_path=/path/to/isnet.onnx; "
                            "no IS-Net weights ship with gen4gen. " + EXPORT_HINT)
        path = Path(model_path).expanduser()
        if path.suffix.lower() in (".pth", ".pt", ".ckpt", ".bin", ".safetensors"):
            raise UserError(f"segmenter=isnet reads ONNX files, not PyTorch checkpoints ({path.name}): "
                            + EXPORT_HINT)
        super().__init__(path, size=size, mean=mean, std=std, scale=scale, flip_tta=flip_tta,
                         refine=refine, pad=pad, threads=threads,
                         zoom=zoom, zoom_margin=zoom_margin, zoom_min_gain=zoom_min_gain)
