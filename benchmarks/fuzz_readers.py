"""Coverage-guided fuzzing (atheris) of every reader: any exception other than automedseg's
own ``AutomedsegError`` is a bug.

    python benchmarks/fuzz_readers.py raster --seconds 1800 --work runs/fuzz
    python benchmarks/fuzz_readers.py all --seconds 1800 --work runs/fuzz \
        --out benchmarks/records/fuzz_readers.json

With ``--out``, the record is updated family by family (each with its own date), so a campaign
can be spread over several sessions: ``python benchmarks/fuzz_readers.py nifti --out ...``.

Families (``FAMILIES``): ``raster`` (PNG/JPEG/BMP/TIFF), ``nifti``, ``dicom`` (one file),
``series`` (a folder of DICOM files), ``video``, ``frames`` (a folder of frame images),
``card`` (model cards and weights), ``boxes`` (box annotation files), ``upload`` (the review
app's upload sniffing and ZIP extraction). Each runs in its own process for ``--seconds``,
seeded with small valid files of its format (``seeds``); an input that crashes a reader, takes
more than 4 GB or 30 s is saved by libFuzzer as ``WORK/<family>/(crash|oom|timeout)-*``,
stops that family's run and is listed in the record with its exception (earlier runs'
artifacts are moved to ``WORK/<family>/earlier/``).
Pillow's decompression-bomb limit stays on.
"""

from __future__ import annotations

import argparse
import io as bytes_io
import json
import re
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

FAMILIES = ("raster", "nifti", "dicom", "series", "video", "frames", "card", "boxes", "upload")
SUFFIX = {"raster": ".png", "nifti": ".nii.gz", "dicom": ".dcm", "video": ".mp4",
          "card": ".json", "boxes": ".json"}  # fmt: skip


def seeds(family: str) -> list[bytes]:
    """Small valid inputs of the family's format, for the fuzzer to mutate."""
    from PIL import Image as PILImage

    pixels = (np.arange(64, dtype=np.uint8).reshape(8, 8) * 3).astype(np.uint8)
    if family in ("raster", "frames", "upload"):
        out = []
        for kind in ("PNG", "JPEG", "BMP", "TIFF"):
            buffer = bytes_io.BytesIO()
            PILImage.fromarray(pixels).save(buffer, format=kind)
            out.append(buffer.getvalue())
        return out
    if family == "nifti":
        import gzip

        import nibabel as nib

        image = nib.Nifti1Image(pixels.reshape(8, 8, 1).astype(np.int16), np.eye(4))
        return [image.to_bytes(), gzip.compress(image.to_bytes())]
    if family in ("dicom", "series"):
        return [_dicom(pixels)]
    if family == "video":
        with tempfile.TemporaryDirectory() as folder:
            from automedseg.io import write_overlay_video

            path = write_overlay_video(Path(folder) / "v.mp4", np.zeros((3, 16, 16, 3), np.uint8))
            return [path.read_bytes()]
    if family == "card":
        card = {"kind": "head", "architecture": {"num_classes": 1, "width": 8, "depth": 1},
                "labels": {"1": "x"}, "score_threshold": 0.5, "weights_file": "w.safetensors",
                "sha256": "0" * 64}  # fmt: skip
        return [json.dumps(card).encode()]
    if family == "boxes":
        return [json.dumps({"images": [{"id": 1, "file_name": "a.png", "width": 8, "height": 8}],
                            "annotations": [{"image_id": 1, "bbox": [1, 1, 3, 3],
                                             "category_id": 1}],
                            "categories": [{"id": 1, "name": "x"}]}).encode()]  # fmt: skip
    raise ValueError(family)


def _dicom(pixels: np.ndarray) -> bytes:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID, ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPClassUID, generate_uid()
    ds.SeriesInstanceUID, ds.StudyInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.Rows, ds.Columns = "CT", 8, 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.ImagePositionPatient, ds.ImageOrientationPatient = [0, 0, 0], [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [0.5, 0.5]
    ds.PixelData = pixels.astype("<u2").tobytes()
    buffer = bytes_io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def target(family: str):
    """The function atheris calls with each input: reads it as the family's reader would."""
    from automedseg import io
    from automedseg.errors import AutomedsegError

    folder = Path(tempfile.mkdtemp(prefix=f"fuzz-{family}-"))

    def read(data: bytes) -> None:
        for old in folder.iterdir():
            if old.is_dir():
                import shutil

                shutil.rmtree(old)
            else:
                old.unlink()
        try:
            if family in ("series", "frames"):
                sub = folder / "case"
                sub.mkdir()
                half = len(data) // 2
                name = "f{}.dcm" if family == "series" else "f{}.png"
                for i, part in enumerate((data[:half] or data, data[half:] or data)):
                    (sub / name.format(i)).write_bytes(part)
                io.read_image(sub)
            elif family == "card":
                from automedseg.prompt import load_prompter

                path = folder / "prompter.json"
                path.write_bytes(data)
                (folder / "w.safetensors").write_bytes(data[:64])
                load_prompter(path)
            elif family == "boxes":
                from automedseg.train.box_annotations import read_box_annotations

                path = folder / "boxes.json"
                path.write_bytes(data)
                read_box_annotations(path, {"a": (8, 8)})
            elif family == "upload":
                stored = io.store_upload(data, folder, "upload", max_bytes=1 << 22)
                io.read_image(stored)
            else:
                path = folder / f"input{SUFFIX[family]}"
                path.write_bytes(data)
                io.read_image(path)
        except AutomedsegError:
            pass

    return read


def fuzz_one(family: str, seconds: int, work: Path) -> dict:
    """Run one family's fuzzer in a child process; its executions and crashes."""
    corpus = work / family / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    earlier = work / family / "earlier"  # artifacts of earlier runs (fixed since, or not)
    for artifact in _artifacts(work / family):
        earlier.mkdir(exist_ok=True)
        artifact.replace(earlier / artifact.name)
    for i, seed in enumerate(seeds(family)):
        (corpus / f"seed{i}").write_bytes(seed)
    clock = time.perf_counter()
    done = subprocess.run(
        [sys.executable, __file__, "--child", family, str(corpus), f"-max_total_time={seconds}",
         f"-artifact_prefix={work / family}/", "-rss_limit_mb=4096", "-timeout=30"],
        capture_output=True, text=True,
    )  # fmt: skip
    log = done.stdout + done.stderr
    (work / family / "fuzz.log").write_text(log)
    crashes = sorted(p.name for p in _artifacts(work / family))
    errors = re.findall(r"=== Uncaught Python exception: ===\n(.+)", log)
    errors += re.findall(r"SUMMARY: libFuzzer: (.+)", log)  # out-of-memory, timeout
    return {"seconds": round(time.perf_counter() - clock), "executions": executions(log),
            "crashes": crashes, "exceptions": sorted(set(errors)),
            "exit_code": done.returncode}  # fmt: skip


def executions(log: str) -> int:
    """Inputs run, from libFuzzer's log: its closing "Done N runs" line, else its last status
    line ("#N<tab>..." at the start of a line; a reader's warnings may hold "#" and digits)."""
    done = re.findall(r"^Done (\d+) runs", log, re.MULTILINE)
    if done:
        return int(done[-1])
    return max((int(n) for n in re.findall(r"^#(\d+)\t", log, re.MULTILINE)), default=0)


def _artifacts(folder: Path) -> list[Path]:
    """The inputs libFuzzer saved: crashes, out-of-memory, timeouts, leaks."""
    kinds = ("crash-", "oom-", "timeout-", "leak-", "slow-unit-")
    return [p for p in folder.glob("*") if p.is_file() and p.name.startswith(kinds)]


def child(family: str, argv: list[str]) -> None:
    import atheris

    with atheris.instrument_imports():
        import automedseg.io  # noqa: F401
    read = target(family)
    atheris.Setup([sys.argv[0], *argv], read)
    atheris.Fuzz()


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("family", choices=(*FAMILIES, "all"))
    parser.add_argument("--seconds", type=int, default=1800, help="per family")
    parser.add_argument("--work", type=Path, default=Path("runs/fuzz"))
    parser.add_argument("--out", type=Path)
    parser.add_argument("--recount", action="store_true",
                        help="only count the executions again from WORK/FAMILY/fuzz.log into --out")
    args = parser.parse_args()
    families = FAMILIES if args.family == "all" else (args.family,)
    if args.recount:
        record = json.loads(args.out.read_text())
        for family in families:
            log = (args.work / family / "fuzz.log").read_text()
            record["families"][family]["executions"] = executions(log)
        args.out.write_text(json.dumps(record, indent=2) + "\n")
        return
    record: dict = {"families": {}}
    for family in families:
        result = fuzz_one(family, args.seconds, args.work)
        result["date"] = datetime.now(UTC).isoformat(timespec="seconds")
        print(family, result, file=sys.stderr)
        if args.out:  # read again and written after each family: other families (earlier
            # sessions, a campaign running beside this one) are kept
            if args.out.exists():
                record = json.loads(args.out.read_text())
            args.out.parent.mkdir(parents=True, exist_ok=True)
        record["families"][family] = result
        if args.out:
            args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
