"""Render the HTML report in a real headless Chromium (Debian's `chromium` package) and check what it shows."""

import json
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from cotune.report.build import write_report

from .test_report import THREE_SEEDS, make_run

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not on PATH (Debian: apt-get install chromium)"),
]
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

# Test-only harness: loads the report's own markup, then measures what the browser laid out. The report
# itself carries no script; this copy adds one at the end so `--dump-dom` returns the measurements.
PROBE = """<script>
const out = {svgs: [], tables: []};
for (const svg of document.querySelectorAll("svg.chart")) {
  const box = svg.getBoundingClientRect();
  const series = [...svg.querySelectorAll("g.series")].map(g => {
    const b = g.getBBox();
    return {name: g.dataset.series, points: g.querySelectorAll("circle.point").length, w: b.width, h: b.height};
  });
  out.svgs.push({cls: svg.getAttribute("class"), w: box.width, h: box.height, series});
}
for (const t of document.querySelectorAll("table")) {
  out.tables.push({cls: t.className, rows: t.querySelectorAll("tbody tr").length, h: t.getBoundingClientRect().height});
}
const pre = document.createElement("pre"); pre.id = "probe"; pre.textContent = JSON.stringify(out);
document.body.appendChild(pre);
</script>"""


def chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={tmp / 'profile'}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={"HOME": str(tmp), "PATH": "/usr/bin:/bin"},
    )


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    a = make_run(
        root,
        "a",
        THREE_SEEDS,
        tokens={"zero-shot": 80, "p": 420, "w": 80, "p-w": 420, "w-p": 430, "p-w-p": 425},
        optimize={"p": 60, "w": 600, "p-w": 660, "w-p": 650, "p-w-p": 700},
        train={"w": 500, "p-w": 500, "w-p": 500, "p-w-p": 500},
        demos={"p": [{"question": "<script>document.title='pwned'</script>", "answer": "4"}]},
    )
    b = make_run(root, "b", {k: [(d * 0.8, t * 0.7) for d, t in v] for k, v in THREE_SEEDS.items()}, task="gsm8k")
    return write_report([a, b], root / "report")[1]


def test_dom_has_the_table_and_the_plots_with_their_series(report, tmp_path):
    page = tmp_path / "probe.html"
    page.write_text(report.read_text().replace("</body>", PROBE + "</body>"))
    done = chromium(tmp_path, "--virtual-time-budget=5000", "--dump-dom", page.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    assert "<title>cotune report: iris, gsm8k</title>" in dom  # the demo's script did not run
    probe = json.loads(
        dom.split('<pre id="probe">', 1)[1].split("</pre>", 1)[0].replace("&quot;", '"').replace("&amp;", "&")
    )

    tables = {t["cls"]: t for t in probe["tables"]}
    assert tables["matrix"]["rows"] == 6 and tables["matrix"]["h"] > 100
    assert tables["cost"]["rows"] == 12  # 6 strategies × 2 runs
    line = [s for s in probe["svgs"] if s["cls"] == "chart chart-line"]
    scatter = [s for s in probe["svgs"] if s["cls"] == "chart chart-scatter"]
    assert len(line) == 2 and len(scatter) == 2
    for svg in line + scatter:
        assert svg["w"] > 300 and svg["h"] > 200  # laid out at a readable size
    points = {s["name"]: s["points"] for s in line[0]["series"]}
    assert points == {"zero-shot": 1, "p": 2, "w": 2, "p-w": 3, "w-p": 3, "p-w-p": 4}
    # every line with more than one point spans some width, rising with the scores
    assert all(s["w"] > 50 for s in line[0]["series"] if s["points"] > 1)
    assert [s["points"] for s in scatter[0]["series"]] == [1] * 6
    # the demo is shown as text
    assert "&lt;script&gt;document.title='pwned'&lt;/script&gt;" in dom


def test_screenshot_shows_the_report(report, tmp_path):
    png = tmp_path / "report.png"
    done = chromium(tmp_path, f"--screenshot={png}", "--window-size=1280,2000", report.as_uri())
    assert done.returncode == 0 and png.exists(), done.stderr[-2000:]
    assert png.stat().st_size > 30_000
    width, height, pixels = read_png(png)
    assert (width, height) == (1280, 2000)
    non_white = sum(1 for p in pixels if p[:3] != (255, 255, 255)) / len(pixels)
    assert 0.02 < non_white < 0.6  # text, tables and plots; not blank, not one colour
    # the plot lines are drawn in the palette colours (zero-shot blue, p vermilion, p-w-p sky blue)
    colours = set(pixels)
    for rgb in ((0x00, 0x72, 0xB2), (0xD5, 0x5E, 0x00), (0x56, 0xB4, 0xE9)):
        assert any(all(abs(c - r) <= 8 for c, r in zip(p[:3], rgb, strict=True)) for p in colours), rgb


def read_png(path: Path) -> tuple[int, int, list[tuple[int, ...]]]:
    """Decode an 8-bit RGB/RGBA, non-interlaced PNG (what Chromium writes) into pixel tuples."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and colour in (2, 6) and interlace == 0, header
    bpp = 3 if colour == 2 else 4
    raw, stride = zlib.decompress(idat), width * bpp
    rows, prev = [], bytearray(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + a) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + b) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append(line)
        prev = line
    return width, height, [tuple(r[i : i + bpp]) for r in rows for i in range(0, stride, bpp)]
