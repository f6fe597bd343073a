"""The VGG family of Table 1 (``VGG_SPECS``, in :mod:`vgglocal.models.specs`), one builder,
and the init schemes.

The fully-connected layers are held as convolutions (FC6: kernel crop/32; FC7, FC8: 1x1), so
the same module classifies a crop and produces a dense score map on a whole image
(section 3.2, "dense evaluation").
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from vgglocal.config import INITS, REGRESSIONS
from vgglocal.models.heads import FCHead
from vgglocal.models.specs import STRIDE, VGG_SPECS, VGGSpec

# Floats of unrolled FC6 rows per matrix product of VGG.maps_batched (64 MiB in float32).
ROW_BLOCK = 1 << 24

__all__ = ["VGGSpec", "VGG_SPECS", "STRIDE", "VGG", "build_vgg", "init_weights", "copy_from_net_a", "add_box_head",
           "fold_batch_norm"]


def scaled(channels: int, width: float) -> int:
    """Channel count under a width multiplier (at least one channel)."""
    return max(1, int(round(channels * width)))


def make_features(spec: VGGSpec, width: float = 1.0, batch_norm: bool = False) -> nn.Sequential:
    """The conv part, with caffe-style names: ``conv3_2``, ``relu3_2``, ``pool3``, ..."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    cin = 3
    for b, block in enumerate(spec.blocks, start=1):
        for i, (k, c) in enumerate(block, start=1):
            cout = scaled(c, width)
            layers[f"conv{b}_{i}"] = nn.Conv2d(cin, cout, k, padding=k // 2)
            if batch_norm:
                layers[f"bn{b}_{i}"] = nn.BatchNorm2d(cout)
            layers[f"relu{b}_{i}"] = nn.ReLU(inplace=True)
            if spec.lrn and b == 1 and i == 1:
                # Krizhevsky et al. 2012: size 5, alpha 1e-4, beta 0.75, k 2.
                layers["lrn"] = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)
            cin = cout
        layers[f"pool{b}"] = nn.MaxPool2d(2, 2)
    return nn.Sequential(layers)


class VGG(nn.Module):
    """A VGG net with a classification head and, for localisation, a box head.

    ``forward(x)`` returns class logits: ``[N, classes]`` when the score map is 1x1 (a crop),
    else the dense map ``[N, classes, h, w]`` with ``h = H/32 - crop/32 + 1``.
    ``maps(x)`` always returns the raw maps: ``{"scores": [N, C, h, w]}`` plus ``"boxes":
    [N, 4 or 4C, h, w]`` when there is a box head. Decoding boxes is not the model's job
    (see :mod:`vgglocal.boxes` and :mod:`vgglocal.inference.dense`).
    """

    def __init__(
        self,
        arch: str = "D",
        num_classes: int = 1000,
        width: float = 1.0,
        fc_width: int = 0,
        crop: int = 224,
        batch_norm: bool = False,
        dropout: float = 0.5,
        box_head: str | None = None,
    ) -> None:
        super().__init__()
        if arch not in VGG_SPECS:
            raise ValueError(f"unknown arch {arch!r}; choose from {', '.join(VGG_SPECS)}")
        if crop % STRIDE:
            raise ValueError(f"crop {crop} must be a multiple of {STRIDE}")
        if box_head is not None and box_head not in REGRESSIONS:
            raise ValueError(f"box_head {box_head!r}; choose from {', '.join(REGRESSIONS)}")
        spec = VGG_SPECS[arch]
        self.arch = arch
        self.num_classes = num_classes
        self.crop = crop
        self.box_head_kind = box_head
        self.features = make_features(spec, width, batch_norm)
        channels = scaled(spec.blocks[-1][-1][1], width)
        hidden = fc_width or scaled(4096, width)
        kernel = crop // STRIDE
        self.cls_head = FCHead(channels, hidden, num_classes, kernel, dropout)
        self.box_head = None
        if box_head is not None:
            outputs = 4 if box_head == "scr" else 4 * num_classes
            self.box_head = FCHead(channels, hidden, outputs, kernel, dropout)
        # Plain arguments, kept so a checkpoint can rebuild the module (models/io.py).
        self.hparams = dict(
            arch=arch,
            num_classes=num_classes,
            width=width,
            fc_width=fc_width,
            crop=crop,
            batch_norm=batch_norm,
            dropout=dropout,
            box_head=box_head,
        )

    def _pad(self, x: Tensor) -> Tensor:
        # An input smaller than the crop is padded, not rejected, bottom/right, so that the single
        # window still starts at the origin.
        h, w = x.shape[-2:]
        ph, pw = max(0, self.crop - h), max(0, self.crop - w)
        return nn.functional.pad(x, (0, pw, 0, ph)) if ph or pw else x

    def maps(self, x: Tensor) -> dict[str, Tensor]:
        f = self.features(self._pad(x))
        out = {"scores": self.cls_head(f)}
        if self.box_head is not None:
            out["boxes"] = self.box_head(f)
        return out

    @torch.no_grad()
    def maps_batched(self, xs: Iterable[Tensor], block: int = ROW_BLOCK, penultimate: bool = False) -> list[dict[str, Tensor]]:
        """:meth:`maps` of several batches (each of one image size) in eval mode, the FC heads
        applied once over the locations of all of them.

        The trunk runs batch by batch. The heads are then matrix products over rows, one row
        per map location: FC6's ``crop/32`` x ``crop/32`` window of the trunk's map, unrolled
        (``Tensor.unfold``), FC7 and FC8 on FC6's outputs. Dense evaluation meets many image
        sizes with a few images each, so per batch the heads see a few locations and are bound
        by reading their weights (FC6-FC8 of a PCR VGG-D at 1000 classes: 0.5 GB), which
        each convolution or matrix product call reads (and packs) anew; over the rows of
        every batch they read them once per ``block`` floats of rows. The same maps as
        :meth:`maps` within float32 rounding (one matrix product instead of a convolution).

        Args:
            xs: input batches ``[N, 3, H, W]``.
            block: floats of unrolled FC6 rows per matrix product (bounds the memory).
            penultimate: ``{"scores": penultimate(x)}`` instead (the classification head up
                to FC7's ReLU, :meth:`penultimate`).

        Returns:
            ``maps(x)`` of each batch, in order (``[N, out, h, w]`` views of row-major results).
        """
        if self.training:
            return [{"scores": self.penultimate(x)} if penultimate else self.maps(x) for x in xs]
        feats = [self.features(self._pad(x)) for x in xs]
        heads = {"scores": self.cls_head, **({"boxes": self.box_head} if self.box_head is not None and not penultimate else {})}
        upto = "fc7" if penultimate else "fc8"
        k = self.crop // STRIDE
        # (batch, first image, last image) pieces, several pieces to a block of rows
        blocks: list[list[tuple[int, int, int]]] = [[]]
        filled = 0
        for b, f in enumerate(feats):
            n, c, h, w = f.shape
            per_image = (h - k + 1) * (w - k + 1) * c * k * k
            step = max(1, block // max(1, per_image))
            for lo in range(0, n, step):
                hi = min(n, lo + step)
                if filled and filled + (hi - lo) * per_image > block:
                    blocks.append([])
                    filled = 0
                blocks[-1].append((b, lo, hi))
                filled += (hi - lo) * per_image
        pieces: dict[str, list[list[Tensor]]] = {name: [[] for _ in feats] for name in heads}
        for members in blocks:
            if not members:
                continue
            outs: dict[str, Tensor] = {}
            rows: dict[bool, Tensor] = {}  # by FC6 weight layout: both heads read the same rows
            for name, head in heads.items():
                weights, channels_last = head.row_weights()
                if channels_last not in rows:
                    rows[channels_last] = torch.cat([_patch_rows(feats[b][lo:hi], k, channels_last) for b, lo, hi in members])
                outs[name] = head.over_rows(rows[channels_last], weights, upto)
            counts = [(hi - lo) * (feats[b].shape[2] - k + 1) * (feats[b].shape[3] - k + 1) for b, lo, hi in members]
            for name, out in outs.items():
                for (b, _, _), part in zip(members, out.split(counts), strict=True):
                    pieces[name][b].append(part)
        result = []
        for b, f in enumerate(feats):
            n, _, h, w = f.shape
            result.append({name: torch.cat(parts[b]).view(n, h - k + 1, w - k + 1, -1).permute(0, 3, 1, 2)
                           for name, parts in pieces.items()})
        return result

    def penultimate(self, x: Tensor) -> Tensor:
        """The classification head's FC7 activations (after its ReLU; dropout is the identity in
        eval mode) as a map ``[N, hidden, h, w]``: the image feature of Appendix B, which
        removes the last FC layer."""
        h = self.cls_head
        return h.drop7(h.relu7(h.fc7(h.drop6(h.relu6(h.fc6(self.features(self._pad(x))))))))

    def forward(self, x: Tensor) -> Tensor:
        scores = self.cls_head(self.features(self._pad(x)))
        if scores.shape[-2:] == (1, 1):
            return scores.flatten(1)
        return scores

    def conv_layers(self) -> list[tuple[str, nn.Conv2d]]:
        """Conv layers of the backbone in order, with their caffe-style names."""
        return [(n, m) for n, m in self.features.named_children() if isinstance(m, nn.Conv2d)]


def _patch_rows(f: Tensor, k: int, channels_last: bool) -> Tensor:
    """Every ``k`` x ``k`` window of ``f [N, C, h, w]`` as a row ``[N * h' * w', C * k * k]``
    (locations row-major), its entries in the order of the FC6 weights that read it:
    (C, ky, kx) for contiguous weights, (ky, kx, C) for channels-last ones."""
    n, c = f.shape[:2]
    p = f.unfold(2, k, 1).unfold(3, k, 1)  # [N, C, h', w', k, k], a view
    p = p.permute(0, 2, 3, 4, 5, 1) if channels_last else p.permute(0, 2, 3, 1, 4, 5)
    return p.reshape(-1, c * k * k)


@torch.no_grad()
def fold_batch_norm(model: VGG) -> VGG:
    """Fold every batch norm of ``model.features`` into the convolution before it, for
    evaluation (in place; returned): ``conv`` then ``bn`` computes ``gamma (W x + b - mu) /
    sqrt(var + eps) + beta``, one convolution with weights ``W gamma / sqrt(var + eps)`` and
    bias ``(b - mu) gamma / sqrt(var + eps) + beta`` (``torch.nn.utils.fusion.fuse_conv_bn_eval``).
    The same maps within float32 rounding, one pass over each activation fewer. The folded
    net has no ``bn*`` layers, so its state dict is no checkpoint's: fold only nets loaded for
    evaluation. A net without batch norm is returned unchanged."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    if model.training:
        raise ValueError("fold_batch_norm: the net is in training mode (batch statistics, not running ones)")
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    previous = ""
    for name, m in model.features.named_children():
        if isinstance(m, nn.BatchNorm2d) and isinstance(layers.get(previous), nn.Conv2d):
            layers[previous] = fuse_conv_bn_eval(layers[previous], m)
            continue
        layers[name] = m
        previous = name
    if len(layers) != len(model.features):
        model.features = nn.Sequential(layers)
    return model


def init_weights(model: VGG, scheme: str = "normal", std: float = 0.01) -> None:
    """Initialise every conv/FC: ``normal`` N(0, std) with zero bias (section 3.1), ``glorot``
    (Xavier uniform, the authors' note), or ``kaiming`` (He normal, fan-in, ReLU gain).

    The last layer of each head is always N(0, std): a ReLU gain there only inflates the
    initial logits.
    """
    if scheme not in INITS:
        raise ValueError(f"unknown init {scheme!r}; choose from {', '.join(INITS)}")
    last = {id(h.fc8) for h in (model.cls_head, model.box_head) if h is not None}
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            if scheme == "normal" or id(m) in last:
                nn.init.normal_(m.weight, 0.0, std)
            elif scheme == "glorot":
                nn.init.xavier_uniform_(m.weight)
            else:
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# Section 3.1: deeper nets start from net A's first four conv layers and last three FC layers.
NET_A_CONVS = ("conv1_1", "conv2_1", "conv3_1", "conv3_2")
NET_A_FCS = ("fc6", "fc7", "fc8")


@torch.no_grad()
def copy_from_net_a(model: VGG, state_dict: dict[str, Tensor]) -> list[str]:
    """Copy net A's first four convs and three FCs into ``model`` (B–E); returns copied keys.

    Net A's first four conv layers are conv1_1, conv2_1, conv3_1 and conv3_2; they go to the
    layers of the same name in the deeper net, which have the same shapes (Table 1).
    """
    own = model.state_dict()
    names = [f"features.{c}." for c in NET_A_CONVS] + [f"cls_head.{f}." for f in NET_A_FCS]
    copied = []
    for key, value in state_dict.items():
        if not any(key.startswith(n) for n in names):
            continue
        if key not in own:
            raise ValueError(f"net-A weight {key!r} has no counterpart in arch {model.arch}")
        if own[key].shape != value.shape:
            raise ValueError(
                f"net-A weight {key!r} has shape {tuple(value.shape)}, expected {tuple(own[key].shape)} "
                "(width, crop and classes must match)"
            )
        own[key].copy_(value)
        copied.append(key)
    if len(copied) != 2 * (len(NET_A_CONVS) + len(NET_A_FCS)):
        raise ValueError(f"net-A checkpoint is missing layers: found {sorted(copied)}")
    return copied


def build_vgg(
    arch: str = "D",
    num_classes: int = 1000,
    width: float = 1.0,
    fc_width: int = 0,
    crop: int = 224,
    batch_norm: bool = False,
    dropout: float = 0.5,
    box_head: str | None = None,
    init: str = "normal",
    init_std: float = 0.01,
) -> VGG:
    """Build and initialise a VGG (plain arguments; :func:`vgglocal.models.build_model` reads config)."""
    model = VGG(arch, num_classes, width, fc_width, crop, batch_norm, dropout, box_head)
    init_weights(model, init, init_std)
    return model


@torch.no_grad()
def add_box_head(model: VGG, kind: str, std: float = 0.001, bias: Tensor | None = None) -> VGG:
    """Give ``model`` a box head (Appendix A): its own FC6/FC7 copied from the classifier's,
    a new last layer with N(0, std) weights and ``bias`` (default zero; a per-box mean target
    ``Tensor[4]`` is repeated per class). Returns the model, changed in place.
    """
    from vgglocal.models.heads import box_outputs

    outputs = box_outputs(kind, model.num_classes)
    cls = model.cls_head
    head = FCHead(cls.fc6.in_channels, cls.fc6.out_channels, outputs, cls.fc6.kernel_size[0], cls.drop6.p)
    head.fc6.load_state_dict(cls.fc6.state_dict())
    head.fc7.load_state_dict(cls.fc7.state_dict())
    nn.init.normal_(head.fc8.weight, 0.0, std)
    nn.init.zeros_(head.fc8.bias)
    if bias is not None:
        head.fc8.bias.copy_(bias.to(head.fc8.bias).repeat(outputs // 4))
    model.box_head = head.to(cls.fc6.weight.device)
    model.box_head_kind = kind
    model.hparams["box_head"] = kind
    return model
