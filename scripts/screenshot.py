"""A picture of a model's page of the registry report, taken in headless Chromium (for the documentation, docs/report.md).

    .venv/bin/python scripts/screenshot.py REPO MODEL [--out docs/report.png]

Writes the report of REPO into a temp folder with `kgit report`, opens models/MODEL.html from
file:// in the system's Chromium (Debian's chromium package; playwright drives it, nothing is
downloaded), and saves the top of the page. Any request that is not file:// is refused.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("repo", type=Path, help="a git repository with kgit releases")
    parser.add_argument("model", help="the model whose page to take")
    parser.add_argument("--out", type=Path, default=Path("docs/report.png"), help="the PNG to write")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=1100)
    args = parser.parse_args()
    chromium = shutil.which("chromium")
    if chromium is None:
        parser.error("chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="kgit-report-") as tmp:
        site = Path(tmp) / "site"
        subprocess.run(
            [sys.executable, "-m", "kgit", "report", args.model, "--out", str(site)], cwd=args.repo, check=True
        )
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": args.width, "height": args.height})
            page.route("**/*", lambda r: r.continue_() if r.request.url.startswith("file://") else r.abort())
            page.goto((site / "models" / f"{args.model}.html").as_uri(), wait_until="load")
            page.wait_for_selector(".js-plotly-plot .main-svg")
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out))
            browser.close()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
