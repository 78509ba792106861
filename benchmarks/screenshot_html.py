"""Open distill's static HTML pages in headless Chromium, fail on console errors or broken
images, and save a screenshot of each.

    python benchmarks/screenshot_html.py PAGE.html [PAGE.html ...] [--out DIR]

Needs Debian's `chromium` (apt-get install chromium); the pages need nothing else.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars"]
# Counts images that failed to load; Chromium prints the DOM, which we read back.
PROBE = ("<script>addEventListener('load',()=>{document.title='broken:'+"
         "[...document.images].filter(i=>!i.complete||i.naturalWidth===0).length})</script>")


def check(page: Path, out: Path, chromium: str) -> dict:
    profile = tempfile.mkdtemp(prefix="chromium-")
    probe_page = page.with_name(f".probe-{page.name}")
    probe_page.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"),
                          encoding="utf-8")
    try:
        base = [chromium, *FLAGS, f"--user-data-dir={profile}"]
        dom = subprocess.run([*base, "--virtual-time-budget=5000", "--enable-logging=stderr",
                              "--dump-dom", probe_page.as_uri()], capture_output=True, text=True,
                             timeout=120, check=False)
        shot = out / f"{page.parent.name}-{page.stem}.png"
        subprocess.run([*base, f"--screenshot={shot}", "--window-size=1280,1600",
                        page.as_uri()], capture_output=True, timeout=120, check=False)
    finally:
        probe_page.unlink(missing_ok=True)
        shutil.rmtree(profile, ignore_errors=True)
    console_errors = [line for line in dom.stderr.splitlines()
                      if "CONSOLE" in line and ("Error" in line or "error" in line)]
    title = dom.stdout.split("<title>")[-1].split("</title>")[0] if "<title>" in dom.stdout else ""
    broken = int(title.split(":")[1]) if title.startswith("broken:") else None
    return {"page": str(page), "screenshot": str(shot), "screenshot_exists": shot.exists(),
            "broken_images": broken, "console_errors": console_errors}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pages", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/screenshots"))
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        sys.exit("chromium not found: apt-get install chromium")
    args.out.mkdir(parents=True, exist_ok=True)
    results = [check(page.resolve(), args.out, chromium) for page in args.pages]
    print(json.dumps(results, indent=2))
    ok = all(r["screenshot_exists"] and r["broken_images"] == 0 and not r["console_errors"]
             for r in results)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
