"""The backbone prompter: an ImageNet-pretrained MobileNetV2 with a small FPN decoder.

It reads the image itself, not LiteMedSAM's embedding: the plane is resized so that its
longest side is ``size`` (aspect kept), padded bottom/right to a multiple of 32, given
ImageNet's normalisation, and the network predicts one probability map per class at that
resolution. Each connected component above ``pixel_threshold`` becomes a box (score = its
highest probability) that prompts the segmenter, as the head prompter's do; the maps also go
to the pipeline, which refines the segmenter's masks with them (``pipeline.refine``).

Decoder: the backbone's stride 4, 8, 16 and 32 features, each reduced to ``width`` channels,
added top-down (upsampled) and smoothed by a 3×3 convolution, then a 1×1 classifier at
stride 4 and bilinear upsampling to the input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from automedseg.checkpoints import load_checkpoint
from automedseg.errors import WeightsError
from automedseg.prompt.backbone_space import backbone_input
from automedseg.prompt.base import card_propagation, card_refinement
from automedseg.prompt.components import ClassMaps, FindsWithMaps

BACKBONES = ("mobilenet_v2",)
STAGES = ((0, 4), (4, 7), (7, 14), (14, 18))
"""MobileNetV2 ``features`` slices ending at strides 4, 8, 16 and 32."""
STAGE_CHANNELS = (24, 32, 96, 320)


def mobilenet_v2_features(state: dict | None = None) -> nn.Sequential:
    """torchvision's MobileNetV2 ``features`` (without the final 1280-channel layer), with the
    given ImageNet state dict loaded, else randomly initialised."""
    from torchvision.models import mobilenet_v2

    model = mobilenet_v2()
    if state is not None:
        model.load_state_dict(state, strict=True)
    return model.features[:18]


def _conv(channels_in: int, channels_out: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels_in, channels_out, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(channels_out),
        nn.ReLU(inplace=True),
    )


class BackboneNet(nn.Module):
    """(B, 3, H, W) normalised image (H, W multiples of 32) → (B, K, H, W) class logits."""

    def __init__(self, features: nn.Sequential, num_classes: int, width: int = 64) -> None:
        super().__init__()
        self.num_classes, self.width = num_classes, width
        self.stages = nn.ModuleList(features[a:b] for a, b in STAGES)
        self.lateral = nn.ModuleList(_conv(c, width, 1) for c in STAGE_CHANNELS)
        self.smooth = nn.ModuleList(_conv(width, width, 3) for _ in STAGE_CHANNELS[:-1])
        self.classify = nn.Conv2d(width, num_classes, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        taps, x = [], image
        for stage in self.stages:
            x = stage(x)
            taps.append(x)
        top = self.lateral[-1](taps[-1])
        for i in range(len(taps) - 2, -1, -1):
            up = F.interpolate(top, size=taps[i].shape[-2:], mode="bilinear", align_corners=False)
            top = self.smooth[i](up + self.lateral[i](taps[i]))
        logits = self.classify(top)
        return F.interpolate(logits, size=image.shape[-2:], mode="bilinear", align_corners=False)

    def architecture(self) -> dict:
        return {"backbone": "mobilenet_v2", "num_classes": self.num_classes, "width": self.width}


@dataclass
class BackbonePrompter(FindsWithMaps):
    """Implements ``prompt.base.Prompter`` from the image alone (``uses_embedding`` False)."""

    net: BackboneNet
    labels: dict[int, str]
    """Label value → class name, in the network's output-channel order."""
    size: int = 320
    """Longest side of the image the network sees."""
    score_threshold: float = 0.5
    pixel_threshold: float = 0.5
    min_area_fraction: float = 0.0005
    refinement: dict = field(default_factory=dict)
    """How the pipeline refines masks with the maps (``pipeline.refine``), chosen at training."""
    uses_embedding: bool = False
    propagation: dict = field(default_factory=dict)

    @torch.inference_mode()
    def maps(self, image: np.ndarray) -> ClassMaps:
        batch, resized = backbone_input(image, self.size)
        logits = self.net.eval()(torch.from_numpy(batch))
        return ClassMaps(torch.sigmoid(logits)[0].numpy(), resized, tuple(self.labels))


def build_net(architecture: dict, features: nn.Sequential | None = None) -> BackboneNet:
    """The network a card's ``architecture`` describes; ``features`` defaults to a randomly
    initialised backbone (a trained prompter's weights overwrite it)."""
    if architecture.get("backbone") not in BACKBONES:
        raise ValueError(f"unknown backbone {architecture.get('backbone')!r} (known: {BACKBONES})")
    return BackboneNet(
        features if features is not None else mobilenet_v2_features(),
        int(architecture["num_classes"]),
        int(architecture.get("width", 64)),
    )


def load_backbone_prompter(card_path: str | Path) -> BackbonePrompter:
    """A trained backbone prompter from its card; refuses cards of another kind or shape."""
    card, state = load_checkpoint(card_path)
    if card.get("kind") != "backbone":
        raise WeightsError(f"not a backbone prompter card (kind {card.get('kind')!r})", card_path)
    try:
        net = build_net(card["architecture"])
        net.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
        labels = {int(k): str(v) for k, v in card["labels"].items()}
        size = int(card["size"])
        thresholds = {k: float(card[k]) for k in ("score_threshold", "pixel_threshold")}
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        detail = str(error).strip().splitlines()[-1] if str(error).strip() else repr(error)
        raise WeightsError(f"card and weights do not describe a backbone prompter: {detail}",
                           card_path) from None  # fmt: skip
    if len(labels) != net.num_classes:
        raise WeightsError(
            f"card lists {len(labels)} classes but the network has {net.num_classes}", card_path
        )
    return BackbonePrompter(
        net.eval(), labels, size=size, **thresholds,
        min_area_fraction=float(card.get("min_area_fraction", 0.0005)),
        refinement=card_refinement(card, card_path), propagation=card_propagation(card, card_path),
    )  # fmt: skip

