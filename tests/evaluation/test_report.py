"""`vgglocal report`: the page for three protocols' evaluation folders, its pictures, and the
page as headless Chromium shows it (screenshot, every image loaded, no console errors)."""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from vgglocal.cli import cli
from vgglocal.config import from_dict
from vgglocal.data.synth import SynthSpec, synthesize, wnid
from vgglocal.evaluation.run import EvalRequest, evaluate
from vgglocal.models.io import save_model
from vgglocal.models.vgg import build_vgg

CLASSES = 3
NORM = {"mean": [120.0, 110.0, 100.0], "std": [60.0, 60.0, 60.0]}
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.fixture(scope="module")
def evals(tmp_path_factory):
    root = tmp_path_factory.mktemp("reportdata")
    synthesize(root / "synth", SynthSpec(classes=CLASSES, train=1, val=3, size=48, seed=5))
    ids = [wnid(c) for c in range(CLASSES)]
    torch.manual_seed(0)
    model = build_vgg("A", num_classes=CLASSES, width=0.0625, crop=32, box_head="pcr", init="kaiming")
    with torch.no_grad():  # boxes around the window centre
        model.box_head.fc8.weight.mul_(0.01)
        model.box_head.fc8.bias.copy_(torch.tensor([0.5, 0.5, 0.6, 0.6]).repeat(CLASSES))
    meta = {"train_scale": {"scale": 48, "scale_min": 48, "scale_max": 0}}
    ckpt = str(save_model(model, root / "loc.pt", NORM, classes=ids, meta=meta))
    out = root / "evals"
    for name, protocol in (("eval-full", "full"), ("eval-center-crop", "center-crop"), ("eval-cls", "cls-dense")):
        scales = [] if protocol == "center-crop" else [32, 48]  # protocol 1: the training scale
        cfg = from_dict({"data": {"format": "ilsvrc-kaggle", "root": str(root / "synth"), "workers": 0},
                         "eval": {"batch_size": 4, "scales": scales, "score_floor": 0.0}})
        evaluate(cfg, EvalRequest(protocol, [ckpt]), out / name, progress=False)
    return out


def _images(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r"src='data:image/(?:png|jpeg);base64,([A-Za-z0-9+/=]+)'", page)]


def test_report_has_every_protocol_and_view(evals):
    res = CliRunner().invoke(cli, ["report", str(evals)])
    assert res.exit_code == 0, res.output
    page = (evals / "report.html").read_text()
    for name in ("eval-full", "eval-center-crop", "eval-cls"):
        assert f"id='{name}'" in page
    assert page.count("Localisation error per class") == 2  # both localisation protocols
    assert page.count("Confusion of the top-1 labels") == 2  # not center-crop: its guess is the true class
    assert "precision-recall per class" in page  # full wrote detections
    assert page.count("<figure>") == 2 * 9  # best 5 and worst 4 (each of the 9 images once), two protocols
    assert "top1_loc_error" in page and "%" in page
    pictures = _images(page)
    assert len(pictures) == (2 + 9) + (1 + 9) + 1 + 2  # full: bars, confusion, galleries; center-crop; cls; PR + AP
    for raw in pictures:  # every embedded picture decodes
        im = Image.open(io.BytesIO(raw))
        im.load()
        assert min(im.size) > 20
    assert "file://" not in page and "src='/" not in page  # self-contained


def test_best_gallery_is_ordered_by_iou(evals):
    from vgglocal.evaluation.report import write_report

    page = write_report(evals / "eval-full", evals / "one.html").read_text()
    section = page.split("Best localised")[1].split("Worst localised")
    best = [float(v) for v in re.findall(r"IoU ([0-9.]+)", section[0].split("</div>")[0])]
    worst = [float(v) for v in re.findall(r"IoU ([0-9.]+)", section[1].split("</div>")[0])]
    assert best == sorted(best, reverse=True) and worst == sorted(worst)
    assert all(0 <= v <= 1 for v in best + worst)  # an IoU, not the devkit's -1 for disjoint boxes
    assert best[0] >= worst[0]
    # fewer images than two galleries hold: each is shown once, the better half as best
    ids = [set(re.findall(r"<figcaption>(ILSVRC2012_val_\d+)", part.split("</div>")[0])) for part in section]
    n = len((evals / "eval-full" / "predictions.csv").read_text().splitlines()) - 1  # a header, a row per image
    assert n < 16 and len(ids[0]) == (n + 1) // 2 and len(ids[1]) == n - (n + 1) // 2 and not ids[0] & ids[1]
    assert min(best) >= max(worst)


def test_a_folder_without_an_evaluation_is_one_line(tmp_path):
    res = CliRunner().invoke(cli, ["report", str(tmp_path)])
    assert res.exit_code != 0 and str(tmp_path) in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1


def _chromium(args: list[str], tmp_path) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--enable-logging=stderr", "--v=0", "--hide-scrollbars",
             f"--user-data-dir={tmp_path / 'profile'}"]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HOME": str(tmp_path)})


# Injected at the top of a copy of the page: counts script errors, console.error calls and
# failed resource loads (error events in the capture phase), then the images once loaded.
_CHECK = ("<script>window.__errors=[];window.addEventListener('error',e=>window.__errors.push(String(e.message||e.target&&e.target.src)),true);"
          "window.addEventListener('unhandledrejection',e=>window.__errors.push('rejection'));"
          "const _ce=console.error;console.error=(...a)=>{window.__errors.push(a.join(' '));_ce(...a)};"
          "window.addEventListener('load',()=>{const im=[...document.images];"
          "document.documentElement.setAttribute('data-check','images='+im.length+' broken='+im.filter(i=>!(i.complete&&i.naturalWidth>0)).length"
          "+' errors='+window.__errors.length)})</script>")


def _loaded(html_path, tmp_path) -> tuple[int, int, int]:
    """(images, images that did not load, errors) of the page as Chromium loads it."""
    probe = html_path.with_name("probe-" + html_path.name)
    text = html_path.read_text()
    at = text.index("<html") if "<html" in text else 0
    probe.write_text(text[:at] + _CHECK + text[at:])
    proc = _chromium(["--virtual-time-budget=5000", "--dump-dom", probe.as_uri()], tmp_path)
    m = re.search(r"data-check=\"images=(\d+) broken=(\d+) errors=(\d+)\"", proc.stdout)
    assert m, proc.stderr[-2000:]
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium: bin/test installs Debian's chromium where it can (apt)")
def test_the_page_in_headless_chromium(evals, tmp_path):
    page = evals / "report.html"
    if not page.exists():
        CliRunner().invoke(cli, ["report", str(evals)])
    n, broken, errors = _loaded(page, tmp_path)
    assert n == len(_images(page.read_text())) and broken == 0 and errors == 0
    shot = tmp_path / "report.png"
    _chromium([f"--screenshot={shot}", "--window-size=1280,2400", page.as_uri()], tmp_path)
    im = np.asarray(Image.open(shot).convert("RGB"))
    assert im.shape[:2] == (2400, 1280)
    assert im.std() > 20 and (im < 128).mean() > 0.01  # charts and text drawn, not a blank page
    keep = os.environ.get("VGGLOCAL_KEEP_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium: bin/test installs Debian's chromium where it can (apt)")
def test_the_chromium_check_sees_a_broken_image(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><html><body><img src='missing.png'></body></html>")
    n, broken, errors = _loaded(page, tmp_path)
    assert (n, broken, errors) == (1, 1, 1)


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium: bin/test installs Debian's chromium where it can (apt)")
def test_the_chromium_check_sees_a_script_error(tmp_path):
    page = tmp_path / "script.html"
    page.write_text("<!DOCTYPE html><html><body><script>console.error('x'); undefinedCall()</script></body></html>")
    assert _loaded(page, tmp_path) == (0, 0, 2)


def test_names_with_markup_newlines_and_other_encodings_stay_text(tmp_path):
    """Evaluation folders named with markup, quotes, a newline and bytes that are not UTF-8, and
    an image id with markup, a quote and a comma: the page is written, valid UTF-8, every name
    shown as text (no tag of its own), each section's id free of whitespace."""
    import csv
    import json
    from html.parser import HTMLParser

    synthesize(tmp_path / "synth", SynthSpec(classes=2, train=1, val=2, size=36, seed=1))
    hostile_id = '<b>&amp;<i> "x",y'
    solution = tmp_path / "synth" / "LOC_val_solution.csv"
    rows = list(csv.reader(solution.open(newline="")))
    val = tmp_path / "synth" / "ILSVRC" / "Data" / "CLS-LOC" / "val"
    (val / f"{rows[1][0]}.JPEG").rename(val / f"{hostile_id}.JPEG")
    rows[1][0] = hostile_id
    with solution.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    names = ["<b>&amp;<i> 'q' \"d\"", "new\nline", os.fsdecode(b"caf\xe9")]
    for k, name in enumerate(names):
        folder = tmp_path / "evals" / name
        folder.mkdir(parents=True)
        root = str(tmp_path / "synth") if k == 0 else str(tmp_path / "gone <b>")  # galleries for the first only
        (folder / "metrics.json").write_text(json.dumps({
            "protocol": "center-crop", "split": "val", "n_images": 4, "top1_loc_error": 0.0, "top5_loc_error": 0.0,
            "data": {"root": root, "format": "ilsvrc-kaggle"}}))
        shutil.copy(solution, folder / "predictions.csv")  # every guess right
    res = CliRunner().invoke(cli, ["report", str(tmp_path / "evals")])
    assert res.exit_code == 0, res.output
    assert len(res.stderr.splitlines()) == len(names)  # "report: <folder>", one line each
    page = (tmp_path / "evals" / "report.html").read_bytes().decode("utf-8")  # strict: valid UTF-8

    class Tags(HTMLParser):
        def __init__(self):
            super().__init__()
            self.tags, self.ids = set(), []

        def handle_starttag(self, tag, attrs):
            self.tags.add(tag)
            self.ids += [v for k, v in attrs if k == "id"]

    parsed = Tags()
    parsed.feed(page)
    assert not parsed.tags & {"b", "i"} and "<b>" not in page and "<i>" not in page
    assert page.count("&lt;b&gt;&amp;amp;&lt;i&gt; &#x27;q&#x27; &quot;d&quot;") == 2  # the nav link and the heading
    assert "&lt;b&gt;&amp;amp;&lt;i&gt; &quot;x&quot;,y: top-1" in page  # the image's gallery caption
    assert "new\\nline" in page and "caf\\xe9" in page
    assert len(parsed.ids) == len(set(parsed.ids)) == len(names) and not any(re.search(r"\s", i) for i in parsed.ids)
    assert not list((tmp_path / "evals").glob("*.tmp"))
