"""Image files named on the command line: files, folders (recursively) and globs."""

from pathlib import Path

import pytest

from vgglocal.data.files import expand_images
from vgglocal.errors import UserError


def test_expand_images_reads_files_folders_recursively_and_globs(tmp_path):
    for rel in ("a/x.jpg", "a/sub/y.PNG", "a/sub/deeper/z.jpeg", "a/notes.txt", "b/x.jpg"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    items = expand_images([str(tmp_path / "a"), str(tmp_path / "b" / "*.jpg"), str(tmp_path / "a" / "x.jpg")])
    assert [Path(p).relative_to(tmp_path).as_posix() for p, _ in items] == ["a/sub/deeper/z.jpeg", "a/sub/y.PNG", "a/x.jpg", "b/x.jpg"]
    assert [k for _, k in items] == ["sub/deeper/z", "sub/y", "x", "x-2"]  # picture names, made unique
    assert [p for p, _ in expand_images([str(tmp_path / "**" / "*.jpeg")])] == [str(tmp_path / "a/sub/deeper/z.jpeg")]
    (tmp_path / "empty").mkdir()
    for bad, message in ((tmp_path / "nope.jpg", "image not found"), (tmp_path / "*.gif", "no file matches"),
                         (tmp_path / "empty", "no image files")):
        with pytest.raises(UserError, match=message):
            expand_images([str(bad)])


def test_expand_images_reads_a_text_file_list_relative_to_its_folder(tmp_path):
    for rel in ("photos/b.jpg", "photos/a.png", "other/c.jpg"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    listing = tmp_path / "photos" / "list.txt"
    listing.write_text(f"# my photos\nb.jpg\n\na.png\n{tmp_path / 'other' / 'c.jpg'}\nb.jpg\n")
    items = expand_images([str(listing), str(tmp_path / "other" / "c.jpg")])
    assert [(Path(p).relative_to(tmp_path).as_posix(), k) for p, k in items] == [
        ("photos/b.jpg", "b"), ("photos/a.png", "a"), ("other/c.jpg", "c")]  # list order, each file once
    for text, message in (("b.jpg\nmissing.jpg\n", r"list.txt:2: image not found: missing.jpg"),
                          ("# nothing\n", "names no image"), ("list.txt\n", "lists do not nest")):
        listing.write_text(text)
        with pytest.raises(UserError, match=message):
            expand_images([str(listing)])
