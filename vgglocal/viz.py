"""Pictures of predictions: boxes with class names and scores, ground truth, a legend.

Readable at any image size: the picture is drawn on the original image rescaled (never
letterboxed) so that its shorter side is at least ``min_side`` pixels (small images are scaled
up for drawing, huge ones down), with font size and line width proportional to the picture.
Each class has its own colour (by class index, so a class looks the same in every tile of a
grid); a box's label is "name score" on a filled background in the box's colour, moved down
when it would cover an earlier label. Ground truth is a dashed black-and-white box, visible on
any background. Under the image a legend lists the predictions best first (colour, name,
score; for classification protocols, which have no boxes, it is the prediction) and the
ground-truth classes.

Drawn with Pillow's ``ImageDraw`` rather than ``torchvision.utils.draw_bounding_boxes``: the
latter scales text only with a TrueType font file (``font=PATH``), which a bare machine may not
have, while Pillow's built-in font scales to any size (``ImageFont.load_default(size)``,
Pillow >= 10.1); and it has no dashed style or legend.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

__all__ = ["PALETTE", "BOX_MIN_SCORE", "class_colour", "short_name", "draw_image", "save_png", "save_grid"]

# Tableau 10 (matplotlib's tab10) and ten more saturated colours: distinct on photos, and
# none so pale that a thin box disappears.
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f",
    "#0047ab", "#ff1493", "#00a86b", "#ffd700", "#8b0000", "#4b0082", "#ff4500", "#008080", "#9acd32", "#a0522d",
)
_GT_DARK, _GT_LIGHT = (0, 0, 0), (255, 255, 255)
# Boxes of guesses scoring below this are left out of the image (the legend lists them): a
# top-5 whose last labels are near zero would otherwise bury the picture in boxes.
BOX_MIN_SCORE = 0.05


def class_colour(index: int) -> tuple[int, int, int]:
    """The RGB colour of class ``index`` (cycles through :data:`PALETTE`)."""
    h = PALETTE[int(index) % len(PALETTE)].lstrip("#")
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


def short_name(name: str) -> str:
    """The first synonym of an ILSVRC class name ("tench, Tinca tinca" → "tench"), as
    torchvision's ``weights.meta["categories"]`` lists them; other names unchanged."""
    return name.split(",")[0].strip() or name


@functools.lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _to_pil(image: np.ndarray | Tensor | Image.Image) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    a = image.detach().cpu().numpy() if isinstance(image, Tensor) else np.asarray(image)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = np.moveaxis(a, 0, -1)  # [3, H, W] → [H, W, 3]
    if a.ndim == 2:
        a = a[..., None]
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    return Image.fromarray(np.ascontiguousarray(a.astype(np.uint8)))


def _scale_for(h: int, w: int, side: int | None, min_side: int, max_side: int) -> float:
    if side is not None:  # a grid tile: fixed height, width by aspect (at most 2.5 x side)
        return min(side / h, 2.5 * side / w)
    s = max(1.0, min_side / min(h, w))
    return min(s, max_side / max(h, w)) if max(h, w) * s > max_side else s


def _text_size(draw: ImageDraw.ImageDraw, text: str, font) -> tuple[int, int]:
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
    return x1 - x0, y1


def _fit(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    """``text`` cut with "..." to at most ``width`` pixels (long class names in narrow tiles)."""
    if _text_size(draw, text, font)[0] <= width:
        return text
    while len(text) > 1 and _text_size(draw, text + "...", font)[0] > width:
        text = text[:-1]
    return text.rstrip() + "..."


def _ink(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white text, whichever reads better on ``rgb`` (ITU-R BT.601 luma)."""
    return (0, 0, 0) if 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2] > 150 else (255, 255, 255)


def _dashed_rectangle(draw: ImageDraw.ImageDraw, box: Sequence[float], width: int, dash: int) -> None:
    """A rectangle of alternating dark and light dashes (ground truth)."""
    x1, y1, x2, y2 = box
    for (ax, ay), (bx, by) in (((x1, y1), (x2, y1)), ((x2, y1), (x2, y2)), ((x2, y2), (x1, y2)), ((x1, y2), (x1, y1))):
        length = max(abs(bx - ax), abs(by - ay))
        n = max(1, int(length // dash))
        ts = np.linspace(0.0, 1.0, n + 1)
        for k in range(n):
            p = (ax + (bx - ax) * ts[k], ay + (by - ay) * ts[k])
            q = (ax + (bx - ax) * ts[k + 1], ay + (by - ay) * ts[k + 1])
            draw.line([p, q], fill=_GT_DARK if k % 2 == 0 else _GT_LIGHT, width=width)


def _overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _place_label(rect_w: int, rect_h: int, box: Sequence[float], size: tuple[int, int],
                 taken: list[tuple[int, int, int, int]]) -> tuple[int, int, int, int]:
    """Where a label goes: above the box's top-left corner, else just inside it; moved down
    past labels already placed (no stacked, unreadable labels)."""
    w, h = size
    x = int(min(max(box[0], 0), max(w - rect_w, 0)))
    y = int(box[1]) - rect_h if box[1] - rect_h >= 0 else int(max(box[1], 0))
    for _ in range(len(taken) + 1):
        rect = (x, y, x + rect_w, y + rect_h)
        hit = next((t for t in taken if _overlaps(rect, t)), None)
        if hit is None:
            break
        y = hit[3]
    y = min(y, max(h - rect_h, 0))
    return x, y, x + rect_w, y + rect_h


def _as_list(values, n: int, default=None) -> list:
    if values is None:
        return [default] * n
    if isinstance(values, Tensor):
        values = values.tolist()
    return list(values)


def _corners(b: Tensor) -> Tensor:
    """Boxes with x1 <= x2 and y1 <= y2: a regressor's raw box may come out inverted (Euclidean
    loss does not forbid it), and PIL refuses to draw such a rectangle."""
    return torch.cat([torch.minimum(b[:, :2], b[:, 2:]), torch.maximum(b[:, :2], b[:, 2:])], 1)


def draw_image(
    image: np.ndarray | Tensor | Image.Image,
    boxes: Tensor | np.ndarray | None = None,
    labels: Sequence[str] | None = None,
    true_boxes: Tensor | np.ndarray | None = None,
    true_labels: Sequence[str] | None = None,
    side: int | None = None,
    *,
    scores: Sequence[float] | Tensor | None = None,
    classes: Sequence[int] | Tensor | None = None,
    true_classes: Sequence[int] | Tensor | None = None,
    box_min_score: float = BOX_MIN_SCORE,
    min_side: int = 480,
    max_side: int = 1600,
    legend: bool = True,
) -> Tensor:
    """Draw predictions and ground truth on an image; returns the picture ``Tensor[3, H', W']`` uint8.

    Args:
        image: ``[H, W, 3]`` uint8 array, ``[3, H, W]`` uint8 tensor or a PIL image.
        boxes (Tensor[K, 4] or None): the predictions' boxes, x1y1x2y2 original-image pixels;
            None for classification predictions (listed in the legend only).
        labels: the K predictions' class names (ILSVRC words are shortened to the first synonym).
        true_boxes (Tensor[G, 4]), true_labels: ground truth, drawn dashed.
        side: draw as a grid tile of this height instead (width by aspect ratio).
        scores: the K predictions' scores, shown beside the names.
        classes, true_classes: class indices, which choose the colours (default: by first
            appearance of each name).
        box_min_score: boxes of predictions scoring below this are not drawn (the best one
            always is); the legend still lists them.
        min_side, max_side: bounds on the picture's shorter and longer side (without ``side``).
        legend: the strip under the image listing predictions and ground truth.
    """
    pil = _to_pil(image)
    w0, h0 = pil.size
    s = _scale_for(h0, w0, side, min_side, max_side)
    w, h = max(1, round(w0 * s)), max(1, round(h0 * s))
    pil = pil.resize((w, h), Image.Resampling.BILINEAR if s >= 1 else Image.Resampling.LANCZOS)
    ref = min(w, h) if side is None else side
    fs = int(np.clip(round(0.045 * ref), 11, 44))  # 22 px on a 480-px picture, 14 px in a 320-px tile
    lw = max(2, round(fs / 5))
    font = _font(fs)
    draw = ImageDraw.Draw(pil)

    names = [short_name(str(n)) for n in (labels or [])]
    k = len(names)
    sc = _as_list(scores, k)
    order: dict[str, int] = {}
    cls = [int(c) if c is not None else order.setdefault(n, len(order)) for n, c in zip(names, _as_list(classes, k), strict=True)]
    true_names = [short_name(str(n)) for n in (true_labels or [])]
    tcls = [int(c) if c is not None else order.setdefault(n, len(order))
            for n, c in zip(true_names, _as_list(true_classes, len(true_names)), strict=True)]

    if true_boxes is not None and len(true_boxes):
        for b in _corners(torch.as_tensor(true_boxes, dtype=torch.float64).reshape(-1, 4) * s).tolist():
            _dashed_rectangle(draw, b, lw, dash=4 * fs // 3)
    taken: list[tuple[int, int, int, int]] = []
    if boxes is not None and k:
        xy = _corners(torch.as_tensor(boxes, dtype=torch.float64).reshape(-1, 4) * s).tolist()
        shown = [i for i in range(k) if i == 0 or sc[i] is None or sc[i] >= box_min_score]
        for i in reversed(shown):  # the best box on top
            draw.rectangle(xy[i], outline=class_colour(cls[i]), width=lw)
        pad = max(1, fs // 6)
        for i in shown:  # the best label gets the best place
            text = _fit(draw, names[i] + (f" {sc[i]:.2f}" if sc[i] is not None else ""), font, w - 2 * pad)
            tw, th = _text_size(draw, text, font)
            rect = _place_label(tw + 2 * pad, th + 2 * pad, xy[i], (w, h), taken)
            taken.append(rect)
            colour = class_colour(cls[i])
            draw.rectangle(rect, fill=colour)
            draw.text((rect[0] + pad, rect[1] + pad), text, fill=_ink(colour), font=font)
    if not legend or not (names or true_names):
        return torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1)
    return torch.from_numpy(np.asarray(_with_legend(pil, names, sc, cls, true_names, tcls, fs)).copy()).permute(2, 0, 1)


def _with_legend(pil: Image.Image, names: list[str], scores: list, cls: list[int], true_names: list[str],
                 tcls: list[int], fs: int) -> Image.Image:
    """The image with a white strip under it: one entry per prediction (swatch, name, score),
    then the ground truth ("true:" and a dashed swatch), wrapped to the image's width."""
    font = _font(fs)
    w = pil.width
    measure = ImageDraw.Draw(pil)
    pad, sw = fs // 2, fs  # padding, swatch side
    entries = [(f"{n} {s:.2f}" if s is not None else n, c, False) for n, s, c in zip(names, scores, cls, strict=True)]
    entries += [(f"true: {n}", c, True) for n, c in dict(zip(true_names, tcls, strict=True)).items()]  # each class once
    line_h = _text_size(measure, "Ag", font)[1] + pad
    rows: list[list[tuple[str, int, bool, int]]] = [[]]
    x = pad
    for text, c, gt in entries:
        text = _fit(measure, text, font, w - 3 * pad - sw)
        ew = sw + pad // 2 + _text_size(measure, text, font)[0] + 2 * pad
        if rows[-1] and x + ew > w:
            rows.append([])
            x = pad
        rows[-1].append((text, c, gt, x))
        x += ew
    out = Image.new("RGB", (w, pil.height + len(rows) * line_h + pad), "white")
    out.paste(pil, (0, 0))
    draw = ImageDraw.Draw(out)
    for r, row in enumerate(rows):
        y = pil.height + pad // 2 + r * line_h
        for text, c, gt, x in row:
            sq = (x, y + (line_h - pad - sw) // 2 + 1, x + sw, y + (line_h - pad - sw) // 2 + 1 + sw)
            if gt:
                _dashed_rectangle(draw, sq, max(2, fs // 7), dash=max(3, sw // 3))
            else:
                draw.rectangle(sq, fill=class_colour(c))
            draw.text((x + sw + pad // 2, y), text, fill=(0, 0, 0), font=font)
    return out


def save_png(image: Tensor, path: str | Path) -> Path:
    """Write a ``[3, H, W]`` uint8 tensor as PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image.permute(1, 2, 0).contiguous().numpy()).save(path)
    return path


def save_grid(tiles: Sequence[Tensor], path: str | Path, nrow: int = 4, gap: int = 8) -> Path:
    """Write ``[3, H, W]`` uint8 pictures of any sizes as one PNG grid, ``nrow`` per row, each
    in a white cell of the largest tile's size (no scaling, no letterboxing of the images)."""
    if not tiles:
        raise ValueError("save_grid: no pictures")
    ch = max(int(t.shape[1]) for t in tiles)
    cw = max(int(t.shape[2]) for t in tiles)
    cols = max(1, min(nrow, len(tiles)))
    rows = -(-len(tiles) // cols)
    grid = torch.full((3, gap + rows * (ch + gap), gap + cols * (cw + gap)), 255, dtype=torch.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        y, x = gap + r * (ch + gap), gap + c * (cw + gap)
        grid[:, y : y + t.shape[1], x : x + t.shape[2]] = t
    return save_png(grid, path)
