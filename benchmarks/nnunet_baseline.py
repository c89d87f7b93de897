"""nnU-Net v2 as the automatic baseline: same training split as our tasks, CPU, a stated budget.

Runs with the interpreter of a venv that has ``nnunetv2`` (``make nnunet-setup`` makes
``.venv-nnunet``; nnU-Net pins other versions of shared packages, so it is kept apart):

    .venv-nnunet/bin/python benchmarks/nnunet_baseline.py prepare \\
        --data ../shared/datasets/kvasir_seg --split runs/head_polyp5 --id 501 --name Polyp \\
        --configuration 2d --work runs/nnunet
    .venv-nnunet/bin/python benchmarks/nnunet_baseline.py train --id 501 --configuration 2d \\
        --epochs 40 --iterations 25 --work runs/nnunet          # again to resume
    automedseg evaluate --data ../shared/datasets/kvasir_seg \\
        --split runs/head_polyp5/val_cases.txt --out runs/eval_polyp_val_nnunet --predictions \\
        runs/nnunet/results/Dataset501_Polyp/nnUNetTrainerBudget__nnUNetPlans__2d/fold_0/validation

``prepare`` writes every usable case of a data set in nnU-Net's raw format (images as
``<case>_0000``, labels as 0..N maps; 2D RGB as PNG, volumes as NIfTI), a ``splits_final.json``
whose fold 0 is exactly our split (``SPLIT/train_cases.txt``, ``SPLIT/val_cases.txt``), and
runs nnU-Net's planning and preprocessing with one process. ``train`` trains fold 0 with
``nnUNetTrainerBudget`` (below: ``--epochs`` × ``--iterations`` steps, a checkpoint every
epoch, data augmentation in the main process, one pass per validation case unless
``--test-mirroring``), resumes from the latest checkpoint, and ends
with nnU-Net's own validation, which writes the validation cases' predictions for
``automedseg evaluate --predictions``. The budget and the training wall time (nnU-Net's own
epoch timestamps) go to WORK/budget_<id>.json. ``time`` measures ms per validation case and
peak RSS of the trained model (WORK/timing_<id>.json), for ``benchmarks/compare.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


def environment(work: Path, augmentation_processes: int = 1) -> None:
    """nnU-Net's folders under WORK, one process for everything (a 2-core machine); 0
    augmentation processes runs the augmentation in the training process."""
    for name, sub in (("nnUNet_raw", "raw"), ("nnUNet_preprocessed", "preprocessed"),
                      ("nnUNet_results", "results")):  # fmt: skip
        (work / sub).mkdir(parents=True, exist_ok=True)
        os.environ[name] = str((work / sub).resolve())
    os.environ["nnUNet_n_proc_DA"] = str(augmentation_processes)
    os.environ["nnUNet_def_n_proc"] = "1"


def prepare(args: argparse.Namespace) -> None:
    import numpy as np
    from PIL import Image

    from automedseg import io
    from automedseg.data.datasets import find_cases, load_case, read_split

    work = Path(args.work)
    environment(work)
    split = Path(args.split)
    train_ids = sorted(read_split(split / "train_cases.txt"))
    val_ids = sorted(read_split(split / "val_cases.txt"))
    dataset = find_cases(args.data)
    name = f"Dataset{args.id:03d}_{args.name}"
    raw = work / "raw" / name
    shutil.rmtree(raw, ignore_errors=True)
    (raw / "imagesTr").mkdir(parents=True)
    (raw / "labelsTr").mkdir()
    wanted = set(train_ids) | set(val_ids)
    labels_seen: set[int] = set()
    rgb, ending = False, ".nii.gz"
    for case in dataset.cases:
        if case.case_id not in wanted or case.problem:
            continue
        image, truth = load_case(case, layout=dataset.layout)
        labels_seen |= {int(v) for v in np.unique(truth)}
        if image.spatial_dims == 2:
            rgb, ending = image.channels == 3, ".png"
            Image.fromarray(image.array).save(raw / "imagesTr" / f"{case.case_id}_0000.png")
            io.write_label_png(raw / "labelsTr" / f"{case.case_id}.png", truth)
        else:
            shutil.copy(case.images[0], raw / "imagesTr" / f"{case.case_id}_0000.nii.gz")
            shutil.copy(case.labels[0], raw / "labelsTr" / f"{case.case_id}.nii.gz")
    channels = {"0": "R", "1": "G", "2": "B"} if rgb else {"0": args.modality}
    labels = {"background": 0, **{f"label{v}": v for v in sorted(labels_seen) if v}}
    meta = {"channel_names": channels, "labels": labels, "file_ending": ending,
            "numTraining": len(list((raw / "labelsTr").iterdir()))}  # fmt: skip
    (raw / "dataset.json").write_text(json.dumps(meta, indent=2))
    nnunet = Path(sys.executable).parent
    subprocess.run([str(nnunet / "nnUNetv2_plan_and_preprocess"), "-d", str(args.id),
                    "-c", args.configuration, "-np", "1", "--verify_dataset_integrity"],
                   check=True)  # fmt: skip
    splits = [{"train": train_ids, "val": val_ids}]
    (work / "preprocessed" / name / "splits_final.json").write_text(json.dumps(splits, indent=2))
    print(f"prepared {name}: {len(train_ids)} train / {len(val_ids)} val cases")


def budget_trainer():
    """nnU-Net's default trainer with a CPU budget: fewer epochs and steps, a checkpoint
    every epoch. Everything else (network, loss, augmentation, plans) is nnU-Net's."""
    import torch
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    CPU = torch.device("cpu")

    class nnUNetTrainerBudget(nnUNetTrainer):
        def __init__(self, plans, configuration, fold, dataset_json, device=None):
            super().__init__(plans, configuration, fold, dataset_json, device or CPU)
            self.num_epochs = int(os.environ["AUTOMEDSEG_NNUNET_EPOCHS"])
            self.num_iterations_per_epoch = int(os.environ["AUTOMEDSEG_NNUNET_ITERATIONS"])
            self.num_val_iterations_per_epoch = max(1, self.num_iterations_per_epoch // 5)
            self.save_every = 1

        def perform_actual_validation(self, save_probabilities: bool = False) -> None:
            if os.environ.get("AUTOMEDSEG_NNUNET_TEST_MIRRORING") != "1":
                self.inference_allowed_mirroring_axes = None  # budget: one pass per case
            super().perform_actual_validation(save_probabilities)

    return nnUNetTrainerBudget


def checked(path: Path) -> str:
    """The checkpoint's path once it has loaded weights-only (its training log holds numpy
    scalars, allowed): nnU-Net's ``load_checkpoint`` then reads it itself, without
    ``weights_only`` (and it cannot take the loaded dict: a bug in 2.8.1)."""
    weights_only_load(path)
    return str(path)


def weights_only_load(path: Path) -> dict:
    import numpy as np
    import torch

    kinds = (np.float64, np.float32, np.int64, np.int32, np.bool_)
    safe = [np._core.multiarray.scalar, np.dtype, *(type(np.dtype(k)) for k in kinds)]
    with torch.serialization.safe_globals(safe):
        return torch.load(path, map_location="cpu", weights_only=True)


def load_trainer(args: argparse.Namespace, epochs: int, iterations: int):
    """nnU-Net's trainer for fold 0 of dataset ``args.id`` with the budget set."""
    import torch
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    os.environ["AUTOMEDSEG_NNUNET_EPOCHS"] = str(epochs)
    os.environ["AUTOMEDSEG_NNUNET_ITERATIONS"] = str(iterations)
    torch.set_num_threads(args.threads)
    pre = Path(args.work) / "preprocessed" / maybe_convert_to_dataset_name(args.id)
    plans = json.loads((pre / "nnUNetPlans.json").read_text())
    dataset_json = json.loads((pre / "dataset.json").read_text())
    plans["continue_training"] = True  # read (and removed) by the trainer; resuming is ours
    return budget_trainer()(plans, args.configuration, 0, dataset_json, torch.device("cpu"))


def training_seconds(trainer) -> float:
    """Wall time of the epochs trained so far, from nnU-Net's own log (kept in checkpoints)."""
    log = trainer.logger.get_checkpoint()  # the local logger's record
    starts, ends = log["epoch_start_timestamps"], log["epoch_end_timestamps"]
    return float(sum(e - s for s, e in zip(starts, ends, strict=False)))  # an epoch may be open


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def time_inference(args: argparse.Namespace) -> None:
    """ms per validation case of the trained model (one pass, no test-time mirroring, as in
    ``train``'s validation), from reading the image to the label map at its original size;
    peak RSS counted from after the checkpoint is read (its optimizer state is not needed to
    predict), so it holds the network and the inference."""
    work = Path(args.work)
    environment(work, augmentation_processes=0)
    import numpy as np
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    trainer = load_trainer(args, 1, 1)
    trainer.initialize()
    final = Path(trainer.output_folder) / "checkpoint_final.pth"
    weights = weights_only_load(final)["network_weights"]
    trainer.network.load_state_dict({k.removeprefix("_orig_mod."): v for k, v in weights.items()})
    parameters = sum(p.numel() for p in trainer.network.parameters())
    del weights
    trainer.set_deep_supervision_enabled(False)  # as nnU-Net's own validation does
    trainer.network.eval()
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                perform_everything_on_device=False, device=torch.device("cpu"),
                                allow_tqdm=False)  # fmt: skip
    predictor.manual_initialization(trainer.network, trainer.plans_manager,
                                    trainer.configuration_manager, [trainer.network.state_dict()],
                                    trainer.dataset_json, type(trainer).__name__, None)  # fmt: skip
    reader = trainer.plans_manager.image_reader_writer_class()
    ending = trainer.dataset_json["file_ending"]
    splits = json.loads((Path(trainer.preprocessed_dataset_folder_base) / "splits_final.json")
                        .read_text())  # fmt: skip
    cases = splits[0]["val"][: args.cases]
    raw = work / "raw" / trainer.plans_manager.dataset_name / "imagesTr"
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS mark (Linux ≥ 4.0)
    times = []
    for case in cases:
        started = time.perf_counter()
        image, properties = reader.read_images([str(raw / f"{case}_0000{ending}")])
        predictor.predict_single_npy_array(image, properties)
        times.append((time.perf_counter() - started) * 1000)
    result = {"dataset": trainer.plans_manager.dataset_name,
              "configuration": args.configuration, "torch_threads": args.threads,
              "cases": len(cases), "ms_per_image_median": round(float(np.median(times)), 1),
              "ms_per_image_p90": round(float(np.percentile(times, 90)), 1),
              "peak_rss_mb": round(peak_rss_mb(), 1),
              "parameters_m": round(parameters / 1e6, 2),
              "float32_mb": round(parameters * 4 / 2**20, 1),
              "date": time.strftime("%Y-%m-%d %H:%M")}  # fmt: skip
    (work / f"timing_{args.id:03d}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


def train(args: argparse.Namespace) -> None:
    work = Path(args.work)
    environment(work, augmentation_processes=0)  # before nnunetv2 reads it at import

    os.environ["AUTOMEDSEG_NNUNET_TEST_MIRRORING"] = "1" if args.test_mirroring else "0"
    trainer = load_trainer(args, args.epochs, args.iterations)
    latest = Path(trainer.output_folder) / "checkpoint_latest.pth"
    budget_path = work / f"budget_{args.id:03d}.json"
    final = Path(trainer.output_folder) / "checkpoint_final.pth"
    try:
        if not final.is_file():
            if latest.is_file():
                trainer.load_checkpoint(checked(latest))
                print(f"resuming at epoch {trainer.current_epoch} (0-based)")
            trainer.run_training()
        else:
            trainer.load_checkpoint(checked(final))
        trainer.perform_actual_validation()
    finally:
        budget = {"dataset": trainer.plans_manager.dataset_name,
                  "configuration": args.configuration,
                  "trainer": "nnUNetTrainerBudget", "epochs": args.epochs,
                  "iterations_per_epoch": args.iterations, "torch_threads": args.threads,
                  "test_mirroring": args.test_mirroring,
                  "epochs_done": int(trainer.current_epoch),
                  "training_seconds": round(training_seconds(trainer), 1),
                  "output": str(trainer.output_folder)}  # fmt: skip
        budget_path.write_text(json.dumps(budget, indent=2))
    print(json.dumps(budget, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    pr = commands.add_parser("prepare", help="raw data, our split, planning and preprocessing")
    pr.add_argument("--data", required=True)
    pr.add_argument("--split", required=True, help="folder with train_cases.txt/val_cases.txt")
    pr.add_argument("--id", type=int, required=True, help="nnU-Net dataset id (500-999)")
    pr.add_argument("--name", required=True)
    pr.add_argument("--configuration", default="2d", help="2d or 3d_fullres")
    pr.add_argument("--modality", default="MRI", help="channel name of grayscale data")
    pr.add_argument("--work", required=True)
    tr = commands.add_parser("train", help="train fold 0 with the budget (resumes)")
    tr.add_argument("--id", type=int, required=True)
    tr.add_argument("--configuration", default="2d")
    tr.add_argument("--epochs", type=int, default=40)
    tr.add_argument("--iterations", type=int, default=25, help="training steps per epoch")
    tr.add_argument("--threads", type=int, default=1)
    tr.add_argument(
        "--test-mirroring",
        action="store_true",
        help="nnU-Net's mirrored test-time passes at validation (off: one pass)",
    )
    tr.add_argument("--work", required=True)
    ti = commands.add_parser("time", help="ms per validation case and peak RSS, trained model")
    ti.add_argument("--id", type=int, required=True)
    ti.add_argument("--configuration", default="2d")
    ti.add_argument("--cases", type=int, default=20, help="first N validation cases")
    ti.add_argument("--threads", type=int, default=1)
    ti.add_argument("--work", required=True)
    arguments = parser.parse_args()
    {"prepare": prepare, "train": train, "time": time_inference}[arguments.command](arguments)
