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
