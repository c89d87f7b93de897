"""LiteMedSAM and the map prompters on ONNX Runtime, without torch.

Every model is an ``.onnx`` file with a JSON card beside it (same stem, written by
``deploy.export``): kind "onnx", which model it is, its inputs and outputs, the opset, the
SHA-256 of the source weights and of the ONNX file, and the automedseg version that wrote
it. ``load_onnx_model`` checks all of that before building a session and raises
``errors.WeightsError`` with a one-line reason otherwise.

``OnnxLiteMedSAMPredictor`` has the interface of ``segment.litemedsam.LiteMedSAMPredictor``
(the embedding is a numpy array); ``OnnxHeadPrompter`` and ``OnnxBackbonePrompter`` implement
``prompt.base.Prompter`` (``load_onnx_prompter`` reads either),
so ``pipeline.segment_image`` runs unchanged with them. Nothing here imports torch: keep it
that way (``tests/test_onnx.py`` checks).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from automedseg import __version__
from automedseg.checkpoints import read_card
from automedseg.errors import WeightsError
from automedseg.prompt.backbone_space import combined, member_views
from automedseg.prompt.base import card_propagation, card_refinement
from automedseg.prompt.components import ClassMaps, FindsWithMaps, map_prompter_boxes
from automedseg.resample import resize_bilinear
from automedseg.runtime.transforms import postprocess, preprocess
from automedseg.segment.model_space import IMAGE_SIZE
from automedseg.types import Boxes

KIND = "onnx"
ONNX_CARD_VERSION = 1
ENCODER = "litemedsam_image_encoder"
DECODER = "litemedsam_mask_decoder"
HEAD = "head_prompter"
BACKBONE = "backbone_prompter"
YOLONAS = "yolonas_prompter"
MODELS = (ENCODER, DECODER, HEAD, BACKBONE, YOLONAS)

Encoded = tuple[np.ndarray, tuple[int, int], tuple[int, int]]


@dataclass
class OnnxModel:
    """An ONNX Runtime session and the card it was checked against."""

    session: Any  # onnxruntime.InferenceSession
    card: dict[str, Any]
    path: Path

    @property
    def name(self) -> str:
        return str(self.card["model"])

    @property
    def threads(self) -> int:
        return int(self.session.get_session_options().intra_op_num_threads)

    def run_many(self, feeds: list[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
        """``run`` for each of ``feeds``, in order (ONNX Runtime parallelises within a run)."""
        return [self.run(**feed) for feed in feeds]

    def run(self, **inputs: np.ndarray) -> list[np.ndarray]:
        """The model's outputs, in the card's order, for inputs named as in the card."""
        return self.session.run(None, {k: np.ascontiguousarray(v) for k, v in inputs.items()})


def card_path_for(path: str | Path) -> Path:
    """The card of an ONNX model: ``path`` itself when it is the ``.json``, else beside it."""
    path = Path(path)
    return path if path.suffix == ".json" else path.with_suffix(".json")


def load_onnx_model(path: str | Path, model: str, threads: int = 2) -> OnnxModel:
    """A checked session for ``model`` (one of ``MODELS``) from its card or its ``.onnx`` file.

    ``threads`` is ONNX Runtime's ``intra_op_num_threads``. Raises ``WeightsError`` for a
    missing or foreign card, a card of another model or automedseg version, an ONNX file
    whose SHA-256 differs from the card's (damaged, or belonging to another card), or one
    ONNX Runtime cannot load.
    """
    card_path = card_path_for(path)
    if not card_path.is_file():
        raise WeightsError(
            f"no model card {card_path.name} beside the ONNX file: export it with "
            "automedseg.deploy.export (scripts/export_onnx.py)",
            path,
        )
    card = read_card(card_path)
    if card.get("kind") != KIND:
        raise WeightsError(f"not an ONNX model card (kind {card.get('kind')!r})", card_path)
    if card.get("model") != model:
        raise WeightsError(f"the card is for {card.get('model')!r}, expected {model!r}", card_path)
    if card.get("card_version") != ONNX_CARD_VERSION:
        raise WeightsError(
            f"ONNX card version {card.get('card_version')!r}, this automedseg reads "
            f"{ONNX_CARD_VERSION}: export the model again",
            card_path,
        )
    if card.get("automedseg_version") != __version__:
        raise WeightsError(
            f"exported by automedseg {card.get('automedseg_version')}, this is {__version__}: "
            "export the model again",
            card_path,
        )
    onnx_path = card_path.parent / card["weights_file"]
    if not onnx_path.is_file():
        raise WeightsError("ONNX file named by the card does not exist", onnx_path)
    data = onnx_path.read_bytes()
    if (actual := hashlib.sha256(data).hexdigest()) != card["sha256"]:
        raise WeightsError(
            f"SHA-256 mismatch (card says {card['sha256'][:12]}…, file has {actual[:12]}…): "
            "the ONNX file is damaged or belongs to another card",
            onnx_path,
        )
    session = make_session(data, onnx_path, threads)
    names = (
        [i.name for i in session.get_inputs()],
        [o.name for o in session.get_outputs()],
    )
    try:
        expected = ([i["name"] for i in card["inputs"]], [o["name"] for o in card["outputs"]])
    except (KeyError, TypeError) as error:
        raise WeightsError(f"the card lacks valid inputs/outputs ({error})", card_path) from None
    if names != expected:
        raise WeightsError(
            f"the ONNX graph's inputs/outputs {names} differ from the card's {expected}", onnx_path
        )
    return OnnxModel(session, card, onnx_path)


def make_session(data: bytes, path: Path, threads: int = 2) -> Any:
    """An ONNX Runtime CPU session for a serialised model; `WeightsError` if it will not load."""
    try:
        import onnxruntime as ort
    except ModuleNotFoundError as error:
        raise WeightsError("onnxruntime is not installed (pip install onnxruntime)") from error
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    try:
        return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own exception types
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise WeightsError(f"not a loadable ONNX model ({first})", path) from None


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """The logistic function, without overflow for large negative logits (as scipy's expit;
    scipy itself would cost a 2D run ~30 MB of imports)."""
    return 0.5 + 0.5 * np.tanh(0.5 * logits)


@dataclass
class OnnxLiteMedSAMPredictor:
    """``LiteMedSAMPredictor`` on exported models (``OnnxModel``s, or OpenVINO's, which run the
    same way): ``set_image`` encodes once, ``predict`` answers many boxes. The embedding is a
    (1, 256, 64, 64) float32 numpy array."""

    encoder: Any  # OnnxModel or runtime.openvino.OpenVinoModel
    decoder: Any
    _embedding: np.ndarray | None = field(default=None, init=False, repr=False)
    _original_size: tuple[int, int] = field(default=(0, 0), init=False)
    _resized_size: tuple[int, int] = field(default=(0, 0), init=False)

    @property
    def embedding(self) -> np.ndarray:
        """(1, 256, 64, 64) image embedding of the current image."""
        if self._embedding is None:
            raise RuntimeError("call set_image first")
        return self._embedding

    def encoded(self) -> Encoded:
        """The current image's state (embedding, original size, resized size), to reuse later."""
        return self.embedding, self._original_size, self._resized_size

    def use(self, encoded: Encoded) -> None:
        """Make an earlier ``encoded()`` state current again, without re-encoding."""
        self._embedding, self._original_size, self._resized_size = encoded

    @property
    def scale(self) -> float:
        """Factor from original-image pixels to model-input pixels."""
        return IMAGE_SIZE / max(self._original_size)

    def set_image(self, image: np.ndarray) -> None:
        """Encode one image in [0, 1]: (H, W) grayscale or (H, W, 3)."""
        batch, resized = preprocess(image)
        self._embedding = self.encoder.run(image=batch)[0]
        self._original_size = (int(image.shape[0]), int(image.shape[1]))
        self._resized_size = resized

    def encode_many(self, images: list[np.ndarray]) -> list[Encoded]:
        """The ``encoded()`` states of several images in [0, 1], encoded together (a volume's
        planes: OpenVINO runs several at a time); the current image is not changed."""
        prepared = [preprocess(image) for image in images]
        outputs = self.encoder.run_many([{"image": batch} for batch, _ in prepared])
        return [
            (out[0], (int(image.shape[0]), int(image.shape[1])), resized)
            for out, image, (_, resized) in zip(outputs, images, prepared, strict=True)
        ]

    def predict_logits(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        """(N, 1, 256, 256) mask logits for N boxes in original-image pixels."""
        if self._embedding is None:
            raise RuntimeError("call set_image before predict")
        boxes = np.asarray(boxes_xyxy, np.float32).reshape(-1, 4) * np.float32(self.scale)
        return self.decoder.run(embedding=self._embedding, boxes=boxes)[0]

    def predict(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        """(N, H, W) boolean masks for N boxes in original-image pixels."""
        if len(boxes_xyxy) == 0:
            return np.zeros((0, *self._original_size), dtype=bool)
        logits = self.predict_logits(boxes_xyxy)
        return postprocess(logits, self._resized_size, self._original_size)


def load_onnx_predictor(
    encoder: str | Path, decoder: str | Path, threads: int = 2
) -> OnnxLiteMedSAMPredictor:
    """The predictor from the exported encoder's and decoder's cards (or ``.onnx`` files)."""
    return OnnxLiteMedSAMPredictor(
        load_onnx_model(encoder, ENCODER, threads), load_onnx_model(decoder, DECODER, threads)
    )


@dataclass
class OnnxHeadPrompter:
    """``prompt.head.HeadPrompter`` on an exported model (a ``prompt.base.Prompter``)."""

    model: Any  # OnnxModel or runtime.openvino.OpenVinoModel
    labels: dict[int, str]
    """Label value → class name, in the head's output-channel order."""
    score_threshold: float = 0.5
    pixel_threshold: float = 0.5
    min_area_fraction: float = 0.0005
    uses_embedding: bool = True
    propagation: dict = field(default_factory=dict)
    """Propagation settings chosen on validation (``propagate.settings_of``)."""

    def probabilities(self, embedding: np.ndarray) -> np.ndarray:
        """(K, 256, 256) class probabilities in the padded model space."""
        logits = self.model.run(embedding=np.asarray(embedding, np.float32))[0]
        return sigmoid(resize_bilinear(logits[0], (IMAGE_SIZE, IMAGE_SIZE)))

    def find(self, image: np.ndarray, embedding: object | None = None) -> Boxes:
        if embedding is None:
            raise ValueError("the head prompter needs LiteMedSAM's embedding of the image")
        return map_prompter_boxes(self, self.probabilities(np.asarray(embedding)), image.shape[:2])


@dataclass
class OnnxBackbonePrompter(FindsWithMaps):
    """``prompt.backbone.BackbonePrompter`` on an exported model (a ``prompt.base.Prompter``)."""

    model: Any  # OnnxModel or runtime.openvino.OpenVinoModel
    labels: dict[int, str]
    sizes: tuple[int, ...] = (320,)
    flip: bool = False
    fallback: bool = False
    score_threshold: float = 0.5
    pixel_threshold: float = 0.5
    min_area_fraction: float = 0.0005
    refinement: dict = field(default_factory=dict)
    uses_embedding: bool = False
    propagation: dict = field(default_factory=dict)

    @property
    def size(self) -> int:
        return max(self.sizes)

    def maps(self, image: np.ndarray) -> ClassMaps:
        inputs = member_views(image, self.sizes, self.flip, self.model.threads)
        names = [i["name"] for i in self.model.card["inputs"]]  # one per member
        logits = self.model.run(**{n: b for n, (b, _) in zip(names, inputs, strict=True)})
        averaged, hw = combined([sigmoid(x) for x in logits], [hw for _, hw in inputs])
        return ClassMaps(averaged, hw, tuple(self.labels))


def prompter_of(model: Any) -> OnnxHeadPrompter | OnnxBackbonePrompter:
    """The head or backbone prompter around an exported model (``OnnxModel`` or
    ``runtime.openvino.OpenVinoModel``; its card's ``model`` says which, and carries the
    labels, thresholds and settings)."""
    card = model.card
    try:
        labels = {int(k): str(v) for k, v in card["labels"].items()}
        numbers = {k: float(card[k]) for k in ("score_threshold", "pixel_threshold")}
        numbers["min_area_fraction"] = float(card.get("min_area_fraction", 0.0005))
        if card["model"] == BACKBONE:
            members = card.get("members") or [{"size": card["size"]}]  # one network: its size
            sizes = tuple(int(m["size"]) for m in members)
            switches = {k: bool(card.get(k, False)) for k in ("flip", "fallback")}
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise WeightsError(f"the prompter's card lacks a valid {error}", card["_path"]) from None
    propagation = card_propagation(card, card["_path"])
    if card["model"] == BACKBONE:
        refinement = card_refinement(card, card["_path"])
        return OnnxBackbonePrompter(model, labels, sizes, **switches, **numbers,
                                    refinement=refinement, propagation=propagation)  # fmt: skip
    return OnnxHeadPrompter(model, labels, **numbers, propagation=propagation)


def load_onnx_prompter(
    path: str | Path, threads: int = 2
) -> OnnxHeadPrompter | OnnxBackbonePrompter:
    """The head or backbone prompter of an exported card (its ``model`` says which)."""
    card_path = card_path_for(path)
    model = read_card(card_path).get("model") if card_path.is_file() else HEAD
    return prompter_of(load_onnx_model(path, BACKBONE if model == BACKBONE else HEAD, threads))


def load_onnx_head_prompter(path: str | Path, threads: int = 2) -> OnnxHeadPrompter:
    """The head prompter from its exported card (labels and thresholds are on the card)."""
    return prompter_of(load_onnx_model(path, HEAD, threads))
