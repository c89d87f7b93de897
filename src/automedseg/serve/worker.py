"""The job worker: one background thread runs the queued jobs one at a time, loading each
task's models once; box edits run under the same lock, so the models are never used by two
threads at once."""

from __future__ import annotations

import queue
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from automedseg import io
from automedseg.api import segment_loaded
from automedseg.errors import AutomedsegError, InputError, PromptError
from automedseg.pipeline import segment_image
from automedseg.prompt.oracle import FixedBoxes
from automedseg.serve.store import JobStore, Objects
from automedseg.tasks import Models
from automedseg.types import Boxes, Image, Result


def objects_of(result: Result, image: Image) -> Objects:
    """A segmentation result as a job's objects."""
    boxes = result.boxes
    if result.instance_map is not None:
        instances = result.instance_map
    else:  # one object per box, painted from its label where no instance map was kept
        instances = np.zeros(result.label_map.shape, np.uint16)
        for number, label in enumerate(boxes.labels, start=1):
            instances[(result.label_map == label) & (instances == 0)] = number
    planes = (np.asarray(result.box_slices, int) if result.box_slices is not None
              else np.full(len(boxes), -1))  # fmt: skip
    return Objects(instances.astype(np.uint16), boxes.labels.astype(int),
                   boxes.scores.astype(np.float32), boxes.xyxy.astype(np.float32), planes)


def as_result(objects: Objects, segmenter: str = "LiteMedSAM", qc: dict | None = None) -> Result:
    """The job's objects as a result; ``qc`` is the automatic run's (edits do not change it)."""
    boxes = Boxes(objects.boxes, objects.labels, objects.scores)
    slices = objects.planes if objects.instances.ndim == 3 else None
    return Result(objects.label_map(), boxes, box_slices=slices, instance_map=objects.instances,
                  segmenter=segmenter, qc=qc)  # fmt: skip


class Runner:
    def __init__(self, store: JobStore, load: Callable[[str], Models]) -> None:
        self.store, self.load = store, load
        self.models: dict[str, Models] = {}
        self.lock = threading.Lock()
        self.jobs: queue.Queue[str | None] = queue.Queue()
        self._images: OrderedDict[str, Image] = OrderedDict()
        self._thread: threading.Thread | None = None

    def start(self, pending: Callable[[], list[str]]) -> bool:
        """Start the thread and queue the jobs ``pending()`` gives; False (nothing done) when
        it runs already."""
        if self._thread is not None and self._thread.is_alive():
            return False
        for job_id in pending():
            self.jobs.put(job_id)
        self._thread = threading.Thread(target=self._loop, name="automedseg-jobs", daemon=True)
        self._thread.start()
        return True

    def stop(self) -> None:
        if self._thread is not None:
            self.jobs.put(None)
            self._thread.join(timeout=30)

    def submit(self, job_id: str) -> None:
        self.jobs.put(job_id)

    def models_for(self, task: str) -> Models:
        if task not in self.models:
            self.models[task] = self.load(task)
        return self.models[task]

    def image(self, job_id: str) -> Image:
        """The job's input, read once and kept for the next edits (the last few jobs)."""
        if job_id not in self._images:
            path = self.store.input_path(job_id)
            if path is None:
                raise InputError(f"job {job_id} has no input file")
            self._images[job_id] = io.read_image(path)
            while len(self._images) > 3:
                self._images.popitem(last=False)
        self._images.move_to_end(job_id)
        return self._images[job_id]

    def _loop(self) -> None:
        while (job_id := self.jobs.get()) is not None:
            self.run(job_id)

    def run(self, job_id: str) -> None:
        job = self.store.get(job_id)
        if job is None or job.status != "queued":
            return
        self.store.update(job_id, status="running", progress=0.05)
        try:
            with self.lock:
                models = self.models_for(job.task)
                self.store.update(job_id, progress=0.2)
                image = self.image(job_id)

                def progress(stage: str, done: int, total: int) -> None:
                    share = done / max(total, 1)
                    start, width = (0.2, 0.3) if stage == "prompting" else (0.5, 0.45)
                    self.store.update(job_id, progress=round(start + width * share, 3))

                result = segment_loaded(image, models, progress)
            self.store.save_qc(job_id, result.qc or {})
            self.store.save_objects(job_id, objects_of(result, image))
            self.store.update(job_id, status="done", progress=1.0)
        except AutomedsegError as error:
            self.store.update(job_id, status="failed", error=str(error), progress=1.0)
        except Exception as error:  # keep serving the other jobs
            reason = f"internal error ({type(error).__name__}: {error})"
            self.store.update(job_id, status="failed", progress=1.0, error=reason)

    def add_object(self, job_id: str, box: tuple[float, ...], label: int,
                   plane: int | None) -> int:  # fmt: skip
        """Segment a user's box (on ``plane`` of a volume, then followed through it) as a new
        object on top of the others; returns the new version."""
        job = self.store.get(job_id)
        objects = self.store.objects(job_id)
        if job is None or objects is None:
            raise PromptError("the job has no result yet")
        with self.lock:
            models = self.models_for(job.task)
            image = self.image(job_id)
            if image.spatial_dims == 3 and (plane is None or not 0 <= plane < image.shape[0]):
                raise PromptError(f"give the plane (0..{image.shape[0] - 1}) the box is on")
            boxes = Boxes(np.asarray([box], np.float32), [label], [1.0])
            z = plane if image.spatial_dims == 3 else None
            result = segment_image(image, FixedBoxes(boxes), models.segmenter, z, propagate=True)
        mask = result.label_map != 0
        number = len(objects.labels) + 1
        instances = objects.instances.copy()
        instances[mask] = number
        grown = replace(
            objects, instances=instances, labels=np.append(objects.labels, label),
            scores=np.append(objects.scores, 1.0).astype(np.float32),
            boxes=np.vstack([objects.boxes.reshape(-1, 4), boxes.xyxy]),
            planes=np.append(objects.planes, -1 if z is None else z),
        )  # fmt: skip
        return self.store.save_objects(job_id, _renumbered(grown))

    def remove_object(self, job_id: str, number: int) -> int:
        """Remove object ``number`` (1-based); the others are renumbered 1..N; the new
        version."""
        objects = self.store.objects(job_id)
        if objects is None or not 1 <= number <= len(objects.labels):
            raise PromptError(f"no object {number}")
        instances = objects.instances.copy()
        instances[instances == number] = 0
        return self.store.save_objects(job_id, _renumbered(replace(objects, instances=instances)))


def _renumbered(objects: Objects) -> Objects:
    """Objects hidden entirely under later ones are dropped, the rest numbered 1..N."""
    present = np.zeros(len(objects.labels) + 1, bool)
    present[np.unique(objects.instances)] = True
    keep = present[1:]
    mapping = np.zeros(len(keep) + 1, np.uint16)
    mapping[1:][keep] = np.arange(1, keep.sum() + 1)
    return Objects(mapping[objects.instances], objects.labels[keep], objects.scores[keep],
                   objects.boxes.reshape(-1, 4)[keep], objects.planes[keep])  # fmt: skip
