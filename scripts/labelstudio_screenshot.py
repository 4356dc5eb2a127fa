"""Screenshot of Label Studio's labelling view, as an annotator sees a pushed task.

Logs in to the local server of a tomoloop home as its admin (credentials from
``$HOME/labelstudio/server.json``), opens one task of a project in headless Chromium and
saves a PNG. Used for the README's picture; not part of the package.

Needs Debian's Chromium (``apt-get install chromium``) and Playwright in any virtualenv
(``python -m venv /tmp/pw && /tmp/pw/bin/pip install playwright``; it drives
``/usr/bin/chromium``, nothing is downloaded):

    /tmp/pw/bin/python scripts/labelstudio_screenshot.py --home demo-out/home \\
        --project 1 --task 13 --out docs/img/labelling-view.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from playwright.sync_api import sync_playwright

ADMIN = "admin@tomoloop.local"
# Quiet, sandbox-free headless Chromium on a machine without outside network.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--project", type=int, required=True)
    parser.add_argument("--task", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--wait-ms", type=int, default=6000)
    parser.add_argument("--height", type=int, default=1000, help="Viewport height (px).")
    args = parser.parse_args()
    state = json.loads((args.home / "labelstudio" / "server.json").read_text())
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
        page = browser.new_page(viewport={"width": 1500, "height": args.height})
        page.goto(f"{state['url']}/user/login/")
        page.fill("input[name=email]", ADMIN)
        page.fill("input[name=password]", state["password"])
        page.click("button[type=submit]")
        page.wait_for_load_state("networkidle")
        page.goto(f"{state['url']}/projects/{args.project}/data?task={args.task}")
        page.wait_for_load_state("networkidle")
        page.wait_for_timeout(args.wait_ms)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(args.out))
        browser.close()
    print(args.out)


if __name__ == "__main__":
    main()
