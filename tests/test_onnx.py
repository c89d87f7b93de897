"""ONNX export (checked against PyTorch) and the torch-free ONNX Runtime runtime."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from automedseg import io
from automedseg.deploy import export
from automedseg.errors import WeightsError
from automedseg.intensity import to_unit_range
from automedseg.prompt.head import EmbeddingHead, HeadPrompter
from automedseg.runtime import onnx as runtime
from automedseg.runtime import transforms
from automedseg.segment.litemedsam import LiteMedSAMPredictor, postprocess, preprocess
from conftest import EXAMPLES  # noqa: I001

CASE = "cju0sr5ghl0nd08789uzf1raf"  # two polyps: the shipped prompter finds both


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * (a & b).sum() / total)


@pytest.fixture(scope="module")
def exported(litemedsam, tmp_path_factory):
    """The real encoder and decoder exported once (about 20 s)."""
    out = tmp_path_factory.mktemp("onnx")
    export.export_image_encoder(litemedsam, out / "encoder")
    export.export_mask_decoder(litemedsam, out / "decoder")
    return out


@pytest.fixture(scope="module")
def tiny_head(tmp_path_factory):
    """A randomly initialised 2-class head, exported (under a second)."""
    torch.manual_seed(0)
    head = EmbeddingHead(2, width=8, depth=1).eval()
    prompter = HeadPrompter(head, {1: "a", 3: "b"}, 0.6, propagation={"snap": False})
    result = export.export_head_prompter(prompter, tmp_path_factory.mktemp("head") / "h", "0" * 64)
    return prompter, result


@pytest.mark.parametrize("shape", [(100, 50), (300, 400, 3), (1000, 700), (37, 1), (64, 80, 3)])
def test_numpy_preprocess_and_postprocess_match_torch(shape):
    rng = np.random.default_rng(sum(shape))
    image = rng.random(shape).astype(np.float32)
    expected, resized = preprocess(image)
    ours, ours_resized = transforms.preprocess(image)
    assert ours_resized == resized and ours.shape == (1, 3, 256, 256)
    assert np.abs(ours - expected.numpy()).max() < 1e-5
    noise = torch.from_numpy(rng.normal(0, 20, (2, 1, 256, 256)).astype(np.float32))
    logits = torch.nn.functional.avg_pool2d(noise, 9, 1, 4)  # smooth blobs around 0
    masks = postprocess(logits, resized, shape[:2]).numpy()
    ours = transforms.postprocess(logits.numpy(), resized, shape[:2])
    assert ours.shape == masks.shape and masks.any() and dice(ours, masks) >= 0.999


def test_the_runtime_imports_no_torch():
    code = (
        "import sys, automedseg.runtime.onnx, automedseg.pipeline; "
        "sys.exit('torch' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


@pytest.mark.slow
def test_onnx_predictor_matches_torch_on_a_real_image(litemedsam, exported):
    plane = to_unit_range(io.read_image(EXAMPLES / "kvasir_seg" / "images" / f"{CASE}.jpg"))
    truth = io.read_image(EXAMPLES / "kvasir_seg" / "masks" / f"{CASE}.jpg").array[..., 0] > 127
    rows, cols = np.nonzero(truth)
    box = np.array([[cols.min(), rows.min(), cols.max(), rows.max()]], np.float32)
    reference = LiteMedSAMPredictor(litemedsam)
    reference.set_image(plane)
    ours = runtime.load_onnx_predictor(exported / "encoder.json", exported / "decoder.onnx")
    ours.set_image(plane)
    assert np.abs(ours.embedding - reference.embedding.numpy()).max() < 1e-4
    assert ours.scale == reference.scale
    mask = ours.predict(box)[0]
    assert dice(mask, reference.predict(box)[0]) >= 0.99
    assert dice(mask, truth) > 0.5  # and it is a polyp
    state = ours.encoded()
    ours.set_image(plane[:100, :80])
    ours.use(state)
    two = ours.predict(np.concatenate([box, [[0, 0, 99, 99]]]))  # the box count is dynamic
    assert two.shape == (2, *plane.shape[:2]) and (two[0] == mask).all()
    assert ours.predict(np.zeros((0, 4))).shape == (0, *plane.shape[:2])


@pytest.mark.slow
def test_shipped_prompter_in_the_pipeline_matches_torch(litemedsam, exported, tmp_path):
    from automedseg.checkpoints import read_card
    from automedseg.pipeline import segment_image
    from automedseg.prompt import load_prompter
    from automedseg.tasks import get_task

    prompter = load_prompter(get_task("polyp").prompter)
    sha = read_card(get_task("polyp").prompter)["sha256"]
    export.export_backbone_prompter(prompter, tmp_path / "prompter", sha, task="polyp")
    onnx_prompter = runtime.load_onnx_prompter(tmp_path / "prompter.json", threads=1)
    assert onnx_prompter.labels == prompter.labels and not onnx_prompter.uses_embedding
    assert onnx_prompter.refinement == prompter.refinement
    image = io.read_image(EXAMPLES / "kvasir_seg" / "images" / f"{CASE}.jpg")
    expected = segment_image(image, prompter, LiteMedSAMPredictor(litemedsam))
    predictor = runtime.load_onnx_predictor(exported / "encoder.json", exported / "decoder.json")
    result = segment_image(image, onnx_prompter, predictor)
    assert len(result.boxes) == len(expected.boxes) == 2
    np.testing.assert_allclose(result.boxes.xyxy, expected.boxes.xyxy, atol=1)
    assert dice(result.label_map > 0, expected.label_map > 0) >= 0.99


def test_onnx_head_matches_torch(tiny_head):
    prompter, result = tiny_head
    assert result.max_abs_diff < 1e-4 and result.cosine > 0.9999
    ours = runtime.load_onnx_head_prompter(result.card_path)
    assert ours.labels == {1: "a", 3: "b"} and ours.score_threshold == 0.6
    assert ours.propagation == {"snap": False}  # the card's choice travels with the export
    embedding = torch.randn(1, 256, 64, 64, generator=torch.Generator().manual_seed(1))
    probabilities = ours.probabilities(embedding.numpy())
    assert np.abs(probabilities - prompter.probabilities(embedding)).max() < 1e-5
    image = np.zeros((90, 120), np.float32)
    boxes, expected = ours.find(image, embedding.numpy()), prompter.find(image, embedding)
    assert boxes.xyxy.tolist() == expected.xyxy.tolist()
    with pytest.raises(ValueError, match="embedding"):
        ours.find(image)


def test_an_export_that_differs_from_torch_is_refused(tiny_head, tmp_path):
    prompter, result = tiny_head
    model = runtime.load_onnx_model(result.card_path, runtime.HEAD)
    other = EmbeddingHead(2, width=8, depth=1).eval()  # other random weights
    inputs = [(torch.randn(1, 256, 64, 64),)]
    with pytest.raises(WeightsError, match="differs from PyTorch"):
        export.check_parity(other, model.session, ["embedding"], inputs, tmp_path / "x.onnx")


def _edit_card(card_path, **changes):
    card = json.loads(card_path.read_text())
    card.update(changes)
    card_path.write_text(json.dumps(card))


@pytest.mark.parametrize(
    "damage, model, message",
    [
        (None, runtime.ENCODER, "the card is for 'head_prompter', expected"),
        ("flip a byte", runtime.HEAD, "SHA-256 mismatch"),
        ("tamper the card's SHA", runtime.HEAD, "SHA-256 mismatch"),
        ("flip a byte and fix the SHA", runtime.HEAD, "not a loadable ONNX model"),
        ("remove the card", runtime.HEAD, "no model card h.json beside the ONNX file"),
        ("another version", runtime.HEAD, "exported by automedseg 0.0.1"),
        ("a prompter card", runtime.HEAD, "not an ONNX model card"),
    ],
)
def test_foreign_or_damaged_onnx_files_are_weights_errors(
    tiny_head, tmp_path, damage, model, message
):
    _, result = tiny_head
    onnx_path, card_path = tmp_path / "h.onnx", tmp_path / "h.json"
    shutil.copyfile(result.onnx_path, onnx_path)
    shutil.copyfile(result.card_path, card_path)
    if damage and "flip a byte" in damage:
        data = bytearray(onnx_path.read_bytes())
        data[len(data) // 3] ^= 0xFF
        data[10:60] = b"\xff" * 50  # the graph's header too, so that it cannot parse
        onnx_path.write_bytes(bytes(data))
        if "fix" in damage:
            _edit_card(card_path, sha256=runtime.hashlib.sha256(bytes(data)).hexdigest())
    elif damage == "tamper the card's SHA":
        _edit_card(card_path, sha256="0" * 64)
    elif damage == "remove the card":
        card_path.unlink()
    elif damage == "another version":
        _edit_card(card_path, automedseg_version="0.0.1")
    elif damage == "a prompter card":
        _edit_card(card_path, kind="head")
    with pytest.raises(WeightsError, match=message) as error:
        runtime.load_onnx_model(onnx_path, model)
    assert "\n" not in str(error.value)


def test_yolonas_network_exports_its_raw_outputs(tmp_path):
    pytest.importorskip("modern_yolonas")
    from automedseg.prompt.yolonas import YoloNasPrompter, build_yolonas, fuse_for_inference

    torch.manual_seed(0)
    prompter = YoloNasPrompter(fuse_for_inference(build_yolonas(1)), {1: "x"}, input_size=64)
    result = export.export_yolonas_prompter(prompter, tmp_path / "yolo", "0" * 64)
    model = runtime.load_onnx_model(result.card_path, runtime.YOLONAS)
    assert [o["name"] for o in model.card["outputs"]] == ["boxes", "scores"]
    assert model.card["input_size"] == 64 and result.max_abs_diff < 1e-2
    boxes, scores = model.run(image=np.random.default_rng(0).random((1, 3, 64, 64), np.float32))
    assert boxes.shape[-1] == 4 and scores.shape[-1] == 1 and boxes.shape[1] == scores.shape[1]


@pytest.mark.slow
def test_encoding_planes_together_gives_the_embeddings_of_one_by_one(litemedsam):
    """PyTorch batches; OpenVINO runs planes on several streams: same embeddings."""
    from automedseg.runtime.onnx import ENCODER, OnnxLiteMedSAMPredictor
    from automedseg.runtime.openvino import load_openvino_model
    from automedseg.segment.litemedsam import LiteMedSAMPredictor

    rng = np.random.default_rng(0)
    planes = [rng.random((40 + 8 * i, 50)).astype(np.float32) for i in range(3)]
    predictor = LiteMedSAMPredictor(litemedsam)
    together = predictor.encode_many(planes, batch=2)
    for plane, state in zip(planes, together, strict=True):
        predictor.set_image(plane)
        np.testing.assert_allclose(state[0].numpy(), predictor.embedding.numpy(), atol=1e-4)
        assert state[1:] == predictor.encoded()[1:]
    from automedseg.tasks import MODELS_DIR

    card = MODELS_DIR / "polyp" / "openvino" / "image_encoder.json"
    encoder = load_openvino_model(card, ENCODER, threads=2)
    exported = OnnxLiteMedSAMPredictor(encoder, None)
    streams = exported.encode_many(planes)
    for plane, state in zip(planes, streams, strict=True):
        exported.set_image(plane)
        np.testing.assert_array_equal(state[0], exported.embedding)
