"""A real photo folder, as a user hands it to `predict`, `features` and `expand_images`:
non-images, a zero-byte and a text "JPEG", an unreadable file, symlink loops, a folder
symlink to its parent, a named pipe and a device, nested folders, names with a space, a
newline, quotes, a comma, markup and bytes that are not UTF-8; and twenty thousand files.

Every bad entry is named once, in one line, as a skip (or a refusal where skipping would
change what the output means); the outputs (JSON Lines, CSV, PNGs, npz) stay valid and
re-read to the same names."""

from __future__ import annotations

import builtins
import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from vgglocal.cli import cli
from vgglocal.data.files import expand_images, shown
from vgglocal.data.synth import wnid
from vgglocal.errors import UserError
from vgglocal.evaluation.ilsvrc import read_kaggle_csv
from vgglocal.models.io import save_model
from vgglocal.models.vgg import build_vgg

LATIN1 = os.fsdecode(b"caf\xe9.jpg")  # a name written by a Latin-1 system: not UTF-8 ("\udce9" in Python)
GOOD = ["good.jpg", "sub/nested.png", "sub/deeper/good.jpg", "with space.jpg", 'quo"te.jpg', "it's.jpg", "com,ma.jpg",
        "<b>&amp;<i>.jpg", "new\nline.jpg", LATIN1]  # decodable images
UNREADABLE = ["empty.jpg", "text\n<i>.jpg", "locked.jpg"]  # listed (image names) but not decodable
SKIPPED = ["a.jpg", "b.jpg", "dangling.jpg", "pipe.jpg", "null.jpg", "sub/up"]  # never opened: one line each


def _photo(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (36 + seed % 3 * 4, 44, 3), dtype=np.uint8)).save(path, quality=95)


def hostile_folder(root: Path) -> Path:
    folder = root / "photos"
    (folder / "sub" / "deeper").mkdir(parents=True)
    for i, name in enumerate(GOOD + ["locked.jpg"]):
        _photo(folder / name, i)
    (folder / "notes.txt").write_text("good.jpg\n")  # looks like a file list: inside a folder it is not one
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text\n<i>.jpg").write_text("not a picture")
    os.symlink("b.jpg", folder / "a.jpg")
    os.symlink("a.jpg", folder / "b.jpg")
    os.symlink("nowhere.jpg", folder / "dangling.jpg")
    os.symlink("..", folder / "sub" / "up")  # a folder symlink to its parent: walking it never ends
    os.symlink(os.devnull, folder / "null.jpg")  # a character device
    os.mkfifo(folder / "pipe.jpg")  # open() on a named pipe blocks until a writer comes: it must not be opened
    return folder


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """The hostile folder. Tests run as root, where chmod 000 denies nothing: reading
    ``locked.jpg`` is refused by a patched ``open`` instead (Pillow opens files with
    ``builtins.open``). Opening the named pipe or the device fails the test at once instead of
    hanging it."""
    made = hostile_folder(tmp_path)
    real_open = builtins.open

    def guarded(file, *args, **kwargs):
        name = os.fsdecode(file) if isinstance(file, (str, bytes, os.PathLike)) else ""
        if name.endswith("locked.jpg"):
            raise PermissionError(13, "Permission denied", name)
        if name.endswith(("pipe.jpg", "null.jpg")):
            raise AssertionError(f"{name!r} was opened")
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded)
    return made


def expected(folder: Path, names: list[str]) -> list[tuple[str, str]]:
    """(path, key) in expand_images' order: sorted by path, key the path below the folder."""
    paths = sorted(folder / n for n in names)
    return [(str(p), p.relative_to(folder).with_suffix("").as_posix()) for p in paths]


def lines_naming(lines: list[str], folder: Path, name: str) -> list[str]:
    return [ln for ln in lines if shown(str(folder / name)) in ln]


def test_a_hostile_folder_lists_its_images_and_names_each_skip_once(tmp_path, folder):
    messages: list[str] = []
    items = expand_images([str(folder)], log=messages.append)
    assert items == expected(folder, GOOD + UNREADABLE)  # bad contents are the decoder's to report
    assert all("\n" not in m and m.isprintable() for m in messages)
    for name in SKIPPED:
        assert len(lines_naming(messages, folder, name)) == 1, (name, messages)
    assert [m for m in messages if "notes.txt" in m] == [
        f"{folder}: 1 file without an image extension left out (notes.txt)"]
    assert len(messages) == len(SKIPPED) + 1
    loop, pipe = lines_naming(messages, folder, "a.jpg")[0], lines_naming(messages, folder, "pipe.jpg")[0]
    assert "symlink loop" in loop and "named pipe" in pipe


def test_an_unreadable_subfolder_is_named_and_the_rest_listed(tmp_path, folder, monkeypatch):
    """As root no folder is unreadable: listing ``sub/deeper`` is refused by a patched ``os.scandir``."""
    real = os.scandir

    def scandir(path="."):
        if os.fspath(path).endswith("deeper"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    messages: list[str] = []
    items = expand_images([str(folder)], log=messages.append)
    assert items == expected(folder, [n for n in GOOD + UNREADABLE if not n.startswith("sub/deeper/")])
    assert lines_naming(messages, folder, "sub/deeper") == [f"skipped {folder / 'sub' / 'deeper'}: folder not read (Permission denied)"]


def test_a_glob_through_a_parent_symlink_lists_each_image_once(tmp_path, folder):
    messages: list[str] = []
    items = expand_images([str(folder / "**" / "*.jpg")], log=messages.append)
    jpgs = [n for n in GOOD + UNREADABLE if n.endswith(".jpg")]
    assert [p for p, _ in items] == [p for p, _ in expected(folder, jpgs)]  # not again under sub/up/, sub/up/sub/up/, ...
    assert len({k for _, k in items}) == len(items)
    for name in ("a.jpg", "b.jpg", "pipe.jpg"):
        assert len(lines_naming(messages, folder, name)) == 1, (name, messages)


def test_named_special_files_and_loops_are_refused_in_one_line(tmp_path, folder):
    for name, why in (("pipe.jpg", "not a regular file"), ("null.jpg", "not a regular file"), ("a.jpg", "symlink loop"),
                      ("dangling.jpg", "broken symlink")):
        with pytest.raises(UserError, match=why) as e:
            expand_images([str(folder / name)])
        assert "\n" not in str(e.value) and str(folder / name) in str(e.value)
        listing = tmp_path / "list.txt"
        listing.write_text(f"photos/good.jpg\nphotos/{name}\n")
        with pytest.raises(UserError, match=f"list.txt:2: photos/{name}: .*{why}"):
            expand_images([str(listing)])
    with pytest.raises(UserError, match=r"text\\n<i>.jpg"):  # one line whatever the name holds
        expand_images([str(folder / "text\n<i>.jpg.missing")])


def test_picture_names_stay_unique(tmp_path):
    for rel in ("a/x.jpg", "b/x.jpg", "c/x-2.jpg", "d/x-2.jpg"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    keys = [k for _, k in expand_images([str(tmp_path / d / "*.jpg") for d in "abcd"])]
    assert len(set(keys)) == 4 and keys[:2] == ["x", "x-2"], keys


def test_twenty_thousand_files_cost_no_stat_or_open_each(tmp_path, monkeypatch):
    """A folder's entries are typed by the directory listing itself (``os.scandir``), so no
    file is stat'ed or opened to find the images."""
    folder = tmp_path / "many"
    for d in range(10):
        (folder / f"d{d}").mkdir(parents=True)
        fd = os.open(folder / f"d{d}", os.O_RDONLY)
        try:
            for name in [f"{i:05d}.jpg" for i in range(2000)] + ["Thumbs.db"]:
                os.close(os.open(name, os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd))
        finally:
            os.close(fd)
    calls = {"stat": 0, "open": 0}
    real_stat, real_open, real_os_open = os.stat, builtins.open, os.open

    def counted(real, kind):
        def call(*args, **kwargs):
            calls[kind] += 1
            return real(*args, **kwargs)
        return call

    monkeypatch.setattr(os, "stat", counted(real_stat, "stat"))
    monkeypatch.setattr(os, "lstat", counted(os.lstat, "stat"))
    monkeypatch.setattr(builtins, "open", counted(real_open, "open"))
    monkeypatch.setattr(os, "open", counted(real_os_open, "open"))
    messages: list[str] = []
    items = expand_images([str(folder)], log=messages.append)
    assert len(items) == 20_000 and items[0][1] == "d0/00000" and items[-1][1] == "d9/01999"
    assert calls["open"] == 0 and calls["stat"] <= 20, calls  # per argument and folder, not per file
    assert messages == [f"{folder}: 10 files without an image extension left out (d0/Thumbs.db, d1/Thumbs.db, d2/Thumbs.db, ...)"]


# ------------------------------------------------------------------ predict and features


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    model = build_vgg("A", num_classes=3, width=0.0625, crop=32, box_head="pcr", init="kaiming")
    with torch.no_grad():  # boxes around the window centre
        model.box_head.fc8.weight.mul_(0.01)
        model.box_head.fc8.bias.copy_(torch.tensor([0.5, 0.5, 0.6, 0.6]).repeat(3))
    path = tmp_path_factory.mktemp("ckpt") / "loc.pt"
    return str(save_model(model, path, {"mean": [120.0] * 3, "std": [60.0] * 3}, classes=[wnid(c) for c in range(3)]))


PREDICT = ["--scales", "32", "--no-flip", "--batch-size", "3", "--workers", "0", "--set", "eval.device=cpu", "-q"]


def messages_of(output: str) -> list[str]:
    """The log lines of a run (progress-bar redraws, separated by carriage returns, left out)."""
    return [part for line in output.split("\n") for part in line.split("\r")[-1:] if part.strip()]


def _check_named_once(lines: list[str], folder: Path, names: list[str]) -> None:
    for name in names:
        assert len(lines_naming(lines, folder, name)) == 1, (name, lines)


def test_predict_over_a_hostile_folder_writes_valid_json_lines_and_pictures(tmp_path, ckpt, folder):
    out, pics = tmp_path / "p.jsonl", tmp_path / "pics"
    res = CliRunner().invoke(cli, ["predict", str(folder), "--checkpoint", ckpt, *PREDICT, "--out", str(out), "--draw", str(pics)])
    assert res.exit_code == 1, res.output  # some images could not be read
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exc_info
    lines = messages_of(res.stderr)
    _check_named_once(lines, folder, SKIPPED + UNREADABLE)
    assert len(lines) == len(SKIPPED) + 1 + len(UNREADABLE), lines  # and the notes.txt line
    assert "permission denied" in lines_naming(lines, folder, "locked.jpg")[0]
    rows = [json.loads(t) for t in out.read_text(encoding="utf-8").splitlines()]  # one JSON object per line
    items = expected(folder, GOOD + UNREADABLE)
    assert [r["image"] for r in rows] == [p for p, _ in items]
    assert all(os.path.isfile(r["image"]) for r in rows)  # the names round-trip, non-UTF-8 bytes included
    failed = {Path(r["image"]).name for r in rows if "error" in r}
    assert failed == {Path(n).name for n in UNREADABLE} and all(r["predictions"] for r in rows if "error" not in r)
    drawn = sorted(os.path.relpath(os.path.join(d, f), pics) for d, _, files in os.walk(pics) for f in files)
    assert drawn == sorted(f"{k}.png" for p, k in items if Path(p).name not in failed)


def test_predict_csv_refuses_a_name_it_cannot_write_then_rereads_to_the_same_names(tmp_path, ckpt, folder):
    out = tmp_path / "p.csv"
    res = CliRunner().invoke(cli, ["predict", str(folder), "--checkpoint", ckpt, *PREDICT, "--out", str(out)])
    assert res.exit_code == 2 and not out.exists(), res.output
    last = messages_of(res.stderr)[-1]
    assert last.startswith("error: ") and shown(str(folder / LATIN1)) in last and "UTF-8" in last
    os.remove(folder / LATIN1)
    res = CliRunner().invoke(cli, ["predict", str(folder), "--checkpoint", ckpt, *PREDICT, "--out", str(out)])
    assert res.exit_code == 1, res.output
    _check_named_once(messages_of(res.stderr), folder, SKIPPED + UNREADABLE)
    keys = [k for _, k in expected(folder, [n for n in GOOD if n != LATIN1] + UNREADABLE)]
    with out.open(newline="", encoding="utf-8") as f:
        table = list(csv.reader(f))
    assert table[0] == ["ImageId", "PredictionString"] and [row[0] for row in table[1:]] == keys
    assert list(read_kaggle_csv(out)) == keys  # picture names, unique: good and sub/deeper/good
    assert [bool(g) for g in read_kaggle_csv(out).values()] == [Path(k).name not in ("empty", "text\n<i>", "locked") for k in keys]


def test_features_over_a_hostile_folder_writes_a_plain_npz(tmp_path, ckpt, folder):
    out = tmp_path / "f.npz"
    res = CliRunner().invoke(cli, ["features", str(folder), "--checkpoint", ckpt, "--set", "transfer.scales=[32]",
                                   "--set", "transfer.workers=0", "--set", "transfer.device=cpu", "--out", str(out)])
    assert res.exit_code == 0, res.output
    lines = messages_of(res.stderr)
    summary = json.loads(res.stdout)
    good = expected(folder, GOOD)
    assert (summary["items"], summary["n_unreadable"]) == (len(good), len(UNREADABLE))
    _check_named_once(lines, folder, SKIPPED + UNREADABLE)
    with np.load(out, allow_pickle=False) as z:
        assert z["paths"].tolist() == [p for p, _ in good] and z["ids"].tolist() == [k for _, k in good]
        assert len(z["bad"]) == len(UNREADABLE) and z["features"].shape[0] == len(good)
