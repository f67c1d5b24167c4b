"""`dpm report --html`: one self-contained page (tables, gates, plots as data URIs), written atomically,
checked in a real headless Chromium; and its Markdown twin for pull-request comments."""
from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from cli_helpers import exit_code, run_cli
from report_run_helpers import make_run

pytest.importorskip("matplotlib")

CHECK = {"schema_version": 1, "kind": "dpm.check", "passed": False, "units": {}, "input_shape": [1, 1, 8, 8],
         "gates": [{"name": "max-macs", "limit": 3000.0, "measured": 2438.0, "unit": "MACs", "passed": True},
                   {"name": "max-accuracy-drop", "limit": 1.0, "measured": 2.5, "unit": "points", "passed": False,
                    "samples": 359}],
         "data": "digits validation split <script>"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("html-run"))


@pytest.fixture
def gates(tmp_path):
    path = tmp_path / "check.json"
    path.write_text(json.dumps(CHECK))
    return path


def _images(page: str) -> list[str]:
    return re.findall(r'<img [^>]*src="([^"]*)"', page)


def test_html_page_is_self_contained(run, gates, tmp_path):
    out = tmp_path / "report.html"
    assert exit_code(["report", "--run", run, "--gates", gates, "--html", out]) == 0
    page = out.read_text()
    # nothing to fetch: no scripts, stylesheets, fonts or URLs of any scheme but data:
    text = re.sub(r'src="data:image/png;base64,[A-Za-z0-9+/=]*"', "", page)
    assert not re.search(r"<script|<link|<iframe|<object|@import|url\(|https?:|//[a-z]|src=", text, re.IGNORECASE)
    srcs = _images(page)
    assert len(srcs) == 3  # decay history, accuracy and loss, widths
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((run / "summary.json").read_text())
    assert f"{summary['after']:.2f}%" in page and f"{summary['min_decay_top1']:.2f}%" in page
    body = summary["widths"][0]
    assert f"{body['out_before']} → {body['out_after']}" in page  # per-layer before → after
    # the gates, every field they have, HTML-escaped
    assert "FAILED: 1 of 2 gates" in page and "max-accuracy-drop" in page and ">359<" in page
    assert "digits validation split &lt;script&gt;" in page
    assert out.stat().st_mode & 0o044  # readable by others, like any report


def test_html_with_models_has_totals_and_layers(tmp_path):
    from dpm_cli.models import mlp

    big, small = tmp_path / "big.pt", tmp_path / "small.pt"
    torch.save(mlp(in_features=64, hidden=[48, 32], num_classes=10), big)
    torch.save(mlp(in_features=64, hidden=[24, 16], num_classes=10), small)
    out = tmp_path / "r.html"
    assert exit_code(["report", big, "--compare", small, "--trust-checkpoint", "--input-shape", "1,64",
                      "--html", out]) == 0
    page = out.read_text()
    assert "Size per forward pass at input 1x64" in page and "48 → 24" in page and "32 → 16" in page
    assert len(_images(page)) == 1  # widths before and after


def test_bad_html_or_gates_fail_before_work_and_write_nothing(run, tmp_path):
    summary = (run / "summary.json").read_bytes()
    assert exit_code(["report", "--run", run, "--html", run / "summary.json"]) == 2
    assert (run / "summary.json").read_bytes() == summary  # never over an input
    assert exit_code(["report", "--run", run, "--html", tmp_path / "missing" / "r.html"]) == 2
    assert exit_code(["report", "--run", run, "--html", tmp_path]) == 2  # a folder
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert exit_code(["report", "--run", run, "--gates", bad, "--html", tmp_path / "r.html"]) == 2
    bad.write_text('{"passed": true}')
    assert exit_code(["report", "--run", run, "--gates", bad, "--html", tmp_path / "r.html"]) == 2
    assert exit_code(["report", "--run", run, "--gates", bad, "--plot", tmp_path / "p"]) == 2  # nowhere to show it
    assert not (tmp_path / "r.html").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bad.json"]  # no temporary files left either


def test_markdown_twin_is_a_pull_request_comment(run, gates, capsys):
    code, out, _ = run_cli(["report", "--run", run, "--gates", gates, "--markdown"], capsys)
    assert code == 0
    summary = json.loads((run / "summary.json").read_text())
    assert f"| val top-1 | {summary['before']:.2f}% | {summary['after']:.2f}% |" in out
    assert "### dpm check FAILED (1 of 2 gates)" in out and "| max-accuracy-drop |" in out
    assert "<img" not in out and "base64" not in out and len(out) < 65536  # GitHub's comment limit


def _chromium() -> str | None:
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


PROBE = """<script>
addEventListener("load", () => {
  const imgs = [...document.images];
  const out = document.createElement("pre"); out.id = "probe";
  out.textContent = JSON.stringify({n: imgs.length, widths: imgs.map(i => i.complete ? i.naturalWidth : -1),
                                    shown: imgs.map(i => i.getBoundingClientRect().width)});
  document.body.appendChild(out);
});
</script>"""


def _browser(exe: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-extensions", f"--user-data-dir={profile}", "--window-size=1200,2400"]
    return subprocess.run([exe, *flags, *args], capture_output=True, text=True, timeout=180)


def test_html_renders_with_its_images_in_headless_chromium(run, gates, tmp_path):
    exe = _chromium()
    if exe is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium); .ci/run installs it")
    out = tmp_path / "report.html"
    assert exit_code(["report", "--run", run, "--gates", gates, "--html", out]) == 0
    # a copy with a probe script: the report itself has none
    probed = tmp_path / "probed.html"
    probed.write_text(out.read_text().replace("</body>", PROBE + "</body>"))
    dom = _browser(exe, tmp_path / "profile", "--virtual-time-budget=10000", "--dump-dom", probed.as_uri())
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom.stdout)
    assert found, f"chromium did not render the page: {dom.stderr[-2000:]}"
    probe = json.loads(found.group(1).replace("&quot;", '"'))
    assert probe["n"] == 3 and all(w > 0 for w in probe["widths"]) and all(w > 0 for w in probe["shown"])
    # and the pixels: the plots' colours are on the screenshot of the page as it ships
    shot = tmp_path / "shot.png"
    _browser(exe, tmp_path / "profile2", f"--screenshot={shot}", out.as_uri())
    from PIL import Image

    import numpy as np

    rgb = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    blue = int(((b > 150) & (r < 60) & (g > 90) & (g < 150)).sum())  # tab:blue bars and lines
    orange = int(((r > 200) & (g > 90) & (g < 160) & (b < 60)).sum())  # the training loss
    assert blue > 500 and orange > 50, (blue, orange)
