"""The gpu pipeline (bytes in the workers, decode + windows on the device), run on the CPU
device: same windows and targets as the cpu pipeline, same bad samples, prefetching."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch.testing import assert_close
from torchvision.ops import roi_align

from vgglocal.data.device import (
    DevicePrefetcher,
    DeviceWindows,
    resample_windows,
    to_device,
    window_coords,
)
from vgglocal.data.encoded import EncodedDataset, collate_encoded, jpeg_header
from vgglocal.data.loader import BadSampleTracker, SampleDataset, build_loader, collate
from vgglocal.data.records import Sample
from vgglocal.data.transforms import PCALighting, TrainTransform

CROP = 32
STD = (60.0, 55.0, 50.0)


def transform(scales=None):
    return TrainTransform(CROP, scales or list(range(32, 57)), True, PCALighting([50.0, 5.0, 1.0], np.eye(3), 0.1),
                          (120.0, 115.0, 100.0), STD)


def photo(rng, h, w):
    """Smooth colour fields with edges (JPEG-friendly, unlike white noise)."""
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([128 + 90 * np.sin(xx / (5 + 3 * c) + yy / (7 + c) + rng.uniform(0, 6)) for c in range(3)], -1)
    img[h // 4:h // 2, w // 3:w // 2] = rng.integers(0, 256, 3)
    return img.clip(0, 255).astype(np.uint8)


def make_records(folder, n=10, kinds=None):
    """JPEGs of varied sizes with one box each; ``kinds[i]`` turns file i into a special case."""
    rng = np.random.default_rng(0)
    kinds = kinds or {}
    records = []
    for i in range(n):
        h, w = 40 + 7 * (i % 4), 44 + 9 * (i % 5)
        path = folder / f"img_{i}.JPEG"
        img = photo(rng, h, w)
        kind = kinds.get(i, "jpeg")
        if kind == "png":
            Image.fromarray(img).save(path, format="PNG")
        elif kind == "gray":
            Image.fromarray(img[..., 0]).save(path, format="JPEG", quality=90)
        elif kind == "cmyk":
            Image.fromarray(img).convert("CMYK").save(path, format="JPEG", quality=90)
        elif kind == "progressive":
            Image.fromarray(img).save(path, format="JPEG", quality=90, progressive=True)
        else:
            Image.fromarray(img).save(path, format="JPEG", quality=90)
        if kind == "truncated":
            path.write_bytes(path.read_bytes()[:300])
        elif kind == "corrupt":  # the end-of-image marker is there, the scan data is not valid
            data = bytearray(path.read_bytes())
            data[400:420] = b"\xff" * 20
            path.write_bytes(bytes(data))
        elif kind == "missing":
            path.unlink()
        box = np.array([[3 + i, 4, w - 5, h - 3 - i]], np.float32)
        records.append(Sample(str(path), i % 3, box, np.array([i % 3]), (h, w), str(i)))
    return records


def test_resample_equals_roi_align_on_each_image():
    # torchvision's roi_align (aligned, one sample per bin) is the reference for the ragged gather.
    rng = np.random.default_rng(1)
    sizes = [(37, 50), (64, 41), (20, 90)]
    images = [torch.from_numpy(rng.integers(0, 256, (3, h, w), dtype=np.uint8)) for h, w in sizes]
    flat = torch.cat([im.reshape(-1) for im in images])
    image_size = torch.tensor(sizes)
    starts = torch.tensor([0, 3 * 37 * 50, 3 * (37 * 50 + 64 * 41)])
    resized = torch.tensor([[40, 54], [70, 45], [32, 144]])
    origin = torch.tensor([[3.0, 5.0], [0.0, 38.0], [100.0, 0.0]])
    flipped = torch.tensor([False, True, False])
    xs, ys = window_coords(origin, resized, image_size, flipped, 24)
    for layout in (False, True):
        got = resample_windows(flat, starts, image_size, xs, ys, channels_last=layout)
        assert got.shape == (3, 3, 24, 24) and got.is_contiguous(memory_format=torch.channels_last) == layout
        for n, im in enumerate(images):
            fy, fx = sizes[n][0] / resized[n, 0].item(), sizes[n][1] / resized[n, 1].item()
            x0, y0 = origin[n].tolist()
            box = torch.tensor([[0, x0 * fx, y0 * fy, (x0 + 24) * fx, (y0 + 24) * fy]], dtype=torch.float64)
            ref = roi_align(im[None].double(), box, 24, spatial_scale=1.0, sampling_ratio=1, aligned=True)[0]
            if flipped[n]:
                ref = ref.flip(-1)
            assert_close(got[n].double(), ref, atol=1e-3, rtol=0)


def device_batch(records, indices, epoch=1, seed=5, scales=None):
    ds = EncodedDataset(records, transform(scales), "loc", seed=seed)
    windows = DeviceWindows("cpu", CROP)
    return windows(collate_encoded([ds[(epoch, i)] for i in indices])), windows


def test_gpu_pipeline_on_cpu_matches_the_cpu_pipeline(tmp_path):
    records = make_records(tmp_path, n=10, kinds={3: "png", 6: "gray", 8: "cmyk"})
    cpu = SampleDataset(records, transform(), "loc", seed=5)
    ref = to_device(collate([cpu[(1, i)] for i in range(10)]), torch.device("cpu"))
    got, windows = device_batch(records, range(10))
    assert windows.counts == {"device": 7, "worker": 3, "host_fallback": 0}
    for key in ("label", "target", "target_label", "index", "origin", "scale", "flipped"):
        assert torch.equal(got[key], ref[key]), key  # same (seed, epoch, index): the same windows
    assert 0 < int(got["flipped"].sum()) < 10
    assert got["image"].shape == ref["image"].shape == (10, 3, CROP, CROP) and got["image"].dtype == torch.float32
    # Within interpolation tolerance: OpenCV's fixed-point bilinear vs a float gather, in pixel units.
    diff = (got["image"] - ref["image"]) * torch.tensor(STD)[None, :, None, None]
    assert diff.abs().max() <= 1.5 and diff.abs().mean() < 0.5


def test_gpu_pipeline_channels_last_and_identity_scale(tmp_path):
    records = make_records(tmp_path, n=4)
    cpu = SampleDataset(records, transform([40]), "cls", seed=0)
    ref = to_device(collate([cpu[(0, i)] for i in (0, 4 % 4)]), torch.device("cpu"))
    ds = EncodedDataset(records, transform([40]), "cls", seed=0)
    got = DeviceWindows("cpu", CROP, channels_last=True)(collate_encoded([ds[(0, 0)], ds[(0, 0)]]))
    assert got["image"].is_contiguous(memory_format=torch.channels_last)
    # Image 0 is 40 px high: S = 40 keeps it at its stored size, the window is a plain crop.
    assert_close(got["image"], ref["image"], atol=1e-4, rtol=0)


def test_bad_files_are_skipped_and_counted_as_in_the_cpu_pipeline(tmp_path):
    kinds = {1: "truncated", 2: "corrupt", 4: "missing", 5: "png"}
    records = make_records(tmp_path, n=8, kinds=kinds)
    (tmp_path / "img_7.JPEG").write_bytes(b"not an image at all")
    cpu = build_loader(SampleDataset(records, transform(), "loc", seed=2), 4, shuffle=False, seed=2)
    ds = EncodedDataset(records, transform(), "loc", seed=2)
    windows = DeviceWindows("cpu", CROP)
    gpu = DevicePrefetcher(build_loader(ds, 4, shuffle=False, seed=2, collate_fn=collate_encoded), windows, "cpu")
    a, b = list(cpu), list(gpu)
    assert [x["size"] for x in a] == [x["size"] for x in b] == [2, 2]
    for x, y in zip(a, b, strict=True):
        assert sorted(x["bad"]) == sorted(y["bad"])  # same files, same messages
        assert torch.equal(x["index"], y["index"]) and torch.equal(x["target"], y["target"])
    assert {p for x in b for p, _ in x["bad"]} == {records[i].path for i in (1, 2, 4, 7)}
    # The corrupt file passed the header check and was refused by the decoder, then by Pillow.
    assert windows.counts["worker"] == 1 and windows.counts["device"] == 3
    trackers = [BadSampleTracker(0.5, min_seen=1) for _ in range(2)]
    for t, batches in zip(trackers, (a, b), strict=True):
        for batch in batches:
            t.update(batch)
    assert (trackers[0].seen, trackers[0].bad) == (trackers[1].seen, trackers[1].bad) == (8, 4)


def test_header_probe_sends_only_plain_jpegs_to_the_device(tmp_path):
    records = make_records(tmp_path, n=5, kinds={1: "png", 2: "gray", 3: "cmyk", 4: "truncated"})
    got = [jpeg_header(open(r.path, "rb").read()) for r in records]
    assert got == [((40, 44), (40, 44), 1), None, None, None, None]


def test_prefetcher_yields_every_batch_in_order_and_forwards_set_epoch(tmp_path):
    records = make_records(tmp_path, n=6)
    loader = build_loader(EncodedDataset(records, transform(), "cls", seed=0), 2, shuffle=True, seed=0,
                          collate_fn=collate_encoded)
    pre = DevicePrefetcher(loader, DeviceWindows("cpu", CROP), "cpu")
    pre.set_epoch(1, 1)
    assert len(pre) == 2 and pre.batches_per_epoch == 3
    got = [b["index"].tolist() for b in pre]
    loader.set_epoch(1, 1)
    assert got == [b["index"].tolist() for b in loader]


@pytest.mark.parametrize("workers", [0, 2])
def test_gpu_pipeline_items_are_the_same_in_workers(tmp_path, workers):
    records = make_records(tmp_path, n=6, kinds={2: "png"})
    ds = EncodedDataset(records, transform(), "loc", seed=3)
    loader = build_loader(ds, 3, shuffle=True, seed=3, epoch=2, workers=workers, collate_fn=collate_encoded)
    for batch in loader:
        for row, i in enumerate(batch["index"].tolist()):
            item = ds[(2, i)]
            assert torch.equal(batch["target"][row], item["target"]) and torch.equal(batch["shift"][row], item["shift"])


def test_large_jpegs_take_the_cpu_pipelines_reduced_geometry(tmp_path):
    # 260 px short side, S <= 40: the cpu pipeline decodes at 1/4 (libjpeg DCT scaling); the
    # device decodes fully and box-reduces by 4, drawing the same windows on the same size.
    rng = np.random.default_rng(3)
    records = []
    for i, (h, w) in enumerate([(260, 300), (333, 261), (90, 84)]):
        path = tmp_path / f"big_{i}.JPEG"
        Image.fromarray(photo(rng, h, w)).save(path, quality=95)
        records.append(Sample(str(path), 0, np.array([[20, 30, w - 40, h - 10]], np.float32), np.array([0]), (h, w), str(i)))
    header = jpeg_header(open(records[0].path, "rb").read(), 40)
    assert header.size == (260, 300) and header.factor == 4 and header.decoded == (65, 75)
    cpu = SampleDataset(records, transform(list(range(32, 41))), "loc", seed=1)
    ref = to_device(collate([cpu[(0, i)] for i in range(3)]), torch.device("cpu"))
    got, _ = device_batch(records, range(3), epoch=0, seed=1, scales=list(range(32, 41)))
    for key in ("target", "origin", "scale", "flipped"):
        assert torch.equal(got[key], ref[key]), key
    diff = (got["image"] - ref["image"]) * torch.tensor(STD)[None, :, None, None]
    assert diff.abs().mean() < 2.0 and diff.abs().max() < 40  # DCT-domain scaling vs a box mean, at edges


def test_a_batch_travels_as_one_byte_buffer_plus_offsets(tmp_path):
    records = make_records(tmp_path, n=5, kinds={2: "png"})
    ds = EncodedDataset(records, transform(), "cls", seed=0)
    items = [ds[(0, i)] for i in range(5)]
    batch = collate_encoded(items)
    jpeg = batch["jpeg"]
    assert isinstance(jpeg.data, torch.Tensor) and jpeg.data.dtype == torch.uint8 and jpeg.data.ndim == 1
    assert jpeg.at == [0, 1, 3, 4] and jpeg.offsets.tolist()[0] == 0 and len(jpeg.offsets) == 5
    for view, i in zip(jpeg.views(), (0, 1, 3, 4), strict=True):
        assert view.untyped_storage().data_ptr() == jpeg.data.untyped_storage().data_ptr()  # a view, no copy
        assert view.numpy().tobytes() == open(records[i].path, "rb").read()
    # Every tensor of the batch is one shared-memory segment on its way from a worker: their
    # number does not depend on the batch size.
    big = collate_encoded([ds[(0, i % 5)] for i in range(40)])
    tensors = lambda b: [v for v in (*b.values(), b["jpeg"].data, b["jpeg"].offsets) if isinstance(v, torch.Tensor)]  # noqa: E731
    assert len(tensors(big)) == len(tensors(batch))


def _shared_memory_fds() -> int:
    """Open descriptors of this process that are PyTorch shared-memory segments."""
    import os

    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            n += "torch_" in os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed meanwhile (the listing's own descriptor)
            pass
    return n


@pytest.mark.skipif(not __import__("os").path.isdir("/proc/self/fd"), reason="needs /proc (Linux)")
def test_gpu_pipeline_open_descriptors_do_not_grow_with_the_batch(tmp_path):
    # Each tensor a worker sends holds one file descriptor in the main process while it lives
    # (torch.multiprocessing's file_descriptor strategy): one tensor per JPEG meant 64 more per
    # batch of 64, and a ulimit -n of 1024 ended the loader after a few batches.
    records = make_records(tmp_path, n=16)
    extra = {}
    for batch in (16, 64):
        ds = EncodedDataset([records[i % 16] for i in range(4 * batch)], transform(), "cls", seed=0)
        loader = build_loader(ds, batch, shuffle=False, seed=0, workers=2, prefetch_factor=1,
                              collate_fn=collate_encoded, persistent_workers=False)
        pipeline = DevicePrefetcher(loader, DeviceWindows("cpu", CROP), "cpu")
        base, peak, sizes = _shared_memory_fds(), 0, []
        for b in pipeline:
            peak = max(peak, _shared_memory_fds())
            sizes.append(b["size"])
        assert sizes == [batch] * 4
        extra[batch] = peak - base
    # Alive at once: the batch training and the one prepared (the prefetcher's), and one per
    # worker received (possibly out of order) or on its way; each a fixed number of tensors.
    one = collate_encoded([ds[(0, 0)]])
    per_batch = sum(isinstance(v, torch.Tensor) for v in one.values()) + 2  # + the jpeg buffer, offsets
    assert max(extra.values()) <= (2 + 2) * per_batch, extra


def test_progressive_jpegs_are_decoded_in_the_workers(tmp_path):
    # nvJPEG would Huffman-decode them on the host in the main process; the workers do it instead,
    # as the cpu pipeline would, and the device receives pixels.
    records = make_records(tmp_path, n=4, kinds={1: "progressive", 3: "progressive"})
    assert Image.open(records[1].path).info.get("progressive")
    assert jpeg_header(open(records[1].path, "rb").read()) is None
    assert jpeg_header(open(records[0].path, "rb").read()) is not None
    ds = EncodedDataset(records, transform(), "loc", seed=4)
    items = [ds[(0, i)] for i in range(4)]
    assert ["pixels" in x for x in items] == [False, True, False, True]
    got, windows = device_batch(records, range(4), epoch=0, seed=4)
    assert windows.counts == {"device": 2, "worker": 2, "host_fallback": 0}
    cpu = SampleDataset(records, transform(), "loc", seed=4)
    ref = to_device(collate([cpu[(0, i)] for i in range(4)]), torch.device("cpu"))
    for key in ("target", "origin", "scale", "flipped"):
        assert torch.equal(got[key], ref[key]), key
    diff = (got["image"] - ref["image"]) * torch.tensor(STD)[None, :, None, None]
    assert diff.abs().max() <= 1.5


def _cut_mid_scan(path, tail=b""):
    """Keep the file's header and the first half of its scan data, then ``tail``, then EOI."""
    data = path.read_bytes()
    mid = (data.find(b"\xff\xda") + len(data)) // 2
    path.write_bytes(data[:mid] + tail + b"\xff\xd9")


def test_jpegs_cut_short_with_an_end_marker_get_the_cpu_pipelines_verdict(tmp_path):
    import cv2

    records = make_records(tmp_path, n=6)
    # 1: cut mid-scan, random bytes with a stray marker (0xFF 0x3F), EOI: libjpeg refuses it.
    _cut_mid_scan(tmp_path / "img_1.JPEG", bytes(range(0x20, 0x60)) + b"\xff\x3f" + bytes(range(0x60, 0xA0)))
    # 2: cut mid-scan, EOI pasted on: libjpeg warns "premature end of data segment" and fills the
    # rest, so the cpu pipeline trains on it; nothing in the bytes says so without decoding.
    _cut_mid_scan(tmp_path / "img_2.JPEG")
    # 4: the same with restart markers (DRI): too few RSTn for the MCU count gives it away.
    path = tmp_path / "img_4.JPEG"
    cv2.imwrite(str(path), cv2.imread(str(path)), [cv2.IMWRITE_JPEG_QUALITY, 90, cv2.IMWRITE_JPEG_RST_INTERVAL, 2])
    assert jpeg_header(path.read_bytes()) is not None  # whole, with restart markers: for the device
    _cut_mid_scan(path)
    headers = [jpeg_header(open(r.path, "rb").read()) for r in records]
    assert [h is not None for h in headers] == [True, False, True, True, False, True]
    cpu = build_loader(SampleDataset(records, transform(), "loc", seed=6), 6, shuffle=False, seed=6)
    windows = DeviceWindows("cpu", CROP)
    gpu = DevicePrefetcher(build_loader(EncodedDataset(records, transform(), "loc", seed=6), 6, shuffle=False, seed=6,
                                        collate_fn=collate_encoded), windows, "cpu")
    (a,), (b,) = list(cpu), list(gpu)
    assert a["bad"] == b["bad"] and [p for p, _ in b["bad"]] == [records[1].path]  # same file, same message
    assert a["size"] == b["size"] == 5 and torch.equal(a["index"], b["index"])
    # The refused file never reached the device decoder (no device error, no host fallback).
    assert windows.counts == {"device": 4, "worker": 1, "host_fallback": 0}
