"""The REST API and the review page (``automedseg serve``).

    POST   /api/jobs                    multipart ``file`` + form ``task`` → {"id": ...}
    GET    /api/jobs                    every job
    GET    /api/jobs/{id}               status (queued|running|done|failed), progress, error
    GET    /api/jobs/{id}/mask          the label map: PNG (2D) or NIfTI (volumes, videos)
    GET    /api/jobs/{id}/result        the JSON summary (objects, labels, sizes)
    GET    /api/jobs/{id}/overlay       the overlay picture (PNG)
    GET    /api/jobs/{id}/dicom-seg     the DICOM Segmentation (DICOM input)
    GET    /api/jobs/{id}/view/{part}   image.nii.gz / labels.nii.gz for the viewer
    POST   /api/jobs/{id}/boxes         {"box": [x0, y0, x1, y1], "label": 1, "plane": z}
    DELETE /api/jobs/{id}/objects/{n}   remove object n
    POST   /api/jobs/{id}/undo          back to the objects before the last change
    GET    /api/tasks                   the tasks, their labels and colours

With a ``token``, every /api call needs ``Authorization: Bearer <token>`` (or ``?token=``).
Uploads are judged by their bytes (``io.uploads``), limited in size, and refused with a 4xx
and a reason; nothing is stored for a refused upload.
"""

from __future__ import annotations

import re
import secrets
import shutil
from collections.abc import Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

import numpy as np
from fastapi import Depends, FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

import automedseg
from automedseg import io
from automedseg.api import DEFAULT_FORMATS, write_result
from automedseg.errors import AutomedsegError
from automedseg.io.nifti import nifti_bytes
from automedseg.io.overlay import label_color, to_uint8
from automedseg.serve.store import Job, JobStore
from automedseg.serve.worker import Runner, as_result
from automedseg.tasks import Models, load_models, shipped_tasks

STATIC = Path(__file__).resolve().parent / "static"
JOB_ID = re.compile(r"^[0-9a-f]{16}$")
CHUNK = 1 << 20


class BoxEdit(BaseModel):
    box: list[Annotated[float, Field(ge=-1e6, le=1e6)]] = Field(
        min_length=4, max_length=4, description="X0 Y0 X1 Y1, inclusive pixel corners"
    )
    label: int = Field(1, ge=1, le=65535)
    plane: int | None = Field(None, ge=0, description="volume plane (axis 0) of the box")


def shipped_labels() -> dict[str, dict[int, str]]:
    return {name: task.labels for name, task in shipped_tasks().items()}


def create_app(
    data: str | Path,
    *,
    load: Callable[[str], Models] = load_models,
    tasks: Mapping[str, Mapping[int, str]] | None = None,
    token: str | None = None,
    max_upload_mb: float = 512,
) -> FastAPI:
    """The app, its jobs kept in ``data``. ``load`` turns a task name into its models (the
    shipped tasks' by default); ``tasks`` maps each task offered to its label names."""
    store = JobStore(data)
    runner = Runner(store, load)
    offered = {k: dict(v) for k, v in (tasks if tasks is not None else shipped_labels()).items()}
    limit = int(max_upload_mb * CHUNK)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        started = runner.start(store.recover)
        yield
        if started:
            runner.stop()

    def authorised(request: Request) -> None:
        if token is None:
            return
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        given = given or request.query_params.get("token", "")
        if not secrets.compare_digest(given.encode(), token.encode()):
            raise HTTPException(401, "a valid token is needed (Authorization: Bearer TOKEN)")

    app = FastAPI(title="automedseg", version=automedseg.__version__, lifespan=lifespan,
                  description="Automatic medical image segmentation: review and fix the "
                  "masks. For research, not a medical device.")  # fmt: skip
    api = [Depends(authorised)]

    def job_of(job_id: str, done: bool = False) -> Job:
        job = store.get(job_id) if JOB_ID.match(job_id) else None
        if job is None:
            raise HTTPException(404, f"no job {job_id!r}")
        if done and job.status != "done":
            raise HTTPException(409, f"job {job_id} is {job.status}, not done")
        return job

    @app.exception_handler(AutomedsegError)
    async def bad_input(request: Request, error: AutomedsegError) -> JSONResponse:
        return JSONResponse({"detail": _plain(str(error), store.root)}, status_code=400)

    @app.get("/api/tasks", dependencies=api)
    def list_tasks() -> dict:
        return {name: {"labels": {str(k): v for k, v in labels.items()},
                       "colours": {str(k): _hex(label_color(k)) for k in labels}}
                for name, labels in offered.items()}  # fmt: skip

    @app.post("/api/jobs", dependencies=api, status_code=201)
    async def submit(file: Annotated[UploadFile, File()], task: Annotated[str, Form()]) -> dict:
        if task not in offered:
            raise HTTPException(400, f"unknown task {task!r}; choose one of {sorted(offered)}")
        data = await _read_limited(file, limit)
        job_id = store.new_id()
        folder = store.folder(job_id)
        folder.mkdir(parents=True)
        name = Path(file.filename or "upload").name
        try:
            stored = io.store_upload(data, folder, name, max_bytes=4 * limit)
            await run_in_threadpool(io.read_image, stored)  # a corrupt file is refused now
        except AutomedsegError as error:
            shutil.rmtree(folder, ignore_errors=True)
            status = 415 if "not an accepted file" in str(error) else 400
            raise HTTPException(status, _plain(str(error), store.root)) from None
        store.add(job_id, task, name)
        runner.submit(job_id)
        return {"id": job_id}

    @app.get("/api/jobs", dependencies=api)
    def jobs() -> list[dict]:
        return [job.public() for job in store.all()]

    @app.get("/api/jobs/{job_id}", dependencies=api)
    def status(job_id: str) -> dict:
        return job_of(job_id).public()

    def outputs(job: Job) -> Path:
        """The job's files for its current objects, written once per version."""
        folder = store.folder(job.id) / f"out_v{job.version}"
        if not folder.is_dir():
            image = runner.image(job.id)
            objects = store.objects(job.id)
            with runner.lock:
                models = runner.models_for(job.task)
            temp = io.temp_folder(folder)
            try:
                result = as_result(objects, models.segmenter_name, store.qc(job.id))
                write_result(image, result, temp, "result", [],
                             offered.get(job.task), DEFAULT_FORMATS, models.label_codes,
                             models.description)  # fmt: skip
                io.replace_folder(temp, folder)
            finally:
                io.remove_folder(temp)
        return folder

    def download(job_id: str, names: tuple[str, ...], missing: str) -> FileResponse:
        folder = outputs(job_of(job_id, done=True))
        for name in names:
            if (folder / name).is_file():
                return FileResponse(folder / name, filename=f"{job_id}_{name}")
        raise HTTPException(404, missing)

    @app.get("/api/jobs/{job_id}/mask", dependencies=api)
    def mask(job_id: str) -> FileResponse:
        return download(job_id, ("result_mask.png", "result_seg.nii.gz"), "no mask")

    @app.get("/api/jobs/{job_id}/result", dependencies=api)
    def result(job_id: str) -> FileResponse:
        return download(job_id, ("result.json",), "no result")

    @app.get("/api/jobs/{job_id}/overlay", dependencies=api)
    def overlay(job_id: str) -> FileResponse:
        return download(job_id, ("result_overlay.png", "result_overlay.mp4"), "no overlay")

    @app.get("/api/jobs/{job_id}/dicom-seg", dependencies=api)
    def dicom_seg(job_id: str) -> FileResponse:
        missing = "no DICOM-SEG: the input is not DICOM, or nothing is segmented"
        return download(job_id, ("result_seg.dcm",), missing)

    @app.get("/api/jobs/{job_id}/view/{part}", dependencies=api)
    def view(job_id: str, part: str) -> Response:
        job = job_of(job_id, done=part == "labels.nii.gz")
        if part not in ("image.nii.gz", "labels.nii.gz"):
            raise HTTPException(404, "ask for image.nii.gz or labels.nii.gz")
        if job.status == "failed":
            raise HTTPException(409, f"job {job_id} failed: {job.error}")
        image = runner.image(job.id)
        volume, affine = display_volume(image)
        if part == "image.nii.gz":
            body = nifti_bytes(volume, affine)
        else:
            labels = store.objects(job.id).label_map()
            body = nifti_bytes(labels[np.newaxis] if image.spatial_dims == 2 else labels, affine)
        return Response(body, media_type="application/gzip")

    @app.post("/api/jobs/{job_id}/boxes", dependencies=api)
    def add_box(job_id: str, edit: BoxEdit) -> dict:
        job = job_of(job_id, done=True)
        labels = offered.get(job.task, {})
        if labels and edit.label not in labels:
            raise HTTPException(400, f"label {edit.label} is not one of {sorted(labels)}")
        version = runner.add_object(job.id, tuple(edit.box), edit.label, edit.plane)
        return {"version": version, "objects": len(store.objects(job.id).labels)}

    @app.delete("/api/jobs/{job_id}/objects/{number}", dependencies=api)
    def delete_object(job_id: str, number: int) -> dict:
        job = job_of(job_id, done=True)
        objects = store.objects(job.id)
        if not 1 <= number <= len(objects.labels):
            raise HTTPException(404, f"no object {number} (the job has {len(objects.labels)})")
        version = runner.remove_object(job.id, number)
        return {"version": version, "objects": len(store.objects(job.id).labels)}

    @app.post("/api/jobs/{job_id}/undo", dependencies=api)
    def undo(job_id: str) -> dict:
        job = job_of(job_id, done=True)
        if not store.undo(job.id):
            raise HTTPException(409, "nothing to undo")
        return {"version": store.get(job.id).version}

    app.mount("/", StaticFiles(directory=STATIC, html=True), name="page")
    return app


def display_volume(image) -> tuple[np.ndarray, np.ndarray]:
    """(volume, affine) for the viewer: a volume with its own affine; a 2D image as one
    slice, rows going down the screen; gray shown in 8 bits (its window or percentiles)."""
    if image.spatial_dims == 3 and image.frame_names is None:
        array = image.array if image.channels > 1 else np.asarray(image.array, np.float32)
        return array, image.geometry.affine
    height = image.shape[-2]  # a picture, or a video's frames: rows down, frames as slices
    affine = np.array([[1.0, 0, 0, 0], [0, -1.0, 0, height - 1], [0, 0, 1.0, 0], [0, 0, 0, 1]])
    array = image.array if image.channels > 1 else to_uint8(image.array, image.window)
    return (array[np.newaxis] if image.spatial_dims == 2 else array), affine


async def _read_limited(file: UploadFile, limit: int) -> bytes:
    chunks, size = [], 0
    while block := await file.read(CHUNK):
        size += len(block)
        if size > limit:
            raise HTTPException(413, f"the upload is larger than {limit // CHUNK} MB")
        chunks.append(block)
    if not size:
        raise HTTPException(400, "the upload is empty")
    return b"".join(chunks)


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#" + "".join(f"{v:02x}" for v in rgb)


def _plain(message: str, root: Path) -> str:
    """A message without the server's own folders in it."""
    return message.replace(str(root) + "/", "")
