"""INT8 quantization (recipes, calibration planes, fidelity, the model set and its runtime)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from automedseg import io
from automedseg.deploy import export
from automedseg.deploy.calibration import MIN_PLANES, calibration_planes
from automedseg.deploy.fidelity import Runtime, label_dice, measure, reference_outputs
from automedseg.deploy.quantize import Recipe, quantize_model
from automedseg.errors import AutomedsegError, InputError, WeightsError
from automedseg.prompt.head import EmbeddingHead, HeadPrompter
from automedseg.prompt.oracle import FixedBoxes
from automedseg.runtime import onnx as runtime
from automedseg.runtime.model_set import REPORT, choose_runtime, load_model_set
from automedseg.runtime.onnx import ENCODER
from automedseg.runtime.openvino import load_openvino_model
from automedseg.tasks import MODELS_DIR, get_task
from automedseg.types import Boxes
from conftest import EXAMPLES  # noqa: I001

STATIC_CONV = Recipe("static-conv", static=True, op_types=("Conv",))


@pytest.fixture(scope="module")
def small_head(tmp_path_factory):
    """A randomly initialised head exported to ONNX, and embeddings to calibrate it on."""
    torch.manual_seed(0)
    prompter = HeadPrompter(EmbeddingHead(1, width=16, depth=2).eval(), {1: "a"}, 0.5)
    result = export.export_head_prompter(prompter, tmp_path_factory.mktemp("head") / "h", "1" * 64)
    rng = np.random.default_rng(0)
    embeddings = [rng.normal(0, 0.3, (1, 256, 64, 64)).astype(np.float32) for _ in range(6)]
    return result, embeddings


def test_static_int8_head_follows_float32_and_loads_like_it(small_head, tmp_path):
    result, embeddings = small_head
    card_path = quantize_model(
        result.card_path, tmp_path / "h8", STATIC_CONV, [{"embedding": e} for e in embeddings[:4]]
    )
    card = json.loads(card_path.read_text())
    assert card["precision"] == "int8" and card["quantization"]["calibration_inputs"] == 4
    assert card["quantization"]["recipe"]["op_types"] == ["Conv"]
    int8 = runtime.load_onnx_model(card_path, runtime.HEAD)  # SHA-256 and I/O checked
    fp32 = runtime.load_onnx_model(result.card_path, runtime.HEAD)
    assert any(n.op_type == "QuantizeLinear" for n in _graph(int8.path).node)
    for embedding in embeddings[4:]:  # not calibrated on
        want = fp32.run(embedding=embedding)[0].ravel()
        got = int8.run(embedding=embedding)[0].ravel()
        assert np.dot(want, got) / np.linalg.norm(want) / np.linalg.norm(got) > 0.99


def test_a_static_recipe_needs_calibration_and_a_failure_leaves_nothing(small_head, tmp_path):
    result, _ = small_head
    with pytest.raises(ValueError, match="needs calibration inputs"):
        quantize_model(result.card_path, tmp_path / "x", STATIC_CONV)
    wrong = [{"image": np.zeros((1, 3, 8, 8), np.float32)}]  # not the head's input
    with pytest.raises(WeightsError, match="quantization with static-conv failed"):
        quantize_model(result.card_path, tmp_path / "y", STATIC_CONV, wrong)
    assert [p.name for p in tmp_path.iterdir()] == []


def _write_pngs(folder, count, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        PILImage.fromarray(rng.integers(0, 255, (24, 32), np.uint8)).save(folder / f"c{i:02d}.png")


def test_calibration_needs_enough_readable_images(tmp_path):
    _write_pngs(tmp_path, MIN_PLANES - 3)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match=f"at least {MIN_PLANES} .* found 9 \\(1 unreadable\\)"):
        calibration_planes(tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        calibration_planes(tmp_path / "missing")


def test_calibration_takes_more_planes_of_each_volume_when_there_are_few(tmp_path):
    import nibabel as nib

    rng = np.random.default_rng(0)
    for i in range(3):  # like the 3 BraTS training volumes of brain-tumour
        volume = rng.integers(0, 1000, (24, 20, 30)).astype(np.int16)
        nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / f"v{i}.nii.gz")
    planes = calibration_planes(tmp_path)
    assert len(planes.calibration) + len(planes.held_out) == 2 * MIN_PLANES  # 8 per volume


def test_calibration_of_a_data_set_uses_its_training_split_only(tmp_path):
    _write_pngs(tmp_path / "images", 20)
    _write_pngs(tmp_path / "masks", 20, seed=1)
    planes = calibration_planes(tmp_path, limit=48, train_split=(0.2, 0, None))
    assert len(planes.calibration) + len(planes.held_out) == 16  # 4 validation cases left out
    assert len(planes.held_out) == 5 and "training split" in planes.source
    everything = calibration_planes(tmp_path, limit=12)
    assert len(everything.calibration) == 8 and len(everything.held_out) == 4


class ThresholdSegmenter:
    """A stand-in segmenter: the mask of a box is the bright pixels inside it."""

    def __init__(self, level: float) -> None:
        self.level, self.embedding = level, None

    def set_image(self, image: np.ndarray) -> None:
        self.image, self.embedding = image, image[None]

    def predict(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        masks = np.zeros((len(boxes_xyxy), *self.image.shape), bool)
        for mask, (x0, y0, x1, y1) in zip(masks, boxes_xyxy.astype(int), strict=True):
            mask[y0 : y1 + 1, x0 : x1 + 1] = self.image[y0 : y1 + 1, x0 : x1 + 1] > self.level
        return masks


def test_fidelity_is_one_for_the_same_runtime_and_drops_for_a_different_one():
    plane = np.zeros((20, 20), np.float32)
    plane[5:15, 5:10], plane[5:15, 10:15] = 0.9, 0.6
    boxes = FixedBoxes(Boxes.from_list([(4, 4, 16, 16)]))
    reference = Runtime(ThresholdSegmenter(0.5), boxes)
    outputs = reference_outputs(reference, [plane])
    same = measure(Runtime(ThresholdSegmenter(0.5), boxes), [plane], outputs)
    assert same.same_box_dice == same.auto_dice == 1.0 and same.drop() == 0.0
    half = measure(Runtime(ThresholdSegmenter(0.7), boxes), [plane], outputs)
    assert half.same_box_dice == pytest.approx(2 * 50 / 150) and half.drop() > 0.3
    assert label_dice(np.zeros((3, 3)), np.zeros((3, 3))) == 1.0


def test_the_default_runtime_follows_the_recorded_fidelity(tmp_path):
    assert choose_runtime(None, None) == "torch"
    assert choose_runtime("onnx", None) == "onnx"
    (tmp_path / REPORT).write_text(json.dumps({"int8": {"within_budget": True}}))
    assert choose_runtime(None, tmp_path) == "torch"  # the report alone, no int8/ models
    (tmp_path / "int8").mkdir()
    assert choose_runtime(None, tmp_path) == "int8"
    (tmp_path / REPORT).write_text(json.dumps({"int8": {"within_budget": False}}))
    assert choose_runtime(None, tmp_path) == "torch"
    both = {"int8": {"within_budget": True}, "openvino": {"within_budget": True}}
    (tmp_path / REPORT).write_text(json.dumps(both))
    assert choose_runtime(None, tmp_path) == "int8"  # no openvino/ folder: not chosen
    (tmp_path / "openvino").mkdir()
    assert choose_runtime(None, tmp_path) == "openvino"
    with pytest.raises(AutomedsegError, match="unknown runtime 'fp16'"):
        choose_runtime("fp16", tmp_path)
    with pytest.raises(AutomedsegError, match="needs ONNX models: pass --models"):
        load_model_set(None, "int8", None)
    with pytest.raises(WeightsError, match="no onnx/ models here"):
        load_model_set(tmp_path, "onnx", None)


@pytest.mark.slow
def test_shipped_openvino_set_segments_without_torch_and_refuses_another_prompter(tmp_path):
    image = sorted((EXAMPLES / "kvasir_seg" / "images").glob("*.jpg"))[0]
    code = (
        "import sys; from automedseg.cli import main; "
        f"code = main(['segment', {str(image)!r}, '--out', {str(tmp_path)!r}, '--task', 'polyp', "
        "'--no-progress']); heavy = [m for m in ('torch', 'scipy') if m in sys.modules]; "
        "sys.exit(f'imported {heavy}' if heavy else code)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    # the default runtime is openvino: neither torch nor scipy (~40 MB of a 500 MB budget)
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / f"{image.stem}.json").read_text())
    assert summary["objects"] and io.read_image(tmp_path / f"{image.stem}_mask.png").array.any()
    folder = get_task("polyp").model_set
    with pytest.raises(WeightsError, match="made from another prompter"):
        load_model_set(folder, "openvino", "f" * 64)
    copy = tmp_path / "set"
    shutil.copytree(folder / "openvino", copy / "openvino")
    card = json.loads((copy / "openvino" / "image_encoder.json").read_text())
    card["model"] = runtime.HEAD
    (copy / "openvino" / "image_encoder.json").write_text(json.dumps(card))
    with pytest.raises(WeightsError, match="expected 'litemedsam_image_encoder'"):
        load_model_set(copy, "openvino", None)


def _graph(path):
    import onnx

    return onnx.load(str(path)).graph


def _random_adapter_delta(path):
    """A LiteMedSAM with small random adapters and their delta card (as if trained)."""
    from automedseg.segment.delta import save_delta, trainable
    from automedseg.segment.litemedsam import load_litemedsam

    model = load_litemedsam()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in trainable(model, "adapter"):
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.005)
    return model.eval(), save_delta(path, model, "adapter", {}, {})


@pytest.mark.slow
def test_quantize_a_task_end_to_end_on_a_plain_image_folder(litemedsam, tmp_path):
    from automedseg.deploy.quantize_task import FLOAT32, quantize_task

    _write_pngs(tmp_path / "calib", 12)
    tuned, delta = _random_adapter_delta(tmp_path / "delta.safetensors")
    recipes = {
        "encoder": (Recipe("dynamic-matmul", static=False, op_types=("MatMul", "Gemm")),),
        "decoder": (FLOAT32,),
        "prompter": (FLOAT32, STATIC_CONV),
    }
    report = quantize_task(
        tmp_path / "out", task="polyp", calib=tmp_path / "calib", limit=12, recipes=recipes,
        segmenter_weights=delta,
    )  # fmt: skip
    assert (report["planes"]["calibration"], report["planes"]["held_out"]) == (8, 4)
    delta_sha = json.loads(delta.read_text())["sha256"]
    assert report["segmenter_delta"]["sha256"] == delta_sha
    encoder = runtime.load_onnx_model(tmp_path / "out" / "onnx" / "image_encoder.json",
                                      runtime.ENCODER)  # fmt: skip
    decoder_card = json.loads((tmp_path / "out" / "onnx" / "mask_decoder.json").read_text())
    assert encoder.card["source"]["delta_sha256"] == decoder_card["source"]["delta_sha256"]
    assert encoder.card["source"]["delta_sha256"] == delta_sha
    image = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        want = tuned.image_encoder(image).numpy()
        frozen = litemedsam.image_encoder(image).numpy()
    got = encoder.run(image=image.numpy())[0]
    tolerance = 1e-3 * np.abs(want).max()
    assert np.abs(got - want).max() <= tolerance  # ONNX = torch with the delta
    assert np.abs(got - frozen).max() > 10 * tolerance  # and the delta is in it
    precision = report["openvino"]["precision"]
    # polyp's backbone prompter stays float32 on ONNX Runtime (static-conv is not tried on
    # it); on OpenVINO each model gets its INT8 and float32 variants, the encoder and the
    # prompter again if the decoder changed
    f32 = precision == "bf16"
    prompter = ("prompter", "openvino-f32" if f32 else "openvino-float16-weights")  # maps: f32
    encoders = [("encoder", "openvino-int8-weights"),
                *([("encoder", "openvino-f32"), ("encoder", "openvino-f32-int8-weights")] * f32),
                ("encoder", "openvino-int8-matmul")]  # fmt: skip
    tried = [(c["model"], c["recipe"]) for c in report["candidates"]]
    assert tried[:11 + 4 * f32] == [
        ("encoder", "dynamic-matmul"), ("decoder", "float32"), ("prompter", "float32"),
        ("encoder", "openvino-float16-weights"), *encoders,
        prompter, ("prompter", "openvino-int8"),
        ("decoder", "openvino-float16-weights"), ("decoder", "openvino-int8-weights"),
        *([("decoder", "openvino-f32"), ("decoder", "openvino-f32-int8-weights")] * f32),
        ("decoder", "openvino-int8-matmul"),
    ]  # fmt: skip
    again = tried[11 + 4 * f32:]
    assert again == [] or sorted(again) == sorted([
        ("encoder", "openvino-float16-weights"), *encoders,
        prompter, ("prompter", "openvino-int8"),
    ])  # fmt: skip
    int8 = report["int8"]
    assert int8["recipes"]["encoder"] == "dynamic-matmul" and int8["truth_drop"] is None
    assert 0.0 <= int8["same_box_dice"] <= 1.0 and isinstance(int8["within_budget"], bool)
    saved = json.loads((tmp_path / "out" / REPORT).read_text())
    assert saved["int8"] == int8
    from automedseg.checkpoints import read_card

    sha = read_card(get_task("polyp").prompter)["sha256"]
    model_set = load_model_set(tmp_path / "out", "int8", sha)
    assert model_set.prompter is not None
    assert model_set.predictor.encoder.card["precision"] == "int8"
    openvino = load_model_set(tmp_path / "out", "openvino", sha)
    assert openvino.predictor.encoder.card["source"]["delta_sha256"] == delta_sha
    assert saved["openvino"]["recipes"]["encoder"] in ("float16-weights", "int8-weights",
                                                      "int8-matmul")  # fmt: skip
    openvino.predictor.set_image(np.random.default_rng(0).random((60, 80), np.float32))
    assert openvino.predictor.predict(np.array([[10, 10, 40, 40]])).shape == (1, 60, 80)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--box", "1", "1", "20", "20", "--runtime", "int8"], "needs ONNX models: pass --models"),
        (["--task", "polyp", "--runtime", "onnx"], "no onnx/ models here"),
        (["--box", "1", "1", "20", "20", "--runtime", "int8", "--segmenter", "medsam2"],
         "does not take --segmenter medsam2"),
        (["--task", "polyp", "--runtime", "int8", "--segmenter-weights", "tuned.json"],
         "--segmenter-weights (use --runtime torch)"),
    ],
)  # fmt: skip
def test_runtime_choices_that_cannot_work_are_one_clear_line(tmp_path, capsys, extra, message):
    from automedseg.cli import main

    image = sorted((EXAMPLES / "kvasir_seg" / "images").glob("*.jpg"))[0]
    code = main(["segment", str(image), "--out", str(tmp_path / "o"), "--no-progress", *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_default_calibration_is_the_training_split_of_the_prompters_own_data(tmp_path):
    from automedseg.deploy.quantize_task import _planes

    _write_pngs(tmp_path / "images", 30)
    _write_pngs(tmp_path / "masks", 30, seed=1)
    training = {"data": str(tmp_path), "val_fraction": 0.2, "seed": 0, "case_limit": 25}
    planes = _planes(None, {"training": training}, limit=64)
    assert len(planes.calibration) + len(planes.held_out) == 20  # 25 cases, 5 for validation
    assert planes.held_out_truth is not None and "training split" in planes.source
    with pytest.raises(AutomedsegError, match="pass --calib DIR"):
        _planes(None, {"training": {**training, "data": str(tmp_path / "gone")}}, limit=64)


def test_quantize_with_a_poor_calibration_folder_is_one_line_and_writes_nothing(tmp_path, capsys):
    from automedseg.cli import main

    _write_pngs(tmp_path / "calib", 5)
    (tmp_path / "calib" / "scan.png").write_bytes(b"\x89PNG broken")
    out = tmp_path / "out"
    calib = str(tmp_path / "calib")
    code = main(["quantize", "--task", "polyp", "--calib", calib, "--out", str(out),
                 "--segmenter-weights", str(tmp_path / "tuned.json")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "at least 12 readable images" in err and "found 5 (1 unreadable)" in err
    assert not out.exists()


def test_with_masks_the_budget_counts_dice_lost_against_them_not_disagreement():
    plane = np.zeros((20, 20), np.float32)
    plane[5:15, 5:10], plane[5:15, 10:15] = 0.9, 0.6
    truth = (plane > 0.5).astype(np.uint8)
    boxes = FixedBoxes(Boxes.from_list([(4, 4, 16, 16)]))
    reference = Runtime(ThresholdSegmenter(0.7), boxes)  # finds half of the truth
    outputs = reference_outputs(reference, [plane])
    better = measure(Runtime(ThresholdSegmenter(0.5), boxes), [plane], outputs, [truth])
    assert better.same_box_dice < 0.7 and better.drop() < 0  # disagrees, but gains Dice
    worse = measure(Runtime(ThresholdSegmenter(0.95), boxes), [plane], outputs, [truth])
    assert worse.same_box_truth_drop == pytest.approx(2 * 50 / 150) and worse.drop() > 0.6


def test_a_student_of_another_litemedsam_is_refused_before_the_exports(tmp_path):
    from automedseg.checkpoints import save_checkpoint
    from automedseg.deploy.quantize_task import quantize_task
    from automedseg.train.encoder import build_student

    _write_pngs(tmp_path / "calib", 12)
    card = save_checkpoint(tmp_path / "s" / "encoder.safetensors", build_student(16).state_dict(),
                           {"kind": "student_encoder", "architecture": {"width": 16},
                            "teacher": {"delta_sha256": "ab" * 32}})  # fmt: skip
    with pytest.raises(WeightsError, match="learnt from LiteMedSAM with delta abab"):
        quantize_task(tmp_path / "out", task="polyp", calib=tmp_path / "calib", limit=12,
                      runtimes=("openvino",), student=card)  # fmt: skip
    assert not (tmp_path / "out" / "onnx" / "image_encoder.onnx").exists()
    with pytest.raises(AutomedsegError, match="--student is an encoder of the OpenVINO set"):
        quantize_task(tmp_path / "out", task="polyp", calib=tmp_path / "calib", limit=12,
                      runtimes=("int8",), student=card)  # fmt: skip


def test_a_model_sets_student_is_a_candidate_as_it_is(tmp_path):
    from automedseg.deploy.quantize_task import _student_ir

    shipped = MODELS_DIR / "polyp" / "openvino" / "image_encoder.json"
    copied = _student_ir(shipped, None, tmp_path, [])
    assert copied == tmp_path / "candidates" / "image_encoder-student.json"
    want, got = json.loads(shipped.read_text()), json.loads(copied.read_text())
    assert got["sha256"] == want["sha256"] and got["bin_sha256"] == want["bin_sha256"]
    assert got["source"] == want["source"]
    load_openvino_model(copied, ENCODER)  # the copy loads and passes its checks
    altered = tmp_path / "altered"
    shutil.copytree(shipped.parent, altered)
    (altered / "image_encoder.bin").write_bytes(b"\x00" * 16)
    with pytest.raises(WeightsError, match="SHA-256"):
        _student_ir(altered / "image_encoder.json", None, tmp_path / "again", [])
    with pytest.raises(WeightsError, match="learnt from LiteMedSAM with delta None; the task"):
        _student_ir(shipped, "ab" * 32, tmp_path / "other", [])  # a task with adapters
    with pytest.raises(WeightsError, match="not a distilled image encoder"):
        _student_ir(MODELS_DIR / "lungs" / "openvino" / "image_encoder.json", None,
                    tmp_path / "tinyvit", [])  # fmt: skip
