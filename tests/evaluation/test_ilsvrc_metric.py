"""The devkit localisation error on hand-computed cases, and the submission files."""

from __future__ import annotations

import pytest
import torch

from vgglocal.data.records import Sample
from vgglocal.evaluation.ilsvrc import (
    CenterCropEvaluator,
    LocalizationEvaluator,
    SubmissionError,
    ilsvrc_metrics,
    localization_errors,
    pad_guesses,
    protocol1_errors,
    read_devkit_txt,
    read_kaggle_csv,
    score_kaggle,
)
from vgglocal.evaluation.score import score
from vgglocal.evaluation.writers import write_devkit_txt, write_kaggle_csv
from vgglocal.inference.results import ImageResult

GT = [0.0, 0.0, 9.0, 9.0]


def errors(guesses, truth, topk=5):
    pl, pb = pad_guesses([(torch.tensor([g[0] for g in guesses], dtype=torch.int64), torch.tensor([g[1] for g in guesses]).reshape(-1, 4))])
    gl, gb = pad_guesses([(torch.tensor([t[0] for t in truth]), torch.tensor([t[1] for t in truth]))])
    cls, loc = localization_errors(pl, pb, gl, gb, topk=topk)
    return cls.item(), loc.item()


def test_inclusive_pixel_borderline_is_correct():
    # Inclusive widths 10 and 11, overlap 7 x 10 = 70, union 100 + 110 - 70 = 140: IoU 0.5
    # exactly (the continuous IoU would be 54 / 117 = 0.46 and call it wrong).
    assert errors([(3, [3.0, 0.0, 13.0, 9.0])], [(3, GT)]) == (0.0, 0.0)
    # One pixel further: overlap 60, union 140: 0.43, wrong.
    assert errors([(3, [4.0, 0.0, 13.0, 9.0])], [(3, GT)]) == (0.0, 1.0)


def test_touching_boxes_are_wrong():
    # x 0..9 and 10..19 share no pixel: overlap -1 under the devkit rule.
    assert errors([(1, [10.0, 0.0, 19.0, 9.0])], [(1, GT)]) == (0.0, 1.0)
    assert errors([(1, GT)], [(1, GT)]) == (0.0, 0.0)


def test_any_ground_truth_box_of_the_label_counts():
    truth = [(2, GT), (2, [50.0, 50.0, 99.0, 99.0])]
    assert errors([(2, [52.0, 50.0, 99.0, 97.0])], truth) == (0.0, 0.0)
    # The right box under the wrong label is wrong, for classification and localisation.
    assert errors([(5, [52.0, 50.0, 99.0, 97.0])], truth) == (1.0, 1.0)


def test_several_labels_are_averaged_within_the_image():
    # Two distinct labels (label 0 has two boxes, still one label): finding one is error 1/2.
    truth = [(0, GT), (0, [20.0, 20.0, 29.0, 29.0]), (1, [40.0, 40.0, 79.0, 79.0])]
    assert errors([(0, [20.0, 20.0, 29.0, 29.0])], truth) == (0.5, 0.5)
    assert errors([(1, [40.0, 40.0, 79.0, 79.0]), (0, GT)], truth) == (0.0, 0.0)
    # Label 1 named with a bad box: classification finds both labels, localisation one.
    assert errors([(1, [0.0, 0.0, 5.0, 5.0]), (0, GT)], truth) == (0.0, 0.5)


def test_only_the_first_five_guesses_count_and_top1_only_the_first():
    wrong = [(7, GT)] * 5
    assert errors(wrong + [(3, GT)], [(3, GT)]) == (1.0, 1.0)  # the sixth guess is ignored
    assert errors(wrong[:4] + [(3, GT)], [(3, GT)]) == (0.0, 0.0)
    assert errors([(7, GT), (3, GT)], [(3, GT)], topk=1) == (1.0, 1.0)
    assert errors([(3, GT), (7, GT)], [(3, GT)], topk=1) == (0.0, 0.0)


def test_metrics_average_over_images_with_hand_counts():
    guesses = [
        (torch.tensor([0]), torch.tensor([GT])),  # right
        (torch.tensor([9, 1]), torch.tensor([GT, GT])),  # right at top-5 only
        (torch.tensor([2]), torch.tensor([[50.0, 50.0, 60.0, 60.0]])),  # label right, box wrong
        (torch.zeros(0, dtype=torch.int64), torch.zeros(0, 4)),  # no guesses
    ]
    truths = [(torch.tensor([i]), torch.tensor([GT])) for i in range(4)]
    pl, pb = pad_guesses(guesses)
    gl, gb = pad_guesses(truths)
    m = ilsvrc_metrics(pl, pb, gl, gb)
    assert m == {"top1_cls_error": 0.5, "top5_cls_error": 0.25, "top1_loc_error": 0.75, "top5_loc_error": 0.5, "n_images": 4}
    records = [Sample(f"{i}.jpg", i, t[1].numpy(), t[0].numpy()) for i, t in enumerate(truths)]
    outputs = [ImageResult(lab, torch.ones(len(lab)), box, lab) for lab, box in guesses]
    ev = LocalizationEvaluator()
    ev.process(records[:2], outputs[:2])
    ev.process(records[2:], [outputs[2], None])  # None: an image without predictions
    assert ev.summarize() == m
    ev.reset()
    with pytest.raises(ValueError):
        ev.summarize()


def test_protocol1_judges_only_the_boxes_of_the_localised_class():
    gt_boxes = torch.tensor([[GT, [50.0, 50.0, 59.0, 59.0]]] * 3)
    gt_labels = torch.tensor([[0, 1], [0, 1], [0, -1]])
    boxes = torch.tensor([GT, GT, [50.0, 50.0, 59.0, 59.0]])
    # 0: class 0's box found (class 1 in the same image is not judged); 1: the guess is class
    # 1's, the box class 0's: a miss; 2: no box of class 1 in the image: a miss.
    assert protocol1_errors(torch.tensor([0, 1, 1]), boxes, gt_boxes, gt_labels).tolist() == [0.0, 1.0, 1.0]
    records = [Sample("a.jpg", 0, gt_boxes[0].numpy(), gt_labels[0].numpy()), Sample("b.jpg", 1, gt_boxes[1].numpy(), gt_labels[1].numpy())]
    ev = CenterCropEvaluator()
    # Boxes are scored in whole pixels, as written: 0.4 px off rounds back onto the truth.
    ev.process(records, [ImageResult(torch.tensor([1]), torch.ones(1), torch.tensor([[0.4, 0.0, 9.0, 9.4]]), torch.tensor([0])), None])
    assert ev.summarize() == {"top1_loc_error": 0.5, "top5_loc_error": 0.5, "n_images": 2}


def test_vectorised_metric_at_scale_matches_per_image_loop():
    g = torch.Generator().manual_seed(0)
    n = 300
    gl = torch.randint(0, 4, (n, 3), generator=g)
    gl[:, 1:][torch.rand(n, 2, generator=g) < 0.5] = -1
    xy = torch.randint(0, 50, (n, 3, 2), generator=g).double()
    gb = torch.cat([xy, xy + torch.randint(5, 40, (n, 3, 2), generator=g)], -1)
    pl = torch.randint(0, 4, (n, 7), generator=g)
    pb = gb[torch.arange(n)[:, None], torch.randint(0, 3, (n, 7), generator=g)] + torch.randint(-6, 7, (n, 7, 4), generator=g)
    cls, loc = localization_errors(pl, pb, gl, gb)
    from vgglocal.boxes import ilsvrc_iou

    for i in range(n):
        labels = sorted({int(v) for v in gl[i] if v >= 0})
        found_c = found_l = 0
        for lab in labels:
            boxes = gb[i][gl[i] == lab]
            hits = [k for k in range(5) if pl[i, k] == lab]
            found_c += bool(hits)
            found_l += any(bool((ilsvrc_iou(pb[i, k : k + 1], boxes) >= 0.5).any()) for k in hits)
        assert cls[i].item() == pytest.approx(1 - found_c / len(labels))
        assert loc[i].item() == pytest.approx(1 - found_l / len(labels))


def write(path, text):
    path.write_text(text)
    return path


def test_kaggle_files_round_trip_and_missing_images_count_as_wrong(tmp_path):
    truth = write(tmp_path / "gt.csv", "ImageId,PredictionString\nimg1,n01 0 0 9 9 n01 50 50 99 99\nimg2,n02 10 10 40 40\nimg3,n03 0 0 20 20\n")
    preds = write_kaggle_csv(tmp_path / "p.csv", [("img1", [("n09", GT), ("n01", [52.4, 50.0, 99.0, 97.0])]), ("img2", [("n02", [10.2, 9.6, 40.0, 40.0])])])
    back = read_kaggle_csv(preds)
    assert back["img1"][1] == ("n01", (52.0, 50.0, 99.0, 97.0))  # whole pixels
    m = score(preds, truth)
    # img3 is missing: wrong. img1 right only at top-5, img2 right at top-1.
    assert m["n_images"] == 3
    assert m["top5_loc_error"] == pytest.approx(1 / 3)
    assert m["top1_loc_error"] == pytest.approx(2 / 3)
    assert m["top1_cls_error"] == pytest.approx(2 / 3)
    # Predictions naming images the ground truth lacks are a mistake, not silently dropped.
    extra = write_kaggle_csv(tmp_path / "x.csv", [("img9", [("n01", GT)])])
    with pytest.raises(SubmissionError, match="img9"):
        score(extra, truth)
    # Unknown labels are simply wrong guesses.
    assert score_kaggle({"img2": [("zzz", (10, 10, 40, 40))]}, {"img2": [("n02", (10, 10, 40, 40))]})["top5_cls_error"] == 1.0


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("Image,Pred\nimg1,n01 0 0 9 9\n", ":1:"),
        ("ImageId,PredictionString\nimg1,n01 0 0 9\n", ":2:"),
        ("ImageId,PredictionString\nimg1,n01 0 0 9 9\nimg2,n01 0 zero 9 9\n", ":3:"),
        ("ImageId,PredictionString\nimg1,n01 0 0 9 9\nimg1,n01 0 0 9 9\n", ":3:"),
        ("ImageId,PredictionString\nimg1,n01 0 0 9 9,extra\n", ":2:"),
    ],
)
def test_bad_csv_names_file_and_line(tmp_path, text, where):
    path = write(tmp_path / "bad.csv", text)
    with pytest.raises(SubmissionError, match=f"bad.csv{where}"):
        read_kaggle_csv(path)


def test_ground_truth_without_boxes_is_an_error(tmp_path):
    path = write(tmp_path / "gt.csv", "ImageId,PredictionString\nimg1,\n")
    assert read_kaggle_csv(path) == {"img1": []}
    with pytest.raises(SubmissionError, match="gt.csv:2"):
        read_kaggle_csv(path, require_boxes=True)


def test_devkit_text_round_trip(tmp_path):
    rows = [[(12, [0.4, 1.6, 10.0, 20.5]), (3, GT)], [], [(1000, [5.0, 5.0, 6.0, 6.0])] * 7]
    path = write_devkit_txt(tmp_path / "pred.txt", rows)
    lines = path.read_text().splitlines()
    assert lines[0] == "12 0 2 10 21 3 0 0 9 9"
    assert lines[1] == ""
    assert len(lines[2].split()) == 25  # at most five guesses
    back = read_devkit_txt(path)
    assert back[0][0] == (12, (0.0, 2.0, 10.0, 21.0)) and back[1] == []
    write(tmp_path / "bad.txt", "1 2 3\n")
    with pytest.raises(SubmissionError, match="bad.txt:1"):
        read_devkit_txt(tmp_path / "bad.txt")
