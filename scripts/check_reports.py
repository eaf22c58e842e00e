#!/usr/bin/env python
"""Render edgecompile report pages in headless Chromium: a screenshot each, and the key elements checked.

    python scripts/check_reports.py build/x86-cpu/report.html build/report/report.html --screenshots docs/

For every page: Chromium (``--headless=new``) renders the file and writes a PNG (cropped to the
page's content); its DOM after rendering (``--dump-dom``) must contain the elements of that kind
of page (build report: verdict, gates, components, plots; sweep report: verdict, one section per
model/task group, Pareto plots; with robustness results: the robustness section); every embedded
image must decode as a PNG; nothing may be loaded from the network; Chromium must log no page
errors. Exit 0 when every page passes, 1 when one fails, 4 when no Chromium is installed
(``apt-get install chromium``, or set EDGECOMPILE_CHROMIUM to the binary).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome", "headless_shell")
KIND_ELEMENTS = {
    "build": ['id="verdict"', 'id="gates"', 'id="components"', 'class="card"', "data-plot="],
    "sweep": ['id="verdict"', 'class="group"', 'data-plot="pareto '],
}
ROBUSTNESS_ELEMENTS = ['id="robustness"', 'data-plot="robustness (artifact)"']
# Chromium's own noise in a container (no D-Bus, no GPU): not the page's errors.
NOISE = re.compile(r"dbus|bus\.cc|object_proxy|gpu|viz|gl_|egl|angle|sandbox|shared_image|fontconfig|Fontconfig|ssl_client|cert_verify|memory_pressure|ozone|inotify|crashpad|sysinfo|zygote|policy|update_client", re.I)


def find_chromium() -> str | None:
    explicit = os.environ.get("EDGECOMPILE_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).exists() else None
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _chromium(binary: str, args: list[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="edgecompile-chromium-") as profile:
        base = [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run", "--disable-extensions", "--disable-background-networking", f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0"]
        return subprocess.run(base + args, capture_output=True, text=True, timeout=timeout, check=False)


def page_kind(html: str) -> str:
    return "sweep" if 'class="group"' in html else "build"


def _crop(png: bytes) -> bytes:
    """Cut the white space below the content (the window is taller than most pages)."""
    from PIL import Image, ImageChops

    img = Image.open(io.BytesIO(png)).convert("RGB")
    diff = ImageChops.difference(img, Image.new("RGB", img.size, (255, 255, 255)))
    box = diff.getbbox()
    if box:
        img = img.crop((0, 0, img.width, min(img.height, box[3] + 24)))
    out = io.BytesIO()
    img.convert("P", palette=Image.Palette.ADAPTIVE, colors=256).save(out, format="PNG", optimize=True)  # a quarter of the bytes, same look
    return out.getvalue()


def _not_blank(png: bytes) -> bool:
    from PIL import Image, ImageStat

    img = Image.open(io.BytesIO(png)).convert("L")
    return ImageStat.Stat(img).stddev[0] > 5.0


def check_page(binary: str, page: Path, screenshot: Path | None, width: int = 1280, height: int = 7000, fragment: str | None = None) -> dict[str, Any]:
    """Render ``page``; return {page, kind, problems: [...], screenshot, bytes}.

    ``fragment``: screenshot the page scrolled to that element id (e.g. ``robustness``), one window high.
    """
    html = page.read_text()
    kind = page_kind(html)
    problems: list[str] = []
    url = page.resolve().as_uri()
    if fragment and f'id="{fragment}"' not in html:
        problems.append(f"no element with id {fragment!r} to screenshot")
    with tempfile.TemporaryDirectory() as tmp:
        shot = Path(tmp) / "shot.png"
        target = url
        if fragment:  # headless --screenshot does not scroll to #id: render a copy showing the title, verdict and that section
            only = Path(tmp) / page.name
            only.write_text(html.replace("</head>", f"<style>body > :not(h1):not(.sub):not(#verdict):not(#{fragment}){{display:none}}</style></head>", 1))
            target = only.as_uri()
        done = _chromium(binary, [f"--window-size={width},{height}", f"--screenshot={shot}", target])
        if done.returncode != 0 or not shot.is_file():
            problems.append(f"chromium exited {done.returncode} without a screenshot: {done.stderr[-400:]}")
            png = b""
        else:
            png = _crop(shot.read_bytes())
            if not _not_blank(png):
                problems.append("the screenshot is blank")
        errors = [line for line in done.stderr.splitlines() if ("ERROR" in line or "CONSOLE" in line or "Uncaught" in line) and not NOISE.search(line)]
        problems += [f"chromium: {line.strip()[:200]}" for line in errors]
    dom = _chromium(binary, ["--dump-dom", url])
    rendered = dom.stdout
    if dom.returncode != 0 or "<body" not in rendered:
        problems.append(f"--dump-dom failed (exit {dom.returncode})")
    wanted = KIND_ELEMENTS[kind] + (ROBUSTNESS_ELEMENTS if kind == "build" and 'id="robustness"' in html else [])
    problems += [f"missing element {w!r}" for w in wanted if w not in rendered]
    if re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html):
        problems.append("the page loads something from the network (an http(s) or protocol-relative src/href)")
    images = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html)
    if not images:
        problems.append("no embedded plot")
    for i, data in enumerate(images):
        from PIL import Image

        try:
            Image.open(io.BytesIO(base64.b64decode(data))).verify()
        except Exception as exc:  # noqa: BLE001 - any decode failure is a broken image
            problems.append(f"embedded image {i} does not decode: {exc}")
    verdict = re.search(r'data-verdict="(\w+)"', rendered)
    if screenshot is not None and png:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        screenshot.write_bytes(png)
    return {"page": str(page), "kind": kind, "verdict": verdict.group(1) if verdict else None, "images": len(images), "problems": problems, "screenshot": str(screenshot) if screenshot and png else None, "screenshot_bytes": len(png)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pages", nargs="+", type=Path, help="report.html files; PAGE#id screenshots the section with that id")
    parser.add_argument("--screenshots", type=Path, default=None, help="folder for the PNGs (default: none kept)")
    parser.add_argument("--names", nargs="*", default=None, help="screenshot file names, one per page (default: <parent>-<kind>.png)")
    parser.add_argument("--width", type=int, default=1280)
    args = parser.parse_args(argv)
    binary = find_chromium()
    if binary is None:
        print(json.dumps({"ok": False, "error": "no Chromium found (tried EDGECOMPILE_CHROMIUM, " + ", ".join(CANDIDATES) + "); install it: apt-get install chromium"}))
        return 4
    results = []
    for i, spec in enumerate(args.pages):
        path, _, fragment = str(spec).partition("#")  # report.html#robustness: screenshot that section
        page = Path(path)
        name = args.names[i] if args.names and i < len(args.names) else f"{page.resolve().parent.name}-{fragment or page_kind(page.read_text())}.png"
        results.append(check_page(binary, page, args.screenshots / name if args.screenshots else None, args.width, fragment=fragment or None))
    ok = all(not r["problems"] for r in results)
    print(json.dumps({"ok": ok, "chromium": binary, "pages": results}, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
