import torch
from torch.testing import assert_close

from vgglocal.engine.losses import box_loss, classification_loss


def test_box_loss_is_caffe_euclidean_on_the_true_class_only():
    # PCR, 3 classes: outputs [N, 12]; only the target class's 4 outputs count.
    boxes = torch.zeros(2, 12)
    boxes[0, 4:8] = torch.tensor([0.5, 0.5, 1.0, 1.0])  # class 1 of sample 0: exact
    boxes[0, 0:4] = 100.0  # other classes are ignored
    boxes[1, 8:12] = torch.tensor([0.0, 0.0, 0.0, 0.0])  # class 2 of sample 1: off by target
    targets = torch.tensor([[0.5, 0.5, 1.0, 1.0], [0.1, 0.2, 0.3, 0.4]])
    labels = torch.tensor([1, 2])
    # 1/(2N) * sum ||d||^2 = 1/4 * (0 + 0.01 + 0.04 + 0.09 + 0.16)
    assert_close(box_loss(boxes, targets, labels), torch.tensor(0.3 / 4))


def test_box_loss_pcr_gradient_reaches_only_the_true_class():
    boxes = torch.randn(3, 20, requires_grad=True)
    labels = torch.tensor([0, 4, 2])
    box_loss(boxes, torch.rand(3, 4), labels).backward()
    nonzero = (boxes.grad.reshape(3, 5, 4).abs().sum(-1) > 0)
    assert nonzero.tolist() == [[c == int(labels[n]) for c in range(5)] for n in range(3)]


def test_box_loss_scr_shared_by_all_classes_and_dense_maps_accepted():
    pred = torch.tensor([[0.2, 0.2, 0.2, 0.2]])
    target = torch.tensor([[0.2, 0.2, 0.2, 1.2]])
    # SCR output [N, 4, 1, 1] (the head's raw map): label is irrelevant
    for label in (0, 7):
        assert_close(box_loss(pred.reshape(1, 4, 1, 1), target, torch.tensor([label])), torch.tensor(0.5))


def test_classification_loss_is_mean_cross_entropy():
    logits = torch.tensor([[0.0, 0.0], [10.0, 0.0]], dtype=torch.bfloat16)
    loss = classification_loss(logits, torch.tensor([0, 1]))
    expected = (torch.log(torch.tensor(2.0)) + (10.0 + torch.log1p(torch.exp(torch.tensor(-10.0))))) / 2
    assert loss.dtype == torch.float32
    assert_close(loss, expected)
