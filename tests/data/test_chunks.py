"""The one image loop (``chunked_images``): chunks in record order, the decoded images of each,
the unreadable files named (missing, corrupt, over the image limits), and the progress bar."""

import numpy as np
from PIL import Image

from vgglocal.data.chunks import chunked_images, image_chunks
from vgglocal.data.images import ImageLimits
from vgglocal.data.records import Sample


def split(tmp_path, bomb_png):
    """Five records: good (value 10), missing, good (30), corrupt, a PNG bomb, good (50)."""
    paths = []
    for name, value in (("a.png", 10), ("missing.png", None), ("c.png", 30), ("corrupt.jpg", None), ("bomb.png", None),
                        ("f.png", 50)):
        p = tmp_path / name
        if value is not None:
            Image.fromarray(np.full((6, 8, 3), value, np.uint8)).save(p)
        elif name == "corrupt.jpg":
            p.write_bytes(b"not a jpeg")
        elif name == "bomb.png":
            p.write_bytes(bomb_png(200, 200))
        paths.append(str(p))
    return [Sample(path=p, label=k) for k, p in enumerate(paths)]


def test_chunks_in_order_with_their_images_and_unreadable_files(tmp_path, bomb_png):
    records = split(tmp_path, bomb_png)
    limits = ImageLimits(max_pixels=1000, max_aspect=10.0)
    got = list(chunked_images(records, 4, 0, limits, desc="test", progress=False))
    assert [len(chunk) for chunk, _, _ in got] == [4, 2]
    assert [r.label for chunk, _, _ in got for r in chunk.records] == [0, 1, 2, 3, 4, 5]
    assert [int(img[0, 0, 0]) for _, images, _ in got for img in images] == [10, 30, 50]
    assert [chunk.good for chunk, _, _ in got] == [[0, 2], [1]]
    unreadable = [msg for _, _, bad in got for msg in bad]
    assert len(unreadable) == 3
    assert "missing.png" in unreadable[0] and "corrupt.jpg" in unreadable[1]
    assert "bomb.png" in unreadable[2] and "data.max_pixels" in unreadable[2]


def test_same_chunks_as_the_bare_decoder(tmp_path, bomb_png):
    records = split(tmp_path, bomb_png)
    bare = [(c.records, c.errors) for c in image_chunks(records, 3)]
    looped = [(c.records, c.errors) for c, _, _ in chunked_images(records, 3, desc="test", progress=False)]
    assert looped == bare and len(bare) == 2


def test_the_bar_counts_every_image(tmp_path, bomb_png, capsys):
    records = split(tmp_path, bomb_png)
    for _ in chunked_images(records, 4, desc="decode", progress=True, tty_only=False):
        pass
    err = capsys.readouterr().err
    assert "decode" in err and "6/6" in err
    for _ in chunked_images(records, 4, desc="quiet", progress=True, tty_only=True):  # stderr is no terminal here
        pass
    assert "quiet" not in capsys.readouterr().err
