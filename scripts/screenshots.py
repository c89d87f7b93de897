"""The review page's screenshots in docs/ (shown in the README), from the shipped examples.

    python scripts/screenshots.py

Starts the review app on localhost with the shipped tasks, uploads a polyp image and a
hippocampus volume through the page in Debian's chromium (Playwright), and saves the page once
each job's masks are drawn: docs/review_polyp.png, docs/review_hippocampus.png.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from pathlib import Path

import uvicorn
from playwright.sync_api import sync_playwright

from automedseg.serve import create_app

ROOT = Path(__file__).resolve().parents[1]
FLAGS = ["--no-sandbox", "--disable-gpu", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
         "--disable-background-networking", "--disable-component-update",
         "--disable-sync"]  # fmt: skip
SHOTS = [
    ("polyp", sorted((ROOT / "examples/kvasir_seg/images").glob("*.jpg"))[0], "review_polyp.png"),
    ("hippocampus", ROOT / "examples/msd_hippocampus/imagesTr/hippocampus_001.nii.gz",
     "review_hippocampus.png"),
]  # fmt: skip


def main() -> None:
    data = Path(tempfile.mkdtemp())
    server = uvicorn.Server(uvicorn.Config(create_app(data), host="127.0.0.1", port=0,
                                           log_level="warning"))  # fmt: skip
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.1)
    url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}/"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=FLAGS)
        for task, example, name in SHOTS:
            page = browser.new_page(viewport={"width": 1300, "height": 760})
            page.goto(url)
            page.select_option("#task", task)
            page.set_input_files("#file", str(example))
            page.click("#upload")
            page.wait_for_selector("#objects tbody tr", timeout=900_000)
            time.sleep(2)
            page.screenshot(path=str(ROOT / "docs" / name))
            print(f"docs/{name}: {page.inner_text('#status')}")
        browser.close()
    server.should_exit = True
    shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
