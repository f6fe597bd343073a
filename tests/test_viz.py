"""Pictures: legible size without letterboxing, a colour per class, labels that do not stack,
dashed ground truth, a legend, long names cut to fit."""

import numpy as np
import torch
from PIL import Image, ImageDraw

from vgglocal.viz import _fit, _font, _place_label, class_colour, draw_image, save_grid, short_name

GREY = 128


def _grey(h, w):
    return np.full((h, w, 3), GREY, np.uint8)


def _has(picture: torch.Tensor, rgb, region=None) -> bool:
    a = picture.permute(1, 2, 0).numpy()
    if region is not None:
        a = a[region]
    return bool((a == np.asarray(rgb, np.uint8)).all(axis=-1).any())


def test_a_small_image_is_scaled_up_not_letterboxed_and_keeps_its_aspect():
    pic = draw_image(_grey(65, 130), torch.tensor([[10.0, 10, 60, 50]]), ["disc"], scores=[0.9], classes=[0])
    _, h, w = pic.shape
    assert w == 960  # shorter side 65 → 480, so 130 → 960
    top = pic[:, :480].permute(1, 2, 0).numpy()
    assert (top[0, 0] == GREY).all() and (top[-1, -1] == GREY).all()  # image to the corners: no bars
    assert h > 480  # the legend strip under it
    assert (pic[:, 480:] == 255).float().mean() > 0.8  # the strip is white, with text


def test_large_images_are_bounded_and_boxes_follow_the_scale():
    pic = draw_image(_grey(2000, 3000), torch.tensor([[300.0, 300, 1500, 1500]]), ["disc"], classes=[2], legend=False)
    assert tuple(pic.shape[1:]) == (1067, 1600)  # longer side 3000 → 1600
    s = 1600 / 3000
    a = pic.permute(1, 2, 0).numpy()
    assert (a[round(900 * s), round(300 * s)] == class_colour(2)).all()  # the left edge, scaled


def test_each_class_has_its_colour_and_labels_carry_name_and_score():
    boxes = torch.tensor([[5.0, 5, 30, 30], [30, 30, 60, 60]])
    pic = draw_image(_grey(64, 64), boxes, ["disc", "ring"], scores=[0.8, 0.2], classes=[1, 4], legend=False)
    assert _has(pic, class_colour(1)) and _has(pic, class_colour(4))
    assert class_colour(1) != class_colour(4)
    # without class indices, colours follow the first appearance of each name
    pic = draw_image(_grey(64, 64), boxes, ["ring", "ring"], scores=[0.8, 0.2], legend=False)
    assert _has(pic, class_colour(0)) and not _has(pic, class_colour(1))


def test_low_scoring_boxes_are_left_out_of_the_image_but_listed_in_the_legend():
    boxes = torch.tensor([[5.0, 5, 30, 30], [30, 30, 60, 60]])
    pic = draw_image(_grey(64, 64), boxes, ["disc", "ring"], scores=[0.8, 0.01], classes=[1, 4], box_min_score=0.05)
    image, legend = (slice(0, 480),), (slice(480, None),)
    assert _has(pic, class_colour(1), image) and not _has(pic, class_colour(4), image)
    assert _has(pic, class_colour(4), legend)


def test_ground_truth_is_dashed_black_and_white():
    pic = draw_image(_grey(64, 64), None, None, torch.tensor([[8.0, 8, 56, 56]]), ["disc"], legend=False)
    edge = pic[:, 8 * 480 // 64, 100:380].permute(1, 0).numpy()  # along the top edge
    assert (edge == 0).all(axis=1).sum() > 50 and (edge == 255).all(axis=1).sum() > 50


def test_classification_predictions_without_boxes_are_drawn_in_the_legend():
    plain = draw_image(_grey(64, 64), legend=True)
    pic = draw_image(_grey(64, 64), None, ["disc", "star"], scores=[0.7, 0.3], classes=[0, 3])
    assert plain.shape[1] == 480 and pic.shape[1] > 480
    assert _has(pic, class_colour(0)) and _has(pic, class_colour(3))


def test_labels_of_overlapping_boxes_do_not_stack():
    taken = []
    for _ in range(3):  # three nearly equal boxes: the old pictures printed the labels on each other
        taken.append(_place_label(120, 24, (50.0, 60.0, 300.0, 300.0), (480, 480), taken))
    for i in range(3):
        for j in range(i):
            a, b = taken[i], taken[j]
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), (a, b)
    assert taken[0] == (50, 36, 170, 60)  # the best label sits just above its box


def test_long_names_are_cut_to_the_tile_and_ilsvrc_words_shortened():
    assert short_name("tench, Tinca tinca") == "tench" and short_name("disc") == "disc"
    draw = ImageDraw.Draw(Image.new("RGB", (10, 10)))
    text = _fit(draw, "a very long class name " * 10, _font(14), 200)
    assert text.endswith("...") and draw.textbbox((0, 0), text, font=_font(14))[2] <= 200
    pic = draw_image(_grey(64, 64), torch.tensor([[0.0, 0, 60, 60]]), ["x" * 200], scores=[0.5], side=320)
    assert pic.shape[1:] == (pic.shape[1], 320) and pic.shape[1] > 320  # a 320-px tile plus its legend


def test_grid_places_pictures_of_any_size_in_white_cells(tmp_path):
    a = torch.zeros(3, 100, 150, dtype=torch.uint8)
    b = torch.full((3, 120, 80), 7, dtype=torch.uint8)
    out = save_grid([a, b, a], tmp_path / "g.png", nrow=2, gap=8)
    grid = np.asarray(Image.open(out))
    assert grid.shape == (8 + 2 * (120 + 8), 8 + 2 * (150 + 8), 3)
    assert (grid[8:108, 8:158] == 0).all() and (grid[8:128, 166:246] == 7).all() and (grid[8:128, 246:316] == 255).all()


def test_an_inverted_box_is_drawn_by_its_corners():
    # a raw regressor box may come out with x2 < x1; it draws as the same rectangle, not an error
    straight = draw_image(_grey(64, 64), torch.tensor([[10.0, 12, 50, 40]]), ["disc"], classes=[1], legend=False)
    inverted = draw_image(_grey(64, 64), torch.tensor([[50.0, 40, 10, 12]]), ["disc"], classes=[1], legend=False,
                          true_boxes=torch.tensor([[40.0, 30, 20, 20]]))
    plain = draw_image(_grey(64, 64), torch.tensor([[10.0, 12, 50, 40]]), ["disc"], classes=[1], legend=False,
                       true_boxes=torch.tensor([[20.0, 20, 40, 30]]))
    assert _has(straight, class_colour(1))
    assert torch.equal(inverted, plain)
