"""The generated demo data set: shapes on clutter, written in the ILSVRC Kaggle layout + COCO JSON.

What makes it a localisation task rather than a colour test:

- classes differ by **shape** only (disc, triangle, square, star, ...); every instance gets a
  random colour (contrasting with the background under it), so colour carries no class
  information;
- a single object's longer box side is 30%-80% of the image's shorter side (25%-45% for each
  of two or three), aspect ratio up to 1.5:1 either way, rotation up to ±15° (more would turn
  a square into a diamond), mirrored at random, anywhere in the image but inside it. Objects
  of 15% of the side, or cut by the border, left a from-scratch VGG-D at the demo's width at
  chance for a random number of epochs (its take-off then depended on the seed and the CPU's
  float rounding); the random crop of training still cuts some of them;
- backgrounds are a smooth random colour field plus a stripe or blotch texture, lines,
  scribbles and confetti dots. Distractors are deliberately *not* any class's shape (lines,
  polylines, dots smaller than 5% of the side), so the image label is never ambiguous; at
  most one thin line is drawn over the objects too (mild occlusion; the box is still the
  object's full extent);
- 30% of the images hold two or three instances of their class (smaller, not overlapping).

Boxes are exact: each instance is drawn through its own mask and the box is the mask's
extent, written as ILSVRC inclusive pixel indices (x2 = last column). The same numbers go into
the XML, the CSV and the COCO JSON (COCO ``w = x2 - x1``), so every reader returns the same
boxes. Every image comes from its own generator seeded by (seed, split, index): the output is
a pure function of the arguments.

Layout under OUT (``data.format: ilsvrc-kaggle``, ``data.root: OUT``)::

    LOC_synset_mapping.txt  LOC_train_solution.csv  LOC_val_solution.csv  synth.json
    ILSVRC/Data/CLS-LOC/train/n00000001/n00000001_1.JPEG ...   val/ILSVRC2012_val_00000001.JPEG ...
    ILSVRC/Annotations/CLS-LOC/train/n00000001/n00000001_1.xml ... val/ILSVRC2012_val_00000001.xml ...
    annotations/instances_train.json  annotations/instances_val.json   (file_name relative to OUT)
"""

from __future__ import annotations

import colorsys
import json
import os
import shutil
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from vgglocal.config import SYNTH_LAYOUTS
from vgglocal.data.errors import DataError

__all__ = ["SHAPES", "SynthSpec", "synthesize", "render_image", "wnid"]

_TWO_PI = 2 * np.pi


def _circle(n: int = 48, r: float = 1.0, cx: float = 0.0, cy: float = 0.0) -> np.ndarray:
    t = np.linspace(0, _TWO_PI, n, endpoint=False)
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], 1)


def _star(points: int = 5, inner: float = 0.45) -> np.ndarray:
    t = -np.pi / 2 + np.arange(2 * points) * np.pi / points
    r = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([r * np.cos(t), r * np.sin(t)], 1)


def _heart() -> np.ndarray:
    t = np.linspace(0, _TWO_PI, 64, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    return np.stack([x, y], 1)


def _poly(*xy: float) -> np.ndarray:
    return np.asarray(xy, np.float64).reshape(-1, 2)


# Each shape: (outer polygon, holes). Units are arbitrary; shapes are normalised to [-1, 1]^2.
# The first ten are the most distinct at ~20 px and make up the default demo.
_SHAPE_POLYGONS: dict[str, tuple[np.ndarray, list[np.ndarray]]] = {
    "disc": (_circle(), []),
    "triangle": (_poly(0, -1, 1, 1, -1, 1), []),
    "square": (_poly(-1, -1, 1, -1, 1, 1, -1, 1), []),
    "star": (_star(), []),
    "plus": (_poly(-0.33, -1, 0.33, -1, 0.33, -0.33, 1, -0.33, 1, 0.33, 0.33, 0.33, 0.33, 1, -0.33, 1,
                   -0.33, 0.33, -1, 0.33, -1, -0.33, -0.33, -0.33), []),
    "ring": (_circle(), [_circle(r=0.55)]),
    "crescent": (_circle(), [_circle(r=0.8, cx=0.45, cy=-0.1)]),
    "arrow": (_poly(-1, -0.3, 0.15, -0.3, 0.15, -0.85, 1, 0, 0.15, 0.85, 0.15, 0.3, -1, 0.3), []),
    "heart": (_heart(), []),
    "ell": (_poly(-1, -1, -0.35, -1, -0.35, 0.35, 1, 0.35, 1, 1, -1, 1), []),
    "hexagon": (_circle(6), []),
    "diamond": (_poly(0, -1, 1, 0, 0, 1, -1, 0), []),
    "tee": (_poly(-1, -1, 1, -1, 1, -0.4, 0.3, -0.4, 0.3, 1, -0.3, 1, -0.3, -0.4, -1, -0.4), []),
    "hourglass": (_poly(-1, -1, 1, -1, 0.15, 0, 1, 1, -1, 1, -0.15, 0), []),
    "semicircle": (np.concatenate([_circle(48)[24:], [[1.0, 0.0]]]), []),
    "frame": (_poly(-1, -1, 1, -1, 1, 1, -1, 1), [_poly(-0.55, -0.55, 0.55, -0.55, 0.55, 0.55, -0.55, 0.55)]),
}


def _normalise(outer: np.ndarray, holes: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    lo, hi = outer.min(0), outer.max(0)
    centre, half = (lo + hi) / 2, (hi - lo) / 2
    return (outer - centre) / half, [(h - centre) / half for h in holes]


SHAPES: dict[str, tuple[np.ndarray, list[np.ndarray]]] = {k: _normalise(*v) for k, v in _SHAPE_POLYGONS.items()}


def wnid(index: int) -> str:
    """The fake wnid of class ``index`` (0-based): n00000001, n00000002, ... (sorted = index order)."""
    return f"n{index + 1:08d}"


@dataclass(frozen=True)
class SynthSpec:
    """What to generate. ``train`` and ``val`` are images *per class*; ``size`` is the shorter side."""

    classes: int = 10
    train: int = 300
    val: int = 50
    size: int = 128
    seed: int = 0
    # The shapes are SHAPES[first_shape : first_shape + classes]. A transfer set for Appendix B's
    # demonstration takes the shapes a demo classifier (the first ten) never saw.
    first_shape: int = 0
    # "ilsvrc": the Kaggle layout + COCO JSON (module doc). "caltech": a Caltech-256-style folder
    # per class, 256_ObjectCategories/NNN.<shape>/NNN_MMMM.jpg, train + val images per class and
    # no boxes (the Caltech protocol draws its own random splits).
    layout: str = "ilsvrc"


# ----------------------------------------------------------------------------- rendering


def _background(rng: np.random.Generator, h: int, w: int) -> Image.Image:
    """A smooth random colour field with a stripe or blotch texture (vectorised)."""
    g = rng.integers(2, 6, size=2)
    field = rng.uniform(50, 205, size=(g[0], g[1], 3)).astype(np.uint8)
    base = np.asarray(Image.fromarray(field).resize((w, h), Image.BICUBIC), np.float32)
    if rng.random() < 0.5:  # stripes at a random angle and period
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        angle = rng.uniform(0, np.pi)
        period = rng.uniform(4, 24)
        wave = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * (_TWO_PI / period))
        base += (rng.uniform(10, 30) * wave)[..., None] * rng.uniform(0.3, 1.0, size=3)
    else:  # blotches: a finer random field
        g = rng.integers(6, 16, size=2)
        fine = rng.uniform(-1, 1, size=(g[0], g[1], 3)).astype(np.float32)
        up = np.stack([np.asarray(Image.fromarray(fine[..., c], "F").resize((w, h), Image.BILINEAR)) for c in range(3)], -1)
        base += rng.uniform(15, 35) * up
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))


def _random_colour(rng: np.random.Generator, bright: bool | None = None) -> tuple[int, int, int]:
    value = rng.uniform(0.05, 1.0) if bright is None else (rng.uniform(0.72, 1.0) if bright else rng.uniform(0.03, 0.3))
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.0, 1.0), value)
    return int(r * 255), int(g * 255), int(b * 255)


def _clutter(rng: np.random.Generator, draw: ImageDraw.ImageDraw, h: int, w: int, lines: int, dots: int,
             max_width: int = 0) -> None:
    """Lines, scribbles and confetti: no class's shape, so they never make the label ambiguous."""
    side = min(h, w)
    max_width = max_width or max(2, side // 40)
    for _ in range(lines):
        n = int(rng.integers(2, 5))  # 2 points: a line; more: a scribble
        pts = rng.uniform([-0.1 * w, -0.1 * h], [1.1 * w, 1.1 * h], size=(n, 2))
        draw.line([tuple(p) for p in pts], fill=_random_colour(rng), width=int(rng.integers(1, max_width + 1)))
    for _ in range(dots):
        c = rng.uniform([0, 0], [w, h])
        r = rng.uniform(1, max(1.5, 0.025 * side))
        draw.ellipse([c[0] - r, c[1] - r, c[0] + r, c[1] + r], fill=_random_colour(rng))


def _shape_mask(shape: str, w: int, h: int, centre: np.ndarray, half: np.ndarray, angle: float, mirror: bool) -> Image.Image:
    outer, holes = SHAPES[shape]
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s], [s, c]])

    def place(poly: np.ndarray) -> list[tuple[float, float]]:
        p = poly * [(-1.0 if mirror else 1.0), 1.0] * half
        p = p @ rot.T + centre
        return [tuple(q) for q in p]

    mask = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(mask)
    draw.polygon(place(outer), fill=255)
    for hole in holes:
        draw.polygon(place(hole), fill=0)
    return mask


def _place(rng: np.random.Generator, h: int, w: int, lo: float, hi: float, taken: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray] | None:
    """Centre and half-size of a new instance not overlapping ``taken`` boxes (rejection sampling)."""
    side = min(h, w)
    for _ in range(30):
        long_side = rng.uniform(lo, hi) * side
        aspect = rng.uniform(1.0, 1.5)
        bw, bh = (long_side, long_side / aspect) if rng.random() < 0.5 else (long_side / aspect, long_side)
        # the whole box inside the image (the rotated corners may still touch the border)
        cx = rng.uniform(bw * 0.5, max(bw * 0.5, w - bw * 0.5))
        cy = rng.uniform(bh * 0.5, max(bh * 0.5, h - bh * 0.5))
        box = np.array([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2])
        margin = 0.1 * side  # rotated corners stick out of the unrotated box a little
        if all(box[0] > t[2] + margin or box[2] < t[0] - margin or box[1] > t[3] + margin or box[3] < t[1] - margin for t in taken):
            return np.array([cx, cy]), np.array([bw / 2, bh / 2])
    return None


def render_image(rng: np.random.Generator, shape: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One image of ``shape``.

    Returns:
        (image ndarray[H, W, 3] uint8 with min(H, W) == size, boxes ndarray[K, 4] int64 as
        inclusive pixel indices x1, y1, x2, y2), K in 1..3.
    """
    long = int(round(size * rng.uniform(1.0, 4 / 3)))
    h, w = (size, long) if rng.random() < 0.6 else (long, size)
    image = _background(rng, h, w)
    draw = ImageDraw.Draw(image)
    # 1-3 background lines (was 2-6): with more, a from-scratch VGG at the demo's width and
    # budget stayed near chance when the demo was tuned; dots and texture keep the clutter.
    _clutter(rng, draw, h, w, lines=int(rng.integers(1, 4)), dots=int(rng.integers(0, 16)))
    n = int(rng.choice([1, 2, 3], p=[0.7, 0.2, 0.1]))
    lo, hi = (0.3, 0.8) if n == 1 else (0.25, 0.45)
    bg = np.asarray(image, np.float32)
    taken: list[np.ndarray] = []
    boxes = []
    for _ in range(n):
        placed = _place(rng, h, w, lo, hi, taken)
        if placed is None:
            break
        centre, half = placed
        taken.append(np.concatenate([centre - half, centre + half]))
        mask = _shape_mask(shape, w, h, centre, half, np.deg2rad(rng.uniform(-15, 15)), bool(rng.random() < 0.5))
        bbox = mask.getbbox()
        if bbox is None:
            continue
        x1, y1, x2, y2 = bbox
        local = bg[y1:y2, x1:x2].mean() if (x2 > x1 and y2 > y1) else 128.0
        image.paste(_random_colour(rng, bright=bool(local < 128)), (0, 0), mask)
        boxes.append([x1, y1, x2 - 1, y2 - 1])  # getbbox is exclusive; ILSVRC boxes are inclusive
    _clutter(rng, draw, h, w, lines=int(rng.integers(0, 2)), dots=0, max_width=2)  # 0-1 thin line over the objects
    pixels = np.asarray(image, np.float32) + rng.normal(0, 4, size=(h, w, 3)).astype(np.float32)
    return np.clip(pixels, 0, 255).astype(np.uint8), np.asarray(boxes, np.int64).reshape(-1, 4)


# ----------------------------------------------------------------------------- writing

_XML = """<annotation>
\t<folder>{folder}</folder>
\t<filename>{stem}</filename>
\t<source>
\t\t<database>vgglocal synth</database>
\t</source>
\t<size>
\t\t<width>{width}</width>
\t\t<height>{height}</height>
\t\t<depth>3</depth>
\t</size>
\t<segmented>0</segmented>
{objects}</annotation>
"""
_OBJECT = """\t<object>
\t\t<name>{name}</name>
\t\t<pose>Unspecified</pose>
\t\t<truncated>{truncated}</truncated>
\t\t<difficult>0</difficult>
\t\t<bndbox>
\t\t\t<xmin>{x1}</xmin>
\t\t\t<ymin>{y1}</ymin>
\t\t\t<xmax>{x2}</xmax>
\t\t\t<ymax>{y2}</ymax>
\t\t</bndbox>
\t</object>
"""


def _xml(folder: str, stem: str, name: str, boxes: np.ndarray, h: int, w: int) -> str:
    objects = "".join(
        _OBJECT.format(name=name, x1=b[0], y1=b[1], x2=b[2], y2=b[3],
                       truncated=int(b[0] == 0 or b[1] == 0 or b[2] == w - 1 or b[3] == h - 1))
        for b in boxes.tolist())
    return _XML.format(folder=folder, stem=stem, width=w, height=h, objects=objects)


def _jobs(spec: SynthSpec) -> list[tuple[str, int, int, str]]:
    """(split, index, class, stem) for every image, in writing order."""
    jobs = []
    for c in range(spec.classes):
        jobs += [("train", c * spec.train + k, c, f"{wnid(c)}_{k + 1}") for k in range(spec.train)]
    # Val files are numbered in a shuffled class order, like ILSVRC2012_val_*.
    order = np.random.default_rng([spec.seed, 2, 0]).permutation(np.repeat(np.arange(spec.classes), spec.val))
    jobs += [("val", i, int(c), f"ILSVRC2012_val_{i + 1:08d}") for i, c in enumerate(order)]
    return jobs


_OWNED = ("ILSVRC", "annotations", "LOC_synset_mapping.txt", "LOC_train_solution.csv", "LOC_val_solution.csv", "synth.json",
          "256_ObjectCategories")


def _prepare(out: str, overwrite: bool) -> None:
    """Refuse a non-empty OUT unless it is an earlier synth output and ``overwrite`` is set;
    then remove only what synth writes (stale files from a bigger run would corrupt counts)."""
    if not os.path.isdir(out) or not os.listdir(out):
        return
    if not overwrite:
        raise DataError(f"{out}: folder is not empty; pass --overwrite to replace an earlier synth output")
    if not os.path.isfile(os.path.join(out, "synth.json")):
        raise DataError(f"{out}: not an earlier synth output (no synth.json); refusing to overwrite it")
    for name in _OWNED:
        path = os.path.join(out, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)


def synthesize(out: str | os.PathLike, spec: SynthSpec = SynthSpec(), progress: bool = False,
               overwrite: bool = False) -> dict:
    """Generate the data set under ``out`` (module doc). Returns the summary written to synth.json.

    Raises:
        DataError: more classes than shapes, sizes too small to draw, or a non-empty ``out``
            (without ``overwrite``, or not an earlier synth output).
    """

    if not 0 <= spec.first_shape < len(SHAPES):
        raise DataError(f"--first-shape {spec.first_shape}: choose 0..{len(SHAPES) - 1} (shapes: {', '.join(SHAPES)})")
    if not 1 <= spec.classes <= len(SHAPES) - spec.first_shape:
        raise DataError(f"--classes {spec.classes}: choose 1..{len(SHAPES) - spec.first_shape} (one per shape from shape "
                        f"{spec.first_shape}: {', '.join(list(SHAPES)[spec.first_shape:])})")
    if spec.layout not in SYNTH_LAYOUTS:
        raise DataError(f"--layout {spec.layout!r}: choose from {', '.join(SYNTH_LAYOUTS)}")
    if spec.size < 32:
        raise DataError(f"--size {spec.size}: at least 32 pixels")
    if spec.train < 1 or spec.val < 0:
        raise DataError(f"--train {spec.train} / --val {spec.val}: need at least one training image per class")
    out = os.fspath(out)
    _prepare(out, overwrite)
    names = list(SHAPES)[spec.first_shape: spec.first_shape + spec.classes]
    if spec.layout == "caltech":
        return _synthesize_caltech(out, spec, names, progress)
    data = os.path.join(out, "ILSVRC", "Data", "CLS-LOC")
    anns = os.path.join(out, "ILSVRC", "Annotations", "CLS-LOC")
    for split in ("train", "val"):
        os.makedirs(os.path.join(data, split), exist_ok=True)
        os.makedirs(os.path.join(anns, split), exist_ok=True)
    for c in range(spec.classes):
        os.makedirs(os.path.join(data, "train", wnid(c)), exist_ok=True)
        os.makedirs(os.path.join(anns, "train", wnid(c)), exist_ok=True)
    os.makedirs(os.path.join(out, "annotations"), exist_ok=True)

    csv_rows: dict[str, list[str]] = {"train": [], "val": []}
    coco: dict[str, dict] = {
        split: {"info": {"description": "vgglocal synth", "version": "1"}, "licenses": [], "images": [], "annotations": [],
                "categories": [{"id": c + 1, "name": names[c], "supercategory": "shape"} for c in range(spec.classes)]}
        for split in ("train", "val")
    }
    n_boxes = {"train": 0, "val": 0}
    codes = {"train": 0, "val": 1}
    for split, index, c, stem in tqdm(_jobs(spec), desc="synth", unit="img", disable=not progress, mininterval=1.0):
        rng = np.random.default_rng([spec.seed, codes[split], index])
        pixels, boxes = render_image(rng, names[c], spec.size)
        h, w = pixels.shape[:2]
        folder = wnid(c) if split == "train" else ""
        rel = os.path.join("ILSVRC", "Data", "CLS-LOC", split, folder, f"{stem}.JPEG")
        Image.fromarray(pixels).save(os.path.join(out, rel), quality=90)
        with open(os.path.join(anns, split, folder, f"{stem}.xml"), "w") as f:
            f.write(_xml(folder or "val", stem, wnid(c), boxes, h, w))
        csv_rows[split].append(stem + "," + "".join(f"{wnid(c)} {b[0]} {b[1]} {b[2]} {b[3]} " for b in boxes.tolist()))
        doc = coco[split]
        image_id = len(doc["images"]) + 1
        doc["images"].append({"id": image_id, "file_name": rel.replace(os.sep, "/"), "width": w, "height": h})
        for b in boxes.tolist():
            bw, bh = b[2] - b[0], b[3] - b[1]
            doc["annotations"].append({"id": len(doc["annotations"]) + 1, "image_id": image_id, "category_id": c + 1,
                                       "bbox": [b[0], b[1], bw, bh], "area": bw * bh, "iscrowd": 0})
        n_boxes[split] += len(boxes)

    with open(os.path.join(out, "LOC_synset_mapping.txt"), "w") as f:
        f.writelines(f"{wnid(c)} {names[c]}\n" for c in range(spec.classes))
    for split in ("train", "val"):
        with open(os.path.join(out, f"LOC_{split}_solution.csv"), "w") as f:
            f.write("ImageId,PredictionString\n")
            f.writelines(row + "\n" for row in csv_rows[split])
        with open(os.path.join(out, "annotations", f"instances_{split}.json"), "w") as f:
            json.dump(coco[split], f)
    summary = {"classes": spec.classes, "names": names, "layout": "ilsvrc", "first_shape": spec.first_shape,
               "train_per_class": spec.train, "val_per_class": spec.val,
               "size": spec.size, "seed": spec.seed,
               "train_images": spec.classes * spec.train, "val_images": spec.classes * spec.val,
               "train_boxes": n_boxes["train"], "val_boxes": n_boxes["val"]}
    with open(os.path.join(out, "synth.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return summary


def _synthesize_caltech(out: str, spec: SynthSpec, names: list[str], progress: bool) -> dict:
    """The Caltech-256-style layout (:class:`SynthSpec` ``layout``): every image from its own
    generator seeded by (seed, 3, class, index), a stream the ILSVRC layout never uses."""
    per_class = spec.train + spec.val
    folders = [f"{c + 1:03d}.{name}" for c, name in enumerate(names)]
    base = os.path.join(out, "256_ObjectCategories")
    for folder in folders:
        os.makedirs(os.path.join(base, folder), exist_ok=True)
    jobs = [(c, k) for c in range(spec.classes) for k in range(per_class)]
    n_boxes = 0
    for c, k in tqdm(jobs, desc="synth", unit="img", disable=not progress, mininterval=1.0):
        rng = np.random.default_rng([spec.seed, 3, spec.first_shape + c, k])
        pixels, boxes = render_image(rng, names[c], spec.size)
        Image.fromarray(pixels).save(os.path.join(base, folders[c], f"{c + 1:03d}_{k + 1:04d}.jpg"), quality=90)
        n_boxes += len(boxes)
    summary = {"classes": spec.classes, "names": names, "layout": "caltech", "first_shape": spec.first_shape,
               "images_per_class": per_class, "size": spec.size, "seed": spec.seed, "images": len(jobs),
               "boxes": n_boxes, "train_images": len(jobs), "val_images": 0, "train_boxes": n_boxes, "val_boxes": 0}
    with open(os.path.join(out, "synth.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return summary
