"""Typed, frozen configuration: YAML files, dotted ``--set`` overrides, validation, dump.

A config is a tree of frozen dataclasses (nanoGPT's ``GPTConfig``, pycls ``assert_cfg``).
The CLI loads it. The functions that wire a job from it take a :class:`Config` or one of its
sections: ``models.build``, the data readers, transforms and checks (``DataConfig``), the
engine's training and transfer runs, and the evaluation jobs. They pass plain arguments down:
model constructors and layers, losses, inference and box math never see a config.

This module imports no torch (``vgglocal --help`` loads it), which is why it is also the home
of every list of choices (below).

Defaults are the paper's ImageNet settings (section 3.1, Appendix A); the demo and test
configs override what a 2-core CPU needs and say why.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml

from vgglocal.errors import UserError

# Every list of choices has one home, here at the bottom of the layers: the config checks
# (_CHOICES), the readers, models, inference and transfer code and the CLI (which must not
# import torch for --help) all import these tuples rather than spell them again.
FORMATS = ("ilsvrc-kaggle", "ilsvrc", "voc", "coco", "caltech")  # data.format: the on-disk layouts read as distributed
TASKS = ("cls", "loc", "all")  # which records of a split: labelled / with boxes / every image
TRAIN_TASKS = ("cls", "loc")  # what a training run learns: classes, or boxes too (Appendix A)
CLS_PROTOCOLS = ("cls-dense", "cls-multicrop", "cls-both")  # section 3.2, Table 5
LOC_PROTOCOLS = ("center-crop", "full")  # Appendix A, protocols 1 and 2
PROTOCOLS = CLS_PROTOCOLS + LOC_PROTOCOLS
ILSVRC_METRICS = ("top1_cls_error", "top5_cls_error", "top1_loc_error", "top5_loc_error")  # vgglocal compare --metric
CLS_METHODS = ("dense", "multicrop", "both")  # the classification system of protocol 2
INITS = ("normal", "glorot", "kaiming")  # model.init: weight initialisation schemes
PIPELINES = ("cpu", "gpu")  # data.pipeline: where training images are decoded and augmented
PRECISIONS = ("fp32", "bf16")  # train/eval/transfer.precision (bf16: autocast)
DEVICES = ("auto", "cpu", "cuda")  # train/eval/transfer.device
SCHEDULES = ("plateau", "cosine")  # optim.schedule
REGRESSIONS = ("scr", "pcr")  # loc.regression: single-class / per-class box head (Appendix A)
FINETUNE_MODES = ("fc", "all")  # loc.finetune (Appendix A)
HEAD_BIASES = ("zero", "mean")  # loc.head_bias: the new box layer's bias
TRANSFER_PROTOCOLS = ("voc-cls", "caltech", "voc-action")  # transfer.protocol (Appendix B)
AGGREGATES = ("average", "stack")  # transfer.aggregate: combining per-scale descriptors (Appendix B)
EXPORT_FORMATS = ("onnx", "torchscript")  # `vgglocal export --format`
WEIGHT_FORMATS = ("torchvision", "caffe")  # `vgglocal import-weights --format`
SYNTH_LAYOUTS = ("ilsvrc", "caltech")  # `vgglocal data synth --layout`


class ConfigError(UserError):
    """A user error in a config file or override; the message names the key or value."""


@dataclass(frozen=True)
class ModelConfig:
    arch: str = "D"  # A, A-LRN, B, C, D, E (Table 1)
    width: float = 1.0  # multiplier on conv channels and on the FC width (not in the paper)
    fc_width: int = 0  # hidden FC width; 0 means round(4096 * width)
    crop: int = 224  # training crop; the first FC is a conv with kernel crop/32
    num_classes: int = 1000
    batch_norm: bool = False  # BN variant (not in the paper; torchvision's vgg*_bn)
    dropout: float = 0.5  # after FC6 and FC7 in training (section 3.1)
    # normal: N(0, init_std) weights, zero bias (section 3.1); glorot: Xavier uniform
    # (the authors' note); kaiming: He normal, which trains plain deep VGGs from scratch.
    init: str = "normal"
    init_std: float = 0.01
    init_from: str = ""  # trained net-A checkpoint: copy first four convs + last three FCs
    pretrained: str = ""  # any vgglocal checkpoint to start from (S=384 from S=256, ...)


@dataclass(frozen=True)
class DataConfig:
    format: str = "ilsvrc-kaggle"  # ilsvrc-kaggle | ilsvrc | voc | coco | caltech
    root: str = "data/ilsvrc"
    train_split: str = "train"
    val_split: str = "val"
    # Per-split paths, relative to root (or absolute); "" = the format's default location
    # (vgglocal/data/splits.py, ilsvrc.py, voc.py, coco.py). Annotations: the COCO instances
    # JSON, the Kaggle LOC_*_solution.csv, or the folder of XML boxes (ilsvrc, voc).
    train_annotations: str = ""
    val_annotations: str = ""
    train_images: str = ""
    val_images: str = ""
    devkit: str = ""  # ILSVRC devkit folder or meta_clsloc.mat/meta.mat (devkit class ids)
    classes: str = ""  # class list file, one "id [name]" per line; VOC default: the 20 classes
    # Training scale S (section 3.1): fixed when scale_max == 0, else jittered per image
    # uniformly from [scale_min, scale_max].
    scale: int = 256
    scale_min: int = 256
    scale_max: int = 0
    flip: bool = True
    color_pca: bool = True  # Krizhevsky's PCA lighting noise
    pca_std: float = 0.1
    # Normalisation in 0..255 pixel units: (x - mean) / std. The paper subtracts the mean
    # RGB only (std 1); torchvision's ImageNet weights also divide by the std.
    stats: str = ""  # JSON from `vgglocal data stats`; overrides mean/eig when set
    mean: tuple[float, ...] = (123.68, 116.779, 103.939)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    # ImageNet RGB PCA (Krizhevsky et al. 2012, as used by fb.resnet.torch), in 0..255 units.
    eigval: tuple[float, ...] = (55.46, 4.794, 1.148)
    eigvec: tuple[tuple[float, ...], ...] = (
        (-0.5675, 0.7192, 0.4009),
        (-0.5808, -0.0045, -0.8140),
        (-0.5836, -0.6948, 0.4203),
    )
    # Where training images are decoded and augmented. cpu: Pillow + OpenCV in the loader's
    # workers. gpu: workers read file bytes only; JPEGs are decoded on the training device in
    # batches (nvJPEG) and cropped, resized, flipped and normalised there (vgglocal/data/device.py).
    pipeline: str = "cpu"
    workers: int = 4
    pin_memory: bool = True
    persistent_workers: bool = True
    prefetch_factor: int = 2  # batches each loader worker prepares ahead (DataLoader's prefetch_factor)
    max_bad_fraction: float = 0.01  # more bad samples than this stops a run (a bad sample is skipped and counted)
    # Image header bounds, checked before decoding (vgglocal/data/images.py): larger images are
    # bad samples. 40 Mpx is twice ILSVRC's largest photographs and a quarter of a 169-Mpx bomb;
    # 20:1 is past any real panorama, before a 1 x 4000 strip that rescales to S x 4000 S.
    max_pixels: int = 40_000_000
    max_aspect: float = 20.0
    limit: int = 0  # use only N records of each split, evenly spaced so every class appears (0: all)


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 0.01  # section 3.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    lr_decay: float = 0.1  # divide by 10 when validation error stops improving
    patience: int = 2  # epochs without improvement before a decrease
    max_decreases: int = 3  # the paper decreased three times, then stopped
    warmup_epochs: float = 0.0  # linear warm-up (not in the paper; helps tiny nets)
    # plateau: the paper's (section 3.1). cosine: the rate falls from lr to 0 over train.epochs
    # (not in the paper; a fixed minutes-long budget, configs/demo/cls.yaml).
    schedule: str = "plateau"


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 74  # the paper stopped at 370K iterations of batch 256 (74 epochs)
    batch_size: int = 256  # global, split across processes
    grad_accum: int = 1  # micro-batches per step when the batch does not fit
    precision: str = "fp32"  # fp32 | bf16 (autocast)
    channels_last: bool = False
    compile: bool = False
    # Under DDP, batch-norm statistics over the whole global batch (torch.nn.SyncBatchNorm;
    # torchvision references' --sync-bn). CUDA only. Plain BN normalises per process.
    sync_bn: bool = False
    cudnn_benchmark: bool = True
    checkpoint_every: int = 0  # also save last.pt every N steps (0: each epoch only)
    log_every: int = 20  # steps between progress updates and metrics.jsonl "step" lines
    tensorboard: bool = False  # also write metrics.jsonl's scalars as TensorBoard events (RUN/tensorboard/)
    quiet: bool = False  # no progress bar (also without a terminal): plain log lines
    device: str = "auto"  # auto | cpu | cuda
    # Minutes a process waits in a collective (and in process-group setup) for its peers before
    # it fails: how long a stopped peer can block the others under torchrun.
    dist_timeout: float = 30.0


@dataclass(frozen=True)
class LocConfig:
    regression: str = "pcr"  # scr: 4 outputs; pcr: 4 per class (Appendix A)
    finetune: str = "all"  # fc: FC6, FC7 and the new layer; all: every layer
    init: str = ""  # classification checkpoint
    head_init_std: float = 0.001  # the new last layer
    # Bias of the new last layer: "zero" (the paper's plain random layer) or "mean", the mean
    # training target (cx, cy, w, h), so regression starts at the mean box instead of a point
    # at the window corner (not in the paper; helps small nets, see configs/demo/loc.yaml).
    head_bias: str = "zero"
    # Joint training (not in the paper, which trains localisation apart from classification):
    # the class head trains too, on the crop's ground-truth class, with loss
    # box_loss + cls_weight * cross-entropy, so an all-layers localiser keeps a usable class head.
    joint: bool = False
    cls_weight: float = 1.0


@dataclass(frozen=True)
class EvalConfig:
    protocol: str = "full"  # cls-dense | cls-multicrop | cls-both | center-crop | full
    # Test scales Q. Empty: the paper's rule from each checkpoint's training scale (section 4.2):
    # fixed S → {S-32, S, S+32}, jittered [Smin, Smax] → {Smin, (Smin+Smax)/2, Smax};
    # center-crop uses S (or (Smin+Smax)/2). `vgglocal eval --scales` sets them per checkpoint.
    scales: tuple[int, ...] = ()
    flip: bool = True  # also the mirror image (dense, multi-crop, full)
    batch_size: int = 32  # images per chunk (dense: per forward pass of one size group)
    # Greedy-merge threshold (match score, vgglocal.inference.merge). Provisional: chosen by
    # `tools/choose-merge-threshold` on the generated set's validation split once a demo model
    # is trained (docs/metrics.md, "Greedy merge").
    merge_threshold: float = 1.0
    score_floor: float = 0.01  # detections below this score are neither written nor scored
    topk: int = 5  # guesses per image (ILSVRC: 5)
    det_topk: int = 5  # labels per image whose merged boxes become detections (full protocol)
    cls_method: str = "dense"  # classification system of the full protocol: dense | multicrop | both
    precision: str = "fp32"
    channels_last: bool = False  # channels_last memory format for the convolutions
    compile: bool = False  # torch.compile the nets' conv trunks (dynamic shapes: one graph for all sizes; heads eager)
    # Batch norm folded into the convolution before it (the same maps within float32 rounding,
    # one pass over each activation fewer; a net without batch norm is unchanged).
    fold_bn: bool = True
    # Loader processes that decode the validation images ahead of the network (0: in the main
    # process; -1: data.workers). With CUDA the batches reach the device from pinned memory.
    workers: int = -1
    device: str = "auto"  # auto | cpu | cuda


@dataclass(frozen=True)
class TransferConfig:
    """Appendix B: very deep features (FC7, densely applied) and linear SVMs on other data sets."""

    protocol: str = "voc-cls"  # voc-cls | caltech | voc-action
    # Test scales Q of the descriptor. Appendix B: VOC averages Q in {256, 384, 512, 640, 768};
    # Caltech stacks Q in {256, 384, 512}.
    scales: tuple[int, ...] = (256, 384, 512)
    aggregate: str = "average"  # average | stack the per-scale descriptors
    flip: bool = True  # average with the mirror image's descriptor
    svm_c: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0, 100.0)  # LinearSVC C candidates
    val_fraction: float = 0.2  # held out of the training data to choose C (Appendix B)
    splits: int = 3  # Caltech: random splits
    train_per_class: int = 30  # Caltech-101: 30; Caltech-256: 60
    test_per_class: int = 50  # Caltech-101: at most 50; Caltech-256: 0 (all the others)
    batch_size: int = 8  # images per forward pass (mirrors ride along)
    workers: int = 2  # processes decoding images
    precision: str = "fp32"
    device: str = "auto"  # auto | cpu | cuda


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    loc: LocConfig = field(default_factory=LocConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    seed: int = 0
    name: str = ""


# ----------------------------------------------------------------------------- coercion


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; convert lists to tuples, ints to floats."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option, key)
            except ConfigError:
                pass
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            value = [value] if not isinstance(value, (str, dict)) else value
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        inner = args[0] if args else Any
        return tuple(_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value))
    if tp is Any:
        return value
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{key}: expected null, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads `1e-3` (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # YAML reads `scales: 384` or `root: 2012` as numbers
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported type {_type_name(tp)}")


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        where = prefix or "config"
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    hints = _hints(cls)
    names = [f.name for f in fields(cls)]
    kwargs = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in hints:
            raise ConfigError(f"unknown config key {dotted!r}; valid keys: {', '.join(names)}")
        tp = hints[key]
        if is_dataclass(tp):
            kwargs[key] = _build(tp, value if value is not None else {}, f"{dotted}.")
        else:
            kwargs[key] = _coerce(value, tp, dotted)
    return cls(**kwargs)


def from_dict(data: dict[str, Any]) -> Config:
    """Build and validate a :class:`Config` from nested plain data (missing keys: defaults)."""
    cfg = _build(Config, data or {}, "")
    validate(cfg)
    return cfg


def to_dict(cfg: Any) -> dict[str, Any]:
    """Nested plain data (lists, not tuples) that ``from_dict`` reads back."""

    def plain(v: Any) -> Any:
        if is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    return plain(cfg)


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected key=value, e.g. optim.lr=0.001")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {item!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Apply ``a.b=value`` strings (values parsed as YAML) to nested plain data, in order."""
    data = dict(data)
    for item in overrides:
        path, value = _parse_override(item)
        node = data
        cls: Any = Config
        for i, part in enumerate(path):
            hints = _hints(cls)
            dotted = ".".join(path[: i + 1])
            if part not in hints:
                valid = ", ".join(f.name for f in fields(cls))
                raise ConfigError(f"unknown config key {dotted!r}; valid keys: {valid}")
            if i == len(path) - 1:
                if is_dataclass(hints[part]):
                    raise ConfigError(f"{dotted} is a section; set one of its keys")
                node[part] = value
            else:
                if not is_dataclass(hints[part]):
                    raise ConfigError(f"{'.'.join(path[:i + 1])} is not a section")
                child = dict(node.get(part) or {})
                node[part] = child
                node, cls = child, hints[part]
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML config (or start from defaults), apply overrides, validate."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            data = yaml.safe_load(p.read_bytes().decode("utf-8")) or {}
        except UnicodeDecodeError as e:
            line = e.object[:e.start].count(b"\n") + 1
            raise ConfigError(f"{p}:{line}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); "
                              "save the config as UTF-8") from None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f":{mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{p}{where}: not valid YAML") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: expected a mapping of sections at the top level")
        data.setdefault("name", p.stem)
    data = apply_overrides(data, list(overrides))
    try:
        return from_dict(data)
    except ConfigError as e:
        if path is not None:
            raise ConfigError(f"{path}: {e}") from None
        raise


def dump_config(cfg: Config, path: str | Path | None = None) -> str:
    """The resolved config as YAML; also written to ``path`` when given."""
    text = yaml.safe_dump(to_dict(cfg), sort_keys=False)
    if path is not None:
        Path(path).write_text(text)
    return text


def replace(cfg: Any, **changes: Any) -> Any:
    """``dataclasses.replace`` for nested configs: ``replace(cfg, **{"optim.lr": 0.1})``."""
    data = to_dict(cfg)
    return from_dict(apply_overrides(data, [f"{k}={yaml.safe_dump(v).strip()}" for k, v in changes.items()]))


_CHOICES = {
    "model.init": INITS,
    "data.format": FORMATS,
    "data.pipeline": PIPELINES,
    "optim.schedule": SCHEDULES,
    "train.precision": PRECISIONS,
    "train.device": DEVICES,
    "loc.regression": REGRESSIONS,
    "loc.finetune": FINETUNE_MODES,
    "loc.head_bias": HEAD_BIASES,
    "eval.precision": PRECISIONS,
    "eval.protocol": PROTOCOLS,
    "eval.cls_method": CLS_METHODS,
    "eval.device": DEVICES,
    "transfer.protocol": TRANSFER_PROTOCOLS,
    "transfer.aggregate": AGGREGATES,
    "transfer.precision": PRECISIONS,
    "transfer.device": DEVICES,
}


@dataclass(frozen=True)
class Range:
    """An allowed interval for a numeric key (every value must also be finite)."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, v: float) -> bool:
        if not math.isfinite(v):
            return False
        above = v > self.low if self.low_open else v >= self.low
        below = v < self.high if self.high_open else v <= self.high
        return above and below

    def __str__(self) -> str:
        if self.high == math.inf:
            if self.low == -math.inf:
                return "a finite number"
            if self.low == 0:
                return "positive" if self.low_open else "non-negative (>= 0)"
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        lo, hi = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"in {lo}{self.low:g}, {self.high:g}{hi}"


FINITE = Range()
POSITIVE = Range(0, low_open=True)
NON_NEGATIVE = Range(0)
AT_LEAST_1 = Range(1)
FRACTION = Range(0, 1)

# The range of every numeric key (for lists: of each element), checked by `validate`. A test
# fails for a numeric key missing here, so a new key gets its range in this one place.
RANGES: dict[str, Range] = {
    "model.width": Range(0, 16, low_open=True),
    "model.fc_width": NON_NEGATIVE,
    "model.crop": AT_LEAST_1,
    "model.num_classes": AT_LEAST_1,
    "model.dropout": Range(0, 1, high_open=True),
    "model.init_std": POSITIVE,
    "data.scale": AT_LEAST_1,
    "data.scale_min": AT_LEAST_1,
    "data.scale_max": NON_NEGATIVE,
    "data.pca_std": NON_NEGATIVE,
    "data.mean": FINITE,
    "data.std": POSITIVE,
    "data.eigval": NON_NEGATIVE,
    "data.eigvec": FINITE,
    "data.workers": NON_NEGATIVE,
    "data.prefetch_factor": AT_LEAST_1,
    "data.max_bad_fraction": FRACTION,
    "data.limit": NON_NEGATIVE,
    "data.max_pixels": AT_LEAST_1,
    "data.max_aspect": AT_LEAST_1,
    "optim.lr": POSITIVE,
    "optim.momentum": Range(0, 1, high_open=True),
    "optim.weight_decay": NON_NEGATIVE,
    "optim.lr_decay": Range(0, 1, low_open=True),
    "optim.patience": NON_NEGATIVE,
    "optim.max_decreases": NON_NEGATIVE,
    "optim.warmup_epochs": NON_NEGATIVE,
    "train.epochs": AT_LEAST_1,
    "train.batch_size": AT_LEAST_1,
    "train.grad_accum": AT_LEAST_1,
    "train.checkpoint_every": NON_NEGATIVE,
    "train.log_every": NON_NEGATIVE,
    "train.dist_timeout": POSITIVE,
    "loc.head_init_std": POSITIVE,
    "loc.cls_weight": POSITIVE,
    "eval.scales": AT_LEAST_1,
    "eval.batch_size": AT_LEAST_1,
    "eval.merge_threshold": NON_NEGATIVE,
    "eval.score_floor": FRACTION,
    "eval.topk": AT_LEAST_1,
    "eval.det_topk": AT_LEAST_1,
    "eval.workers": Range(-1),  # -1: data.workers
    "transfer.scales": AT_LEAST_1,
    "transfer.svm_c": POSITIVE,
    "transfer.val_fraction": Range(0, 1, low_open=True, high_open=True),
    "transfer.splits": AT_LEAST_1,
    "transfer.train_per_class": AT_LEAST_1,
    "transfer.test_per_class": NON_NEGATIVE,
    "transfer.batch_size": AT_LEAST_1,
    "transfer.workers": NON_NEGATIVE,
    "seed": Range(0, 2**62),  # torch and numpy generators take non-negative seeds (+ epoch, rank)
}


def _numbers(value: Any) -> list[float]:
    if isinstance(value, (list, tuple)):
        return [x for v in value for x in _numbers(v)]
    return [value] if isinstance(value, (int, float)) and not isinstance(value, bool) else []


def _check_ranges(cfg: Config) -> None:
    for dotted, allowed in RANGES.items():
        node: Any = cfg
        for part in dotted.split("."):
            node = getattr(node, part)
        bad = [v for v in _numbers(node) if v not in allowed]
        if bad:
            shown = list(node) if isinstance(node, tuple) else node
            raise ConfigError(f"{dotted}: {shown!r} must be {allowed}" + (" (each value)" if isinstance(node, tuple) else ""))


def validate(cfg: Config) -> None:
    """Ranges of every numeric key (:data:`RANGES`), then cross-field checks; each failure
    names the key and the value."""
    _check_ranges(cfg)

    for dotted, choices in _CHOICES.items():
        section, key = dotted.split(".")
        value = getattr(getattr(cfg, section), key)
        if value not in choices:
            raise ConfigError(f"{dotted}: {value!r} is not one of {', '.join(choices)}")
    if cfg.model.crop <= 0 or cfg.model.crop % 32:
        raise ConfigError(f"model.crop: {cfg.model.crop} must be a positive multiple of 32")
    d = cfg.data
    if len(d.mean) != 3 or len(d.std) != 3 or len(d.eigval) != 3:
        raise ConfigError("data.mean, data.std and data.eigval need three values (R, G, B)")
    if len(d.eigvec) != 3 or any(len(r) != 3 for r in d.eigvec):
        raise ConfigError("data.eigvec must be a 3x3 matrix")
    if d.scale_max and d.scale_max < d.scale_min:
        raise ConfigError(f"data.scale_max: {d.scale_max} is below data.scale_min {d.scale_min}")
    low, key = (d.scale_min, "data.scale_min") if d.scale_max else (d.scale, "data.scale")
    if low < cfg.model.crop:
        raise ConfigError(f"{key}: {low} is below model.crop {cfg.model.crop}")
    t = cfg.transfer
    if not t.scales:
        raise ConfigError("transfer.scales: give one or more sizes")
    if not t.svm_c:
        raise ConfigError("transfer.svm_c: give one or more C values")


def fields_reference() -> list[tuple[str, str, Any]]:
    """(dotted key, type, default) for every key: docs/configuration.md's table."""
    rows: list[tuple[str, str, Any]] = []

    def walk(cls: type, prefix: str) -> None:
        hints = _hints(cls)
        for f in fields(cls):
            tp = hints[f.name]
            if is_dataclass(tp):
                walk(tp, f"{prefix}{f.name}.")
            else:
                default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
                rows.append((f"{prefix}{f.name}", _type_name(tp), default))

    walk(Config, "")
    return rows
