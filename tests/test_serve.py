"""The review app's API (FastAPI's TestClient), with stand-in models passed in."""

from __future__ import annotations

import gzip
import io as bytes_io
import json
import time
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image as PILImage

from automedseg.prompt.oracle import FixedBoxes
from automedseg.serve import create_app
from automedseg.tasks import Models, Task
from automedseg.types import Boxes
from conftest import EXAMPLES, BoxFiller

TASKS = {"lesion": {1: "lesion", 2: "cyst"}}
POLYP = sorted((EXAMPLES / "kvasir_seg" / "images").glob("*.jpg"))[0]


def stand_in(task: str) -> Models:
    finder = FixedBoxes(Boxes.from_list([(2, 1, 5, 3)]), {1: "lesion"})
    return Models(finder, BoxFiller(), "torch", Task(task, None))


def png_bytes(shape=(8, 10)) -> bytes:
    pixels = (np.arange(np.prod(shape)) % 200).astype(np.uint8).reshape(shape)
    buffer = bytes_io.BytesIO()
    PILImage.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def nifti_bytes(shape=(6, 8, 10)) -> bytes:
    data = np.arange(np.prod(shape), dtype=np.float32).reshape(shape).transpose(2, 1, 0)
    return gzip.compress(nib.Nifti1Image(data, np.diag([0.5, 0.5, 2.0, 1])).to_bytes())


def client_for(data: Path, **options) -> TestClient:
    app = create_app(data, load=stand_in, tasks=TASKS, **options)
    return TestClient(app)


def wait_done(client: TestClient, job_id: str, timeout: float = 30) -> dict:
    until = time.time() + timeout
    while time.time() < until:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["status"] in ("done", "failed"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish")


def submit(client: TestClient, content: bytes, name: str = "a.png", task: str = "lesion"):
    return client.post("/api/jobs", files={"file": (name, content)}, data={"task": task})


def test_a_2d_job_runs_and_its_objects_can_be_fixed_and_downloaded(tmp_path):
    with client_for(tmp_path) as client:
        response = submit(client, png_bytes(), "scan.jpg")  # the name does not decide the type
        assert response.status_code == 201, response.text
        job_id = response.json()["id"]
        assert wait_done(client, job_id)["status"] == "done"
        mask = np.asarray(
            PILImage.open(bytes_io.BytesIO(client.get(f"/api/jobs/{job_id}/mask").content))
        )
        assert mask.shape == (8, 10) and mask[1:4, 2:6].all() and mask.sum() == 12
        result = client.get(f"/api/jobs/{job_id}/result").json()
        assert [o["label_name"] for o in result["objects"]] == ["lesion"]

        added = client.post(f"/api/jobs/{job_id}/boxes", json={"box": [6, 5, 8, 7], "label": 2})
        assert added.status_code == 200 and added.json()["objects"] == 2
        result = client.get(f"/api/jobs/{job_id}/result").json()
        assert [o["label_name"] for o in result["objects"]] == ["lesion", "cyst"]
        assert client.delete(f"/api/jobs/{job_id}/objects/1").json()["objects"] == 1
        assert client.post(f"/api/jobs/{job_id}/undo").status_code == 200
        assert len(client.get(f"/api/jobs/{job_id}/result").json()["objects"]) == 2
        assert client.delete(f"/api/jobs/{job_id}/objects/9").status_code == 404
        assert client.get(f"/api/jobs/{job_id}/overlay").status_code == 200
        assert client.get(f"/api/jobs/{job_id}/dicom-seg").status_code == 404
        view = client.get(f"/api/jobs/{job_id}/view/labels.nii.gz")
        labels = nib.Nifti1Image.from_bytes(gzip.decompress(view.content))
        assert labels.shape == (10, 8, 1) and set(np.unique(labels.dataobj)) == {0, 1, 2}


def test_a_volume_job_and_a_box_followed_through_it(tmp_path):
    with client_for(tmp_path) as client:
        job_id = submit(client, nifti_bytes(), "scan.nii.gz").json()["id"]
        assert wait_done(client, job_id)["status"] == "done"
        mask = client.get(f"/api/jobs/{job_id}/mask")
        seg = nib.Nifti1Image.from_bytes(gzip.decompress(mask.content))
        assert seg.shape == (10, 8, 6) and np.allclose(seg.affine, np.diag([0.5, 0.5, 2.0, 1]))
        no_plane = client.post(f"/api/jobs/{job_id}/boxes", json={"box": [1, 1, 3, 3]})
        assert no_plane.status_code == 400 and "plane" in no_plane.json()["detail"]
        added = client.post(f"/api/jobs/{job_id}/boxes",
                            json={"box": [6, 5, 8, 7], "label": 2, "plane": 3})  # fmt: skip
        assert added.status_code == 200
        result = client.get(f"/api/jobs/{job_id}/result").json()
        assert (
            result["objects"][-1]["label_name"] == "cyst" and "volume_ml" in result["labels"]["2"]
        )


@pytest.mark.parametrize(
    ("content", "name", "status", "reason"),
    [
        (b"just some text", "notes.png", 415, "not an accepted file"),
        (b"\x1f\x8b" + b"\x00" * 400, "broken.nii.gz", 415, "not an accepted file"),
        (b"", "empty.png", 400, "empty"),
    ],
)
def test_bad_uploads_are_refused_with_a_reason_and_nothing_is_stored(
    tmp_path, content, name, status, reason
):
    with client_for(tmp_path) as client:
        response = submit(client, content, name)
        assert response.status_code == status and reason in response.json()["detail"]
        assert client.get("/api/jobs").json() == []
    assert not any((tmp_path / "jobs").iterdir())


def zipped(members: dict[str, bytes]) -> bytes:
    buffer = bytes_io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_zip_slip_an_oversized_upload_an_unknown_task_and_a_corrupt_volume(tmp_path):
    with client_for(tmp_path, max_upload_mb=0.01) as client:
        slip = submit(client, zipped({"../../evil.dcm": b"x"}), "series.zip")
        assert slip.status_code == 400 and "unsafe path" in slip.json()["detail"]
        big = submit(client, png_bytes((200, 200)) + b"\0" * 20000, "big.png")
        assert big.status_code == 413
        unknown = submit(client, png_bytes(), task="liver")
        assert unknown.status_code == 400 and "unknown task" in unknown.json()["detail"]
        cut = gzip.compress(gzip.decompress(nifti_bytes())[:600])  # a NIfTI header, no data
        corrupt = submit(client, cut, "cut.nii.gz")
        assert corrupt.status_code == 400 and "NIfTI" in corrupt.json()["detail"]
        assert client.get("/api/jobs").json() == []
    assert not any((tmp_path / "jobs").iterdir())
    assert not (tmp_path / "evil.dcm").exists() and not (tmp_path.parent / "evil.dcm").exists()


def test_unknown_jobs_bad_ids_and_the_token(tmp_path):
    with client_for(tmp_path, token="secret") as client:
        assert client.get("/api/jobs").status_code == 401
        headers = {"Authorization": "Bearer secret"}
        assert client.get("/api/jobs", headers=headers).json() == []
        assert client.get("/api/jobs?token=secret").status_code == 200
        assert client.get("/api/jobs/../../etc/passwd", headers=headers).status_code == 404
        assert client.get("/api/jobs/0123456789abcdef", headers=headers).status_code == 404
        assert client.get("/").status_code == 200  # the page itself holds no data


def test_a_restarted_server_serves_finished_jobs_and_resumes_queued_ones(tmp_path):
    with client_for(tmp_path) as client:
        done = submit(client, png_bytes()).json()["id"]
        wait_done(client, done)
    from automedseg.serve.store import JobStore

    store = JobStore(tmp_path)  # as if the server stopped with one job queued, one running
    for job_id, status in (("00000000000000aa", "queued"), ("00000000000000bb", "running")):
        store.folder(job_id).mkdir(parents=True)
        (store.folder(job_id) / "input.png").write_bytes(png_bytes())
        store.add(job_id, "lesion", "x.png")
        store.update(job_id, status=status)
    with client_for(tmp_path) as client:
        assert client.get(f"/api/jobs/{done}/mask").status_code == 200
        assert wait_done(client, "00000000000000aa")["status"] == "done"
        running = client.get("/api/jobs/00000000000000bb").json()
        assert running["status"] == "failed" and "stopped while" in running["error"]


def test_twenty_concurrent_submissions_all_finish(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    with client_for(tmp_path) as client:
        with ThreadPoolExecutor(8) as pool:
            ids = list(pool.map(lambda _: submit(client, png_bytes()).json()["id"], range(20)))
        assert len(set(ids)) == 20
        assert [wait_done(client, i)["status"] for i in ids] == ["done"] * 20
        assert len(client.get("/api/jobs").json()) == 20


def test_the_openapi_schema_lists_the_api(tmp_path):
    with client_for(tmp_path) as client:
        schema = client.get("/openapi.json").json()
    assert {"/api/jobs", "/api/jobs/{job_id}/boxes", "/api/jobs/{job_id}/objects/{number}"} <= set(
        schema["paths"]
    )
    assert json.dumps(schema)


def test_a_real_polyp_example_through_the_shipped_task(tmp_path):
    """The shipped polyp task's models (loaded once by the worker) on a shipped example."""
    app = create_app(tmp_path, tasks={"polyp": {1: "polyp"}})
    with TestClient(app) as client:
        job_id = submit(client, POLYP.read_bytes(), POLYP.name, "polyp").json()["id"]
        job = wait_done(client, job_id, timeout=120)
        assert job["status"] == "done", job["error"]
        assert client.get(f"/api/jobs/{job_id}/result").json()["objects"]


def test_schemathesis_finds_no_server_error(tmp_path):
    """Generated calls of every operation in /openapi.json (a few per operation, stand-in
    models, half of them on a real finished job): none answers 5xx."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import not_a_server_error

    app = create_app(tmp_path, load=stand_in, tasks=TASKS)
    with TestClient(app) as client:  # starts the worker; one finished job to edit
        job_id = submit(client, png_bytes()).json()["id"]
        wait_done(client, job_id)
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        operations = [result.ok() for result in schema.get_all_operations()]
        calls = []

        for operation in operations:

            @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy())
            def check(case):
                if "job_id" in (case.path_parameters or {}) and len(calls) % 2 == 0:
                    case.path_parameters["job_id"] = job_id
                calls.append(case.call_and_validate(checks=[not_a_server_error]).status_code)

            check()
    assert len(operations) >= 10 and len(calls) > 50 and max(calls) < 500
