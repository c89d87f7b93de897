"""The MedSAM2 / SAM2.1-tiny backend (the sam2 package) on tiny synthetic inputs.

A randomly initialised SAM2.1-tiny at 512 px gives arbitrary masks: these tests check the
wiring, shapes, geometry and weight checks, never accuracy.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

sam2 = pytest.importorskip("sam2")

from automedseg import io  # noqa: E402
from automedseg.cli import main  # noqa: E402
from automedseg.errors import WeightsError  # noqa: E402
from automedseg.pipeline import sam2 as sam2_pipeline  # noqa: E402
from automedseg.segment import medsam2  # noqa: E402
from automedseg.types import Boxes, Geometry  # noqa: E402


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A random-weight SAM2.1-tiny-512 saved as MedSAM2 saves its checkpoints."""
    torch.manual_seed(0)
    model = medsam2.build_sam2(512)
    path = tmp_path_factory.mktemp("sam2") / "random_sam2.1_tiny.pt"
    torch.save({"model": model.state_dict()}, path)
    return path


def blob_volume(depth: int = 4, size: int = 64) -> np.ndarray:
    """(Z, Y, X) uint8: a bright square that drifts one pixel per slice on a dim background."""
    volume = np.full((depth, size, size), 20, np.uint8)
    for z in range(depth):
        volume[z, 20 + z : 44 + z, 16:40] = 200
    return volume


# ------------------------------------------------------------------ preprocessing


@pytest.mark.parametrize("rgb", [False, True])
def test_model_input_matches_sam2s_own_frame_loader(tmp_path, rgb):
    from sam2.utils.misc import load_video_frames

    rng = np.random.default_rng(0)
    shape = (30, 41, 3) if rgb else (30, 41)
    PILImage.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(tmp_path / "0.jpg")
    decoded = np.asarray(PILImage.open(tmp_path / "0.jpg"))  # what sam2 reads back
    images, height, width = load_video_frames(
        str(tmp_path), 512, offload_video_to_cpu=True, compute_device=torch.device("cpu")
    )
    ours = medsam2.to_model_input(decoded / 255.0, 512)
    assert (height, width) == (30, 41) and ours.shape == (3, 512, 512)
    torch.testing.assert_close(ours, images[0], atol=1e-6, rtol=0)


def test_frames_that_are_neither_gray_nor_rgb_are_refused():
    from automedseg.errors import InputError

    with pytest.raises(InputError, match="gray or RGB"):
        medsam2.to_model_input(np.zeros((8, 8, 2)), 512)


# ------------------------------------------------------------------ tracking


class FakePredictor:
    """Stands in for sam2's video predictor: each object's logit is its id inside its box."""

    image_size = 512

    def forward_image(self, image):
        assert image.shape == (3, 512, 512)
        return {}

    def init_state(self, video_path):
        import sam2.sam2_video_predictor as upstream

        frames, height, width = upstream.load_video_frames(
            video_path=video_path, image_size=512, offload_video_to_cpu=False
        )
        return {"frames": frames, "hw": (height, width), "boxes": {}}

    def add_new_points_or_box(self, state, frame_idx, obj_id, box):
        state["boxes"][obj_id] = (frame_idx, np.asarray(box).astype(int))

    def propagate_in_video(self, state, reverse=False):
        start = min(z for z, _ in state["boxes"].values())
        frames = range(start, -1, -1) if reverse else range(start, len(state["frames"]))
        ids = list(state["boxes"])
        for z in frames:
            self.forward_image(state["frames"][z])
            logits = -torch.ones(len(ids), 1, *state["hw"])
            for i, (_, (x0, y0, x1, y1)) in enumerate(state["boxes"].values()):
                logits[i, 0, y0 : y1 + 1, x0 : x1 + 1] = ids[i]
            yield z, ids, logits


def test_tracking_paints_labels_and_the_higher_logit_wins():
    seeds = {
        1: Boxes(np.array([[0, 0, 5, 5]]), np.array([7]), 0.9),
        3: Boxes(np.array([[4, 4, 9, 9]]), np.array([3]), 0.8),  # object 2: higher logit
    }
    model = FakePredictor()
    tracking = medsam2.track_boxes(model, np.random.rand(5, 12, 16), seeds)
    expected = np.zeros((12, 16), np.uint8)
    expected[0:6, 0:6] = 7
    expected[4:10, 4:10] = 3
    assert tracking.label_map.shape == (5, 12, 16)
    assert all(np.array_equal(frame, expected) for frame in tracking.label_map)
    assert set(np.unique(tracking.instance_map)) == {0, 1, 2}
    assert tracking.encoded_frames == 6  # frames 1..4 forward, 1..0 backward
    assert set(tracking.times) == {"sam2_encoder", "sam2_tracking"}
    assert "forward_image" not in vars(model)  # the timer is removed again


def test_no_seeds_means_an_empty_label_map():
    tracking = medsam2.track_boxes(FakePredictor(), np.zeros((3, 8, 8)), {})
    assert tracking.label_map.shape == (3, 8, 8) and not tracking.label_map.any()


# ------------------------------------------------------------------ CLI end to end


def test_cli_volume_with_a_box_on_one_slice(tmp_path, checkpoint, capsys):
    geometry = Geometry.from_spacing((2.5, 0.8, 0.7))
    scan = io.write_nifti(tmp_path / "scan.nii.gz", blob_volume(), geometry)
    out = tmp_path / "out"
    code = main(
        ["segment", str(scan), "--out", str(out), "--segmenter", "medsam2",
         "--checkpoint", str(checkpoint), "--box", "15", "20", "40", "45",
         "--box", "0", "0", "12", "12", "--slice", "1", "--no-progress"]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    seg = io.read_image(out / "scan_seg.nii.gz")
    assert seg.shape == (4, 64, 64)
    np.testing.assert_allclose(seg.geometry.affine, geometry.affine)
    assert set(np.unique(seg.array)) <= {0, 1, 2}
    assert (out / "scan_overlay.png").is_file()
    summary = json.loads((out / "scan.json").read_text())
    assert [o["label"] for o in summary["objects"]] == [1, 2]
    assert [o["slice_index"] for o in summary["objects"]] == [1, 1]
    assert summary["objects"][0]["box_xyxy"] == [15, 20, 40, 45]
    assert summary["segmenter"] == "SAM2.1-hiera-tiny"


def test_cli_frame_folder_is_a_video(tmp_path, checkpoint, capsys):
    folder = tmp_path / "clip"
    folder.mkdir()
    frames = np.stack([np.stack([v, v // 2, 255 - v], axis=-1) for v in blob_volume(4, 48)])
    for index, frame in enumerate(frames):
        PILImage.fromarray(frame.astype(np.uint8)).save(folder / f"{index:04d}.png")
    out = tmp_path / "out"
    code = main(
        ["segment", str(folder), "--out", str(out), "--segmenter", "medsam2",
         "--checkpoint", str(checkpoint), "--box", "10", "18", "30", "40", "--no-progress"]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    masks = sorted((out / "clip_masks").glob("*.png"))
    assert [m.stem for m in masks] == ["0000", "0001", "0002", "0003"]
    assert all(np.asarray(PILImage.open(m)).shape == (48, 48) for m in masks)
    assert (out / "clip_overlay.mp4").is_file()
    summary = json.loads((out / "clip.json").read_text())
    assert [o["slice_index"] for o in summary["objects"]] == [2]  # the middle frame


def test_cli_2d_image_is_a_one_frame_video(tmp_path, checkpoint, capsys):
    PILImage.fromarray(blob_volume(1, 40)[0]).save(tmp_path / "xray.png")
    code = main(
        ["segment", str(tmp_path / "xray.png"), "--out", str(tmp_path / "out"),
         "--segmenter", "medsam2", "--checkpoint", str(checkpoint),
         "--box", "10", "15", "30", "35", "--no-progress"]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    mask = np.asarray(PILImage.open(tmp_path / "out" / "xray_mask.png"))
    assert mask.shape == (40, 40) and set(np.unique(mask)) <= {0, 1}


def test_cli_medsam2_needs_a_checkpoint(tmp_path, capsys):
    code = main(["segment", "x.png", "--out", str(tmp_path), "--segmenter", "medsam2",
                 "--box", "1", "1", "5", "5"])  # fmt: skip
    assert code == 2
    assert "--checkpoint" in capsys.readouterr().err


def test_cli_without_the_sam2_package_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "sam2.build_sam", None)  # import now fails
    code = main(["segment", "x.png", "--out", str(tmp_path), "--segmenter", "medsam2",
                 "--checkpoint", "ck.pt", "--box", "1", "1", "5", "5"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "pip install" in err and "sam2==1.1.0" in err


# ------------------------------------------------------------------ weights


def test_checkpoint_is_loaded_weights_only(checkpoint, monkeypatch):
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    model = medsam2.build_sam2(512, checkpoint)
    assert calls == [True]
    assert model.image_size == 512 and not model.training


def test_a_bare_state_dict_loads_too_and_fits_either_image_size(tmp_path, checkpoint):
    """SAM2's parameters do not depend on the input size: a 512 checkpoint fits at 1024."""
    bare = tmp_path / "bare.pt"
    torch.save(torch.load(checkpoint, weights_only=True)["model"], bare)
    assert medsam2.build_sam2(1024, bare).image_size == 1024


def test_a_tensor_of_the_wrong_shape_is_refused(tmp_path, checkpoint):
    state = torch.load(checkpoint, weights_only=True)["model"]
    state["sam_mask_decoder.iou_token.weight"] = torch.zeros(1, 128)
    torch.save({"model": state}, tmp_path / "bad.pt")
    with pytest.raises(WeightsError, match=r"1 tensor\(s\) of another shape.*iou_token") as info:
        medsam2.build_sam2(512, tmp_path / "bad.pt")
    assert "\n" not in str(info.value) and "bad.pt" in str(info.value)


def test_a_partial_checkpoint_names_the_missing_keys(tmp_path, checkpoint):
    state = torch.load(checkpoint, weights_only=True)["model"]
    partial = {k: v for k, v in state.items() if not k.startswith("memory_encoder.")}
    torch.save({"model": partial}, tmp_path / "partial.pt")
    with pytest.raises(WeightsError, match=r"missing \(e.g. memory_encoder\."):
        medsam2.build_sam2(512, tmp_path / "partial.pt")


def test_files_that_are_not_sam2_checkpoints_are_refused(tmp_path):
    torch.save({"model": {"conv.weight": torch.zeros(3, 3)}}, tmp_path / "other.pt")
    with pytest.raises(WeightsError, match="not a SAM2.1-tiny checkpoint"):
        medsam2.build_sam2(512, tmp_path / "other.pt")
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    with pytest.raises(WeightsError, match="not a readable PyTorch checkpoint"):
        medsam2.build_sam2(512, tmp_path / "notes.pt")
    with pytest.raises(WeightsError, match="does not exist"):
        medsam2.build_sam2(512, tmp_path / "missing.pt")


def test_sha256_is_checked(checkpoint):
    with pytest.raises(WeightsError, match="SHA-256 mismatch"):
        medsam2.build_sam2(512, checkpoint, sha256="0" * 64)


# ------------------------------------------------------------------ seeds from a prompter


class PlaneFinder:
    """A stand-in prompter: fixed (box, label, score) answers per plane."""

    labels = {1: "thing", 2: "other"}
    score_threshold = 0.5

    def __init__(self, answers, uses_embedding=False):
        self.answers, self.uses_embedding, self.seen = answers, uses_embedding, []

    def find(self, image, embedding=None):
        z = int(round(image[0, 0] * 100))  # each plane carries its index in pixel (0, 0)
        self.seen.append((z, embedding))
        found = self.answers.get(z, [])
        return Boxes(
            np.array([b for b, _, _ in found], np.float32).reshape(-1, 4),
            np.array([lab for _, lab, _ in found], int),
            np.array([s for _, _, s in found], np.float32),
        )


def indexed_frames(depth: int) -> np.ndarray:
    frames = np.zeros((depth, 32, 32), np.float32)
    frames[:, 0, 0] = np.arange(depth) / 100
    return frames


def test_seeds_link_boxes_across_prompted_planes_and_seed_at_the_best():
    a, a_moved, far = [2, 2, 12, 12], [3, 3, 13, 13], [20, 20, 30, 30]
    finder = PlaneFinder({
        0: [(a, 1, 0.6)],
        2: [(a_moved, 1, 0.9), (far, 1, 0.7)],
        4: [(a, 1, 0.8), (far, 2, 0.95)],  # another label: another object
    })  # fmt: skip
    seeds, seed_frames = sam2_pipeline.find_seeds(indexed_frames(6), finder, stride=2)
    assert [z for z, _ in finder.seen] == [0, 2, 4]
    assert sorted(seeds) == [2, 4] and seed_frames == [2, 2, 4]
    np.testing.assert_array_equal(seeds[2].xyxy, [a_moved, far])
    np.testing.assert_array_equal(seeds[2].labels, [1, 1])
    np.testing.assert_array_equal(seeds[4].labels, [2])


def test_seeds_from_an_embedding_prompter_encode_only_the_prompted_planes():
    class Embedder:
        def __init__(self):
            self.encoded = []

        def set_image(self, image):
            self.encoded.append(int(round(image[0, 0] * 100)))
            self.embedding = f"embedding of {self.encoded[-1]}"

    embedder = Embedder()
    finder = PlaneFinder({3: [([1, 1, 5, 5], 1, 0.9)]}, uses_embedding=True)
    seeds, _ = sam2_pipeline.find_seeds(indexed_frames(7), finder, embedder, stride=3)
    assert embedder.encoded == [0, 3, 6]
    assert finder.seen[1] == (3, "embedding of 3") and list(seeds) == [3]
