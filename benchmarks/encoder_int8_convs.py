"""Does INT8 on the encoder's first convolutions pay? Embedding cosine and speed, interleaved.

    python benchmarks/encoder_int8_convs.py \\
        --ir runs/quant_larynx3/candidates/image_encoder-openvino.xml \\
        --images ../shared/datasets/kvasir_seg/images --first 0 8 11 --threads 2 \\
        --out benchmarks/records/encoder_int8_convs.json

``--ir`` is the plain OpenVINO encoder that ``automedseg quantize`` converts (its
``candidates/image_encoder-openvino.xml``). Each variant is NNCF INT8 of the MatMuls (as the
``int8-matmul`` recipe) plus the first N convolutions in graph order (N = 8: the stem and
stage 0, the 256×256 part; 11: with the downsampling after it), calibrated on the first 16
images; the plain encoder in bfloat16 is the baseline. Reported per variant: the smallest and
mean cosine of the embedding to the float32 embedding on 8 other images, and the median ms of
one inference, all variants timed in turn in the same rounds.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from automedseg.intensity import to_unit_range
from automedseg.io import read_image
from automedseg.runtime.openvino import core, latency_config
from automedseg.runtime.transforms import preprocess

CONVOLUTIONS = ("Convolution", "GroupConvolution")


def planes(folder: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(16 calibration inputs, 8 held-out inputs) from the first 24 images of ``folder``."""
    files = sorted(p for p in folder.iterdir() if p.is_file())[:24]
    inputs = [preprocess(to_unit_range(read_image(f)))[0] for f in files]
    return inputs[:16], inputs[16:]


def variant(ir: Path, first: int, calibration: list[np.ndarray]):
    """The encoder with INT8 MatMuls and its first ``first`` convolutions."""
    import nncf

    model = core().read_model(ir)
    convolutions = [op.get_friendly_name() for op in model.get_ordered_ops()
                    if op.get_type_name() in CONVOLUTIONS]  # fmt: skip
    return nncf.quantize(
        model, nncf.Dataset([[x] for x in calibration]), model_type=nncf.ModelType.TRANSFORMER,
        ignored_scope=nncf.IgnoredScope(names=convolutions[first:], validate=False),
        subset_size=len(calibration),
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ir", type=Path, required=True)
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--first", type=int, nargs="+", default=[0, 8, 11])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    calibration, held_out = planes(args.images)
    reference = core().compile_model(core().read_model(args.ir), "CPU",
                                     latency_config("f32", args.threads))  # fmt: skip
    truths = [reference([x])[0].ravel().astype(np.float64) for x in held_out]
    models = {"bfloat16": core().read_model(args.ir)}
    models |= {f"INT8 MatMuls + first {n} convolutions": variant(args.ir, n, calibration)
               for n in args.first}  # fmt: skip
    requests = {name: core().compile_model(model, "CPU", latency_config("bf16", args.threads))
                .create_infer_request() for name, model in models.items()}  # fmt: skip
    rows = {}
    for name, request in requests.items():
        cosines = []
        for x, truth in zip(held_out, truths, strict=True):
            request.infer([x])
            out = request.get_output_tensor(0).data.ravel().astype(np.float64)
            cosines.append(float(out @ truth / np.linalg.norm(out) / np.linalg.norm(truth)))
        rows[name] = {"min_cosine": round(min(cosines), 4),
                      "mean_cosine": round(float(np.mean(cosines)), 4)}  # fmt: skip
    seconds: dict[str, list[float]] = {name: [] for name in requests}
    for _ in range(args.repeats):
        for name, request in requests.items():
            clock = time.perf_counter()
            request.infer([held_out[0]])
            seconds[name].append(time.perf_counter() - clock)
    for name, values in seconds.items():
        rows[name]["median_ms"] = round(1000 * float(np.median(values[1:])), 1)
    record = {"command": "python benchmarks/encoder_int8_convs.py " + " ".join(
                  f"--{k} {' '.join(map(str, v)) if isinstance(v, list) else v}"
                  for k, v in vars(args).items()),
              "date": time.strftime("%Y-%m-%d %H:%M"), "threads": args.threads,
              "calibration_images": len(calibration), "held_out_images": len(held_out),
              "variants": rows}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
