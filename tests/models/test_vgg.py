import pytest
import torch
from torch import nn

from vgglocal.models.heads import select_class_boxes
from vgglocal.models.vgg import (
    VGG,
    VGG_SPECS,
    add_box_head,
    build_vgg,
    copy_from_net_a,
    init_weights,
)

# Table 2 of the paper (1000 classes, full width, 224 crop): exact.
TABLE_2 = {
    "A": 132_863_336,
    "A-LRN": 132_863_336,
    "B": 133_047_848,
    "C": 133_638_952,
    "D": 138_357_544,
    "E": 143_667_240,
}


@pytest.mark.parametrize("arch", sorted(TABLE_2))
def test_parameter_counts_equal_table_2(arch):
    with torch.device("meta"):
        model = VGG(arch, num_classes=1000)
    assert sum(p.numel() for p in model.parameters()) == TABLE_2[arch]


def test_layer_structure_follows_table_1():
    weight_layers = {"A": 11, "A-LRN": 11, "B": 13, "C": 16, "D": 16, "E": 19}
    for arch, n in weight_layers.items():
        with torch.device("meta"):
            m = VGG(arch)
        assert len(m.conv_layers()) + 3 == n
        assert any(isinstance(x, nn.LocalResponseNorm) for x in m.modules()) == (arch == "A-LRN")
    with torch.device("meta"):
        c = VGG("C")
    one_by_one = [n for n, m in c.conv_layers() if m.kernel_size == (1, 1)]
    assert one_by_one == ["conv3_3", "conv4_3", "conv5_3"]


@pytest.mark.parametrize("arch", ["A", "C", "D"])
def test_dense_map_of_crop_equals_crop_logits_and_size_formula(arch):
    torch.manual_seed(0)
    model = build_vgg(arch, num_classes=7, width=0.0625, crop=64, init="kaiming").eval()
    x = torch.randn(2, 3, 64, 64)
    logits = model(x)
    assert logits.shape == (2, 7)
    dense = model.maps(x)["scores"]
    assert dense.shape == (2, 7, 1, 1)
    torch.testing.assert_close(dense.flatten(1), logits)
    big = torch.randn(1, 3, 128, 192)  # 2x and 3x the crop
    out = model(big)
    assert out.shape == (1, 7, 128 // 32 - 64 // 32 + 1, 192 // 32 - 64 // 32 + 1)
    # Not equal to separately cut crops: dense windows see their neighbours where a crop sees
    # zero padding (section 3.2), so only the geometry is asserted here.


def test_small_input_is_padded_not_rejected():
    model = build_vgg("A", num_classes=3, width=0.0625, crop=64).eval()
    assert model(torch.randn(1, 3, 40, 50)).shape == (1, 3)


def test_width_multiplier_and_fc_width():
    model = build_vgg("D", num_classes=10, width=0.125, crop=96)
    assert [m.out_channels for _, m in model.conv_layers()][::3][:3] == [8, 16, 32]
    assert model.cls_head.fc6.out_channels == 512 and model.cls_head.fc6.kernel_size == (3, 3)
    assert build_vgg("D", 10, width=0.125, fc_width=100, crop=64).cls_head.fc7.out_channels == 100


def test_batch_norm_variant_and_dropout():
    model = build_vgg("B", num_classes=5, width=0.0625, crop=32, batch_norm=True, dropout=0.5)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 10
    model.train()
    x = torch.randn(4, 3, 32, 32)
    assert not torch.equal(model(x), model(x))  # dropout active in training
    model.eval()
    torch.testing.assert_close(model(x), model(x))


@pytest.mark.parametrize("scheme", ["normal", "glorot", "kaiming"])
def test_init_schemes(scheme):
    torch.manual_seed(0)
    model = build_vgg("D", num_classes=10, width=0.25, crop=64, init=scheme, init_std=0.01)
    w = model.features.conv3_1.weight
    fan_in = w[0].numel()
    expected = {"normal": 0.01, "glorot": (2 / (fan_in + w.shape[0] * 9)) ** 0.5, "kaiming": (2 / fan_in) ** 0.5}[scheme]
    assert w.std().item() == pytest.approx(expected, rel=0.1)
    assert all((m.bias == 0).all() for m in model.modules() if isinstance(m, nn.Conv2d))
    assert model.cls_head.fc8.weight.std().item() == pytest.approx(0.01, rel=0.1)
    with pytest.raises(ValueError, match="unknown init 'he'"):
        init_weights(model, "he")


def test_copy_from_net_a_copies_first_four_convs_and_three_fcs():
    a = build_vgg("A", num_classes=10, width=0.125, crop=64, init="kaiming")
    d = build_vgg("D", num_classes=10, width=0.125, crop=64, init="kaiming")
    before = {k: v.clone() for k, v in d.state_dict().items()}
    copied = copy_from_net_a(d, a.state_dict())
    assert len(copied) == 14
    sd = d.state_dict()
    for name in ["conv1_1", "conv2_1", "conv3_1", "conv3_2"]:
        assert torch.equal(sd[f"features.{name}.weight"], a.state_dict()[f"features.{name}.weight"])
    for name in ["fc6", "fc7", "fc8"]:
        assert torch.equal(sd[f"cls_head.{name}.weight"], a.state_dict()[f"cls_head.{name}.weight"])
    for name in ["conv1_2", "conv2_2", "conv3_3", "conv4_1", "conv5_3"]:
        assert torch.equal(sd[f"features.{name}.weight"], before[f"features.{name}.weight"])
    wrong = build_vgg("A", num_classes=11, width=0.125, crop=64)
    with pytest.raises(ValueError, match="cls_head.fc8.weight' has shape"):
        copy_from_net_a(d, wrong.state_dict())


@pytest.mark.parametrize("kind, outputs", [("scr", 4), ("pcr", 4 * 6)])
def test_box_head_copies_fc6_fc7_and_has_new_last_layer(kind, outputs):
    model = build_vgg("D", num_classes=6, width=0.0625, crop=64, init="kaiming")
    add_box_head(model, kind, std=0.001, bias=torch.tensor([0.5, 0.5, 0.4, 0.3]))
    assert torch.equal(model.box_head.fc6.weight, model.cls_head.fc6.weight)
    assert torch.equal(model.box_head.fc7.weight, model.cls_head.fc7.weight)
    assert model.box_head.fc6.weight is not model.cls_head.fc6.weight
    assert model.box_head.fc8.out_channels == outputs
    torch.testing.assert_close(model.box_head.fc8.bias[:4], torch.tensor([0.5, 0.5, 0.4, 0.3]))
    maps = model.eval().maps(torch.randn(2, 3, 96, 64))
    assert maps["scores"].shape == (2, 6, 2, 1) and maps["boxes"].shape == (2, outputs, 2, 1)
    assert model.hparams["box_head"] == kind


def test_select_class_boxes_pcr_and_scr():
    boxes = torch.arange(2 * 12 * 2 * 3, dtype=torch.float32).reshape(2, 12, 2, 3)  # 3 classes
    got = select_class_boxes(boxes, torch.tensor([2, 0]))
    torch.testing.assert_close(got[0], boxes[0, 8:12])
    torch.testing.assert_close(got[1], boxes[1, 0:4])
    top = select_class_boxes(boxes, torch.tensor([[2, 1], [0, 2]]))
    torch.testing.assert_close(top[0, 1], boxes[0, 4:8])
    scr = boxes[:, :4]
    torch.testing.assert_close(select_class_boxes(scr, torch.tensor([2, 1])), scr)
    assert select_class_boxes(scr, torch.tensor([[2, 1], [0, 2]])).shape == (2, 2, 4, 2, 3)


def test_unknown_arch_message():
    with pytest.raises(ValueError, match=r"unknown arch 'F'; choose from A, A-LRN, B, C, D, E"):
        VGG("F")
    assert set(VGG_SPECS) == set(TABLE_2)
