"""Per-image intersection/union counts: the encoding, the per-batch counting, and (with a tiny
trial) that the stored counts give back the trial's own mIoU."""
import json

import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassJaccardIndex

from ablate.models import image_counts as ic
from ablate.stats import bootstrap_miou, miou_from_counts


def _random_counts(rng, n, c, top):
    u = rng.integers(0, top, size=(n, c))
    u[rng.random((n, c)) < 0.6] = 0  # most classes absent from most images, as in VOC
    i = (u * rng.random((n, c))).astype(np.int64)
    return i, u


@pytest.mark.parametrize("top", [1024, 70_000, 2 ** 33])
def test_encode_decode_round_trip_through_json(top):
    rng = np.random.default_rng(0)
    i, u = _random_counts(rng, 57, 5, top)
    attr = json.loads(json.dumps(ic.encode(i, u)))  # what storage keeps
    di, du = ic.decode(attr)
    assert di.dtype == du.dtype == np.int64
    assert di.shape == du.shape == (57, 5)
    np.testing.assert_array_equal(di, i)
    np.testing.assert_array_equal(du, u)


def test_encode_picks_the_narrowest_dtype():
    assert ic.encode(np.zeros((2, 3)), np.full((2, 3), 65535))["dtype"] == "<u2"
    assert ic.encode(np.zeros((2, 3)), np.full((2, 3), 65536))["dtype"] == "<u4"


def test_encode_refuses_bad_counts_and_decode_bad_attrs():
    with pytest.raises(ValueError, match="one shape"):
        ic.encode(np.zeros((2, 3)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="intersection <= union"):
        ic.encode(np.ones((2, 3)), np.zeros((2, 3)))
    attr = ic.encode(np.zeros((2, 3)), np.ones((2, 3)))
    with pytest.raises(ValueError, match="format"):
        ic.decode({**attr, "format": 99})
    with pytest.raises(ValueError, match="expected 2 x 4 images"):
        ic.decode({**attr, "n_images": 4})


def test_sizes_of_typical_validation_sets():
    """The attribute stays small: synthetic 384 x 3 at 32 x 32 pixels, VOC-like 1449 x 21."""
    rng = np.random.default_rng(1)
    small = len(json.dumps(ic.encode(*_random_counts(rng, 384, 3, 1024))))
    voc = len(json.dumps(ic.encode(*_random_counts(rng, 1449, 21, 500 * 375))))
    assert small < 4_000 and voc < 200_000, (small, voc)


def test_confusion_counts_match_torchmetrics_per_image_and_summed():
    g = torch.Generator().manual_seed(0)
    k, ignore = 4, 255
    pred = torch.randint(0, k, (6, 9, 11), generator=g)
    target = torch.randint(0, k, (6, 9, 11), generator=g)
    target[torch.rand(6, 9, 11, generator=g) < 0.2] = ignore
    target[2][target[2] == 3] = 1  # class 3 absent from image 2's target
    inter, union = ic.confusion_counts(pred, target, k, ignore)
    assert inter.shape == union.shape == (6, k)
    for b in range(6):
        keep = target[b] != ignore
        for c in range(k):
            p, t = pred[b][keep] == c, target[b][keep] == c
            assert int(inter[b, c]) == int((p & t).sum())
            assert int(union[b, c]) == int((p | t).sum())
    whole = MulticlassJaccardIndex(k, average="macro", ignore_index=ignore)(pred, target)
    assert miou_from_counts(inter.numpy(), union.numpy()) == pytest.approx(float(whole), abs=1e-6)


def test_bootstrap_on_decoded_counts_contains_the_point_estimate():
    rng = np.random.default_rng(2)
    i, u = _random_counts(rng, 200, 5, 1000)
    boot = bootstrap_miou(*ic.decode(ic.encode(i, u)), n_boot=500)
    assert boot.miou == pytest.approx(miou_from_counts(i, u))
    assert boot.lo < boot.miou < boot.hi


def _rank_counts(rank: int, world: int, port: int, shards, out_dir: str) -> None:
    import torch.distributed as dist

    from ablate.models.segmenter import ImageCounts

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        metric = ImageCounts(4, 255)
        for pred, target in shards[rank]:  # this rank's batches, in order
            metric.update(pred, target)
        torch.save(metric.compute(), f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_image_counts_metric_gathers_every_ranks_images_in_order(tmp_path):
    """Two gloo ranks with contiguous shards of unequal size (13 and 12 images, as
    ``tensor_split`` makes them) give, on every rank, the single process's rows in image order."""
    import socket

    import torch.multiprocessing as mp

    from ablate.models.segmenter import ImageCounts

    g = torch.Generator().manual_seed(3)
    pred = torch.randint(0, 4, (25, 6, 6), generator=g)
    target = torch.randint(0, 4, (25, 6, 6), generator=g)
    target[torch.rand(25, 6, 6, generator=g) < 0.1] = 255
    single = ImageCounts(4, 255)
    single.update(pred, target)
    whole = single.compute()
    shards = []
    for idx in torch.arange(25).tensor_split(2):
        shards.append([(pred[b], target[b]) for b in idx.tensor_split(3)])  # a few batches per rank
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_rank_counts, args=(2, port, shards, str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert got.dtype == torch.long and got.shape == (25, 2, 4)
        assert torch.equal(got, whole)
