"""Loader: reproducible per (seed, epoch, index), resumable, rank-sharded, robust to bad files."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DistributedSampler

from vgglocal.data.loader import (
    BadSampleTracker,
    SampleDataset,
    ShardedBatchSampler,
    TooManyBadSamples,
    build_loader,
    collate,
)
from vgglocal.data.records import Sample
from vgglocal.data.transforms import PCALighting, TrainTransform
from vgglocal.errors import UserError

CROP = 32


def make_records(folder, n=12, bad=()):
    """n small JPEGs (sizes vary) with one box each; indices in ``bad`` are truncated files."""
    rng = np.random.default_rng(0)
    records = []
    for i in range(n):
        h, w = 40 + 4 * (i % 3), 48 + 5 * (i % 4)
        path = folder / f"img_{i}.JPEG"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path, quality=90)
        if i in bad:
            path.write_bytes(path.read_bytes()[:200])  # truncated JPEG
        box = np.array([[4 + i, 5, w - 3, h - 2 - i]], np.float32)
        records.append(Sample(str(path), i % 3, box, np.array([i % 3]), (h, w), str(i)))
    return records


def transform():
    return TrainTransform(CROP, list(range(32, 49)), True, PCALighting([50.0, 5.0, 1.0], np.eye(3), 0.1),
                          (120.0, 115.0, 100.0), (60.0, 60.0, 60.0))


def batches(loader):
    return [{k: v for k, v in b.items()} for b in loader]


def test_items_depend_only_on_seed_epoch_index_and_not_on_workers(tmp_path):
    ds = SampleDataset(make_records(tmp_path), transform(), "loc", seed=3)
    item = ds[(1, 5)]
    assert item["image"].shape == (3, CROP, CROP) and item["image"].dtype == torch.uint8
    assert item["shift"].shape == (3,) and item["std"].tolist() == [60.0, 60.0, 60.0]
    assert item["label"].dtype == torch.int64 and item["index"].item() == 5
    assert item["target"].shape == (4,) and item["target_label"].item() == 5 % 3
    assert torch.equal(ds[(1, 5)]["image"], item["image"])
    ds.set_epoch(1)
    assert torch.equal(ds[5]["image"], item["image"])
    assert not torch.equal(ds[(2, 5)]["image"], item["image"])
    assert not torch.equal(SampleDataset(ds.records, transform(), "loc", seed=4)[(1, 5)]["image"], item["image"])

    kw = dict(shuffle=True, seed=3, epoch=1)
    serial = batches(build_loader(ds, 4, workers=0, **kw))
    parallel = batches(build_loader(ds, 4, workers=2, **kw))
    assert len(serial) == len(parallel) == 3
    for a, b in zip(serial, parallel, strict=True):
        assert torch.equal(a["index"], b["index"])
        for key in ("image", "label", "target", "target_label", "origin", "scale", "flipped"):
            assert torch.equal(a[key], b[key]), key
    # The loader's item is the dataset's item for that (epoch, index).
    first = serial[0]
    assert torch.equal(first["image"][0], ds[(1, int(first["index"][0]))]["image"])


def test_persistent_workers_follow_set_epoch(tmp_path):
    ds = SampleDataset(make_records(tmp_path, n=6), transform(), "cls", seed=1)
    loader = build_loader(ds, 3, shuffle=True, seed=1, workers=2, persistent_workers=True)
    epoch0 = batches(loader)
    loader.set_epoch(1)
    epoch1 = batches(loader)
    fresh = batches(build_loader(SampleDataset(ds.records, transform(), "cls", seed=1), 3, shuffle=True, seed=1, epoch=1))
    for a, b in zip(epoch1, fresh, strict=True):
        assert torch.equal(a["index"], b["index"]) and torch.equal(a["image"], b["image"])
    assert not torch.equal(torch.cat([b["index"] for b in epoch0]), torch.cat([b["index"] for b in epoch1]))
    assert torch.equal(epoch1[0]["target"], torch.zeros(3, 4))  # task "cls"


class CountingDataset(torch.utils.data.Dataset):
    def __init__(self, n):
        self.n, self.calls = n, []

    def __len__(self):
        return self.n

    def __getitem__(self, key):
        self.calls.append(key)
        epoch, index = key
        return {"index": torch.tensor(index), "epoch": torch.tensor(epoch)}


def test_start_batch_gives_the_tail_of_the_epoch_without_loading_the_head():
    full_ds, tail_ds = CountingDataset(23), CountingDataset(23)
    full = [b["index"].tolist() for b in build_loader(full_ds, 4, shuffle=True, seed=9, epoch=2)]
    loader = build_loader(tail_ds, 4, shuffle=True, seed=9, epoch=2, start_batch=3)
    assert len(loader) == 3 and loader.batches_per_epoch == 6
    tail = [b["index"].tolist() for b in loader]
    assert tail == full[3:]
    assert sorted(k[1] for k in tail_ds.calls) == sorted(i for b in full[3:] for i in b)
    assert {k[0] for k in tail_ds.calls} == {2}
    # The next epoch starts from its first batch again.
    loader.set_epoch(3)
    assert len([b for b in loader]) == 6
    assert sorted(i for b in full for i in b) == list(range(23))


def test_two_ranks_cover_the_data_set_like_distributed_sampler():
    n = 11
    for shuffle in (True, False):
        shards = []
        for rank in range(2):
            s = ShardedBatchSampler(n, 4, shuffle=shuffle, seed=5, epoch=3, rank=rank, world_size=2)
            ref = DistributedSampler(range(n), num_replicas=2, rank=rank, shuffle=shuffle, seed=5)
            ref.set_epoch(3)
            assert s.indices() == list(ref)
            keys = [k for b in s for k in b]
            assert len(keys) == 6 and {e for e, _ in keys} == {3}
            shards.append([i for _, i in keys])
        assert set(shards[0]) | set(shards[1]) == set(range(n))
        assert len(shards[0]) + len(shards[1]) == 12  # padded by one repeated sample
    # Two ranks at batch B/2 see, step by step, the samples one process sees at batch B, so
    # gradient averaging reproduces single-process training (section 3.1).
    single = list(ShardedBatchSampler(16, 4, shuffle=True, seed=2, epoch=1, rank=0, world_size=1))
    halves = [list(ShardedBatchSampler(16, 2, shuffle=True, seed=2, epoch=1, rank=r, world_size=2)) for r in range(2)]
    assert len(single) == len(halves[0]) == len(halves[1]) == 4
    for step, keys in enumerate(single):
        assert sorted(keys) == sorted(halves[0][step] + halves[1][step])
    with pytest.raises(ValueError, match="rank"):
        ShardedBatchSampler(n, 4, shuffle=True, seed=0, rank=2, world_size=2)


def test_bad_image_is_skipped_and_reported_rest_of_batch_intact(tmp_path):
    records = make_records(tmp_path, n=8, bad={2})
    ds = SampleDataset(records, transform(), "loc", seed=0)
    got = batches(build_loader(ds, 4, shuffle=False, seed=0))
    assert [b["size"] for b in got] == [3, 4]
    assert len(got[0]["bad"]) == 1 and got[1]["bad"] == []
    path, message = got[0]["bad"][0]
    assert path == records[2].path and records[2].path in message
    assert got[0]["index"].tolist() == [0, 1, 3]
    for row, i in enumerate([0, 1, 3]):
        item = ds[(0, i)]
        assert torch.equal(got[0]["image"][row], item["image"]) and torch.equal(got[0]["target"][row], item["target"])
    tracker = BadSampleTracker(max_fraction=0.01, min_seen=100)
    assert sum(tracker.update(b) for b in got) == 1 and (tracker.seen, tracker.bad) == (8, 1)


def test_loc_sample_without_a_box_of_its_class_is_bad(tmp_path):
    records = make_records(tmp_path, n=3)
    records[1] = Sample(records[1].path, 2, records[1].boxes, np.array([0]), records[1].size)
    batch = collate([SampleDataset(records, transform(), "loc")[(0, i)] for i in range(3)])
    assert batch["size"] == 2 and batch["index"].tolist() == [0, 2]
    assert "no box of class 2" in batch["bad"][0][1]
    all_bad = collate([SampleDataset(records, transform(), "loc")[(0, 1)]])
    assert all_bad["size"] == 0 and "image" not in all_bad and len(all_bad["bad"]) == 1


def test_tracker_stops_past_one_percent_with_the_list():
    def batch(good, bad_paths):
        return {"size": good, "bad": [(p, f"{p}: cannot decode image") for p in bad_paths]}

    t = BadSampleTracker(max_fraction=0.01, min_seen=200)
    t.update(batch(31, ["a.JPEG"]))  # 1 of 32 (3%), but fewer than min_seen were seen: go on
    for _ in range(5):
        t.update(batch(32, []))
    t.update(batch(32, []))  # 1 of 224: fine
    assert (t.seen, t.bad) == (224, 1)
    state = t.state_dict()
    with pytest.raises(TooManyBadSamples) as info:
        t.update(batch(30, ["b.JPEG", "c.JPEG"]))  # 3 of 256 = 1.2% > 1%
    assert isinstance(info.value, UserError) and "\n" not in str(info.value)
    assert all(name in str(info.value) for name in ("a.JPEG", "b.JPEG", "c.JPEG"))
    assert [p for p, _ in info.value.samples] == ["a.JPEG", "b.JPEG", "c.JPEG"]

    # Resume keeps the counts; a small data set is judged at the end of the epoch.
    resumed = BadSampleTracker(0.01, min_seen=200)
    resumed.load_state_dict(state)
    assert (resumed.seen, resumed.bad) == (224, 1)
    small = BadSampleTracker(0.01, min_seen=200)
    small.update(batch(40, ["d.JPEG"]))
    with pytest.raises(TooManyBadSamples, match="d.JPEG"):
        small.check()
    fine = BadSampleTracker(0.01, min_seen=200)
    fine.update(batch(150, ["e.JPEG"]))
    fine.check()  # 1 of 151 < 1%


def test_loc_boxes_of_unknown_size_are_clipped_to_the_decoded_image(tmp_path):
    # Kaggle records carry size (0, 0): the box below reaches past the 48x40 image.
    path = tmp_path / "big_box.JPEG"
    Image.fromarray(np.full((40, 48, 3), 128, np.uint8)).save(path)
    inside = Sample(str(path), 0, np.array([[8.0, 4.0, 48.0, 40.0]], np.float32), np.array([0]), (0, 0), "a")
    beyond = Sample(str(path), 0, np.array([[8.0, 4.0, 90.0, 75.0]], np.float32), np.array([0]), (0, 0), "b")
    gone = Sample(str(path), 0, np.array([[60.0, 50.0, 90.0, 75.0]], np.float32), np.array([0]), (0, 0), "c")
    # Same (seed, epoch, index), so the same window: the clipped box gives the same target.
    def item(record):
        return SampleDataset([record], transform(), "loc", seed=0)[(0, 0)]

    torch.testing.assert_close(item(beyond)["target"], item(inside)["target"])
    bad = item(gone)
    assert not isinstance(bad, dict) and "no box of class 0 inside the image" in bad.message
