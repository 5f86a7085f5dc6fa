"""Render a ``medcf benchmark`` report.html to a PNG with headless Chromium (a real browser check).

Uses Debian's ``chromium`` package (``apt-get install -y chromium``) or any
``chromium``/``chromium-browser``/``google-chrome`` on PATH (``--browser`` to choose).
The page is loaded from the file (no network: the report is self-contained).

Usage:
    .venv/bin/python benchmarks/render_report.py runs/bench/report.html docs/img/benchmark_report.png
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_browser(name: str | None = None) -> str | None:
    """Path of a Chromium-family browser (``name`` if given), or None."""
    for b in ((name,) if name else BROWSERS):
        p = shutil.which(b)
        if p:
            return p
    return None


def render(html: str | Path, png: str | Path, *, width: int = 1400, height: int = 2400,
           browser: str | None = None, timeout: float = 120.0) -> Path:
    """Screenshot ``html`` (a file) into ``png`` at ``width`` x ``height`` CSS pixels."""
    exe = find_browser(browser)
    if exe is None:
        raise FileNotFoundError(f"no Chromium browser found (tried {list(BROWSERS)}); apt-get install chromium")
    html, png = Path(html).resolve(), Path(png).resolve()
    if not html.is_file():
        raise FileNotFoundError(f"{html}: report not found")
    png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:  # a throwaway browser profile
        cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--user-data-dir={profile}", f"--window-size={width},{height}",
               f"--screenshot={png}", "--virtual-time-budget=5000", html.as_uri()]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0 or not png.is_file() or png.stat().st_size == 0:
        raise RuntimeError(f"chromium failed (exit {res.returncode}): {res.stderr.strip()[-500:]}")
    return png


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("html", type=Path, help="report.html")
    ap.add_argument("png", type=Path, help="output PNG")
    ap.add_argument("--width", type=int, default=1400)
    ap.add_argument("--height", type=int, default=2400)
    ap.add_argument("--browser", default=None, help="browser executable name or path")
    args = ap.parse_args(argv)
    try:
        out = render(args.html, args.png, width=args.width, height=args.height, browser=args.browser)
    except (FileNotFoundError, RuntimeError, subprocess.TimeoutExpired) as e:
        print(f"render_report: error: {e}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
