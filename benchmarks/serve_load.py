"""The review app under load, with a restart in the middle of its queue.

    python benchmarks/serve_load.py --task polyp --jobs 20 --work runs/serve_load \
        --out benchmarks/records/serve_load.json

Starts ``automedseg serve`` (localhost), submits ``--jobs`` uploads at once (Kvasir-SEG
example images, 20 threads), kills the server (SIGKILL) once a few jobs are done and others are
still queued, starts it again on the same job store, and waits. Checked: every submitted job is
listed after the restart, each ends ``done`` or ``failed`` with a reason (the one running at
the kill), queued ones are resumed, and the results finished before the restart are still
served (their mask downloads).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent / "automedseg"


def start(data: Path, port: int) -> subprocess.Popen:
    server = subprocess.Popen([str(BIN), "serve", "--data", str(data), "--port", str(port),
                               "--threads", "2"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    until = time.time() + 120
    while time.time() < until:
        try:
            httpx.get(f"http://127.0.0.1:{port}/api/tasks", timeout=2).raise_for_status()
            return server
        except httpx.HTTPError:
            time.sleep(0.3)
    raise SystemExit("the server did not start")


def statuses(base: str) -> dict[str, dict]:
    return {job["id"]: job for job in httpx.get(f"{base}/api/jobs", timeout=30).json()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="polyp")
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--images", type=Path, default=Path("examples/kvasir_seg/images"))
    parser.add_argument("--port", type=int, default=8791)
    parser.add_argument("--work", type=Path, default=Path("runs/serve_load"))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    data = args.work / "data"
    images = sorted(args.images.glob("*.jpg"))
    base = f"http://127.0.0.1:{args.port}"
    server = start(data, args.port)
    started = time.perf_counter()

    def submit(index: int) -> str:
        image = images[index % len(images)]
        with open(image, "rb") as f:
            response = httpx.post(f"{base}/api/jobs", files={"file": (image.name, f)},
                                  data={"task": args.task}, timeout=120)  # fmt: skip
        response.raise_for_status()
        return response.json()["id"]

    with ThreadPoolExecutor(args.jobs) as pool:
        ids = list(pool.map(submit, range(args.jobs)))
    submitted = time.perf_counter() - started
    while sum(j["status"] == "done" for j in statuses(base).values()) < max(2, args.jobs // 4):
        time.sleep(0.2)
    before = statuses(base)
    os.killpg(server.pid, signal.SIGKILL)
    server.wait()
    done_before = [i for i in ids if before[i]["status"] == "done"]
    queued_before = [i for i in ids if before[i]["status"] == "queued"]
    server = start(data, args.port)
    try:
        while any(j["status"] in ("queued", "running") for j in statuses(base).values()):
            time.sleep(0.5)
        after = statuses(base)
        served = [httpx.get(f"{base}/api/jobs/{i}/mask", timeout=60).status_code == 200
                  for i in done_before]  # fmt: skip
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait()
    record = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "task": args.task,
        "submitted": len(ids),
        "submit_seconds": round(submitted, 2),
        "at_the_kill": {s: sum(before[i]["status"] == s for i in ids)
                        for s in ("queued", "running", "done", "failed")},  # fmt: skip
        "listed_after_restart": sum(i in after for i in ids),
        "final": {s: sum(after[i]["status"] == s for i in ids) for s in ("done", "failed")},
        "failed_reasons": sorted({after[i]["error"] for i in ids
                                  if after[i]["status"] == "failed"}),  # fmt: skip
        "queued_at_kill_resumed_done": sum(after[i]["status"] == "done" for i in queued_before),
        "queued_at_kill": len(queued_before),
        "finished_before_kill_still_served": all(served) and len(served) == len(done_before),
        "seconds": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
