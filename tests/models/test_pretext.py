"""The synthetic pretext's cache and the small backbone's init / freeze (tiny widths, few steps)."""
from __future__ import annotations

import threading
import time

import pytest
import torch

from ablate.config.seeds import reseed
from ablate.models import pretext
from ablate.models.backbone import SmallCNN
from ablate.models.pretext import build_small_cnn, provenance
from ablate.models.segmenter import Segmenter

TINY = pretext.PretextSpec(size=16, train_images=32, val_images=8, epochs=1, batch_size=16)


@pytest.fixture
def trainings(monkeypatch):
    """Every pretext training, counted (the real training runs; ``calls`` lists its arguments)."""
    calls = []
    real = pretext.train_backbone

    def counted(width, depth, spec):
        calls.append((width, depth, spec))
        return real(width, depth, spec)

    monkeypatch.setattr(pretext, "train_backbone", counted)
    monkeypatch.setattr(pretext, "DEFAULT", TINY)
    return calls


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_cache_hit_gives_the_same_weights_without_training(trainings):
    first, record = pretext.pretrained_state(4, 3, TINY)
    again, record_again = pretext.pretrained_state(4, 3, TINY)
    assert len(trainings) == 1
    assert _same(first, again) and record_again == record
    assert record["key"] == pretext.pretext_key(4, 3, TINY)
    assert (pretext.cache_dir() / f"{record['key']}.pt").is_file()
    fresh = SmallCNN(3, 4, 3).state_dict()
    assert not _same(first, fresh)  # the cached weights are trained ones, not an initialisation


def test_a_changed_pretext_configuration_or_backbone_misses(trainings):
    pretext.pretrained_state(4, 3, TINY)
    other = pretext.PretextSpec(**{**TINY.as_dict(), "seed": TINY.seed + 1})
    pretext.pretrained_state(4, 3, other)
    pretext.pretrained_state(6, 3, TINY)
    assert len(trainings) == 3
    keys = {pretext.pretext_key(4, 3, TINY), pretext.pretext_key(4, 3, other), pretext.pretext_key(6, 3, TINY)}
    assert len(keys) == 3


def test_concurrent_callers_train_once(trainings, monkeypatch):
    real = pretext.train_backbone

    def slow(width, depth, spec):  # long enough for the other thread to arrive while it trains
        time.sleep(0.3)
        return real(width, depth, spec)

    monkeypatch.setattr(pretext, "train_backbone", slow)
    results = []
    threads = [threading.Thread(target=lambda: results.append(pretext.pretrained_state(4, 3, TINY)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(trainings) == 1 and len(results) == 2
    assert _same(results[0][0], results[1][0])


def test_an_unreadable_checkpoint_is_trained_again(trainings):
    _, record = pretext.pretrained_state(4, 3, TINY)
    (pretext.cache_dir() / f"{record['key']}.pt").write_bytes(b"half a file")
    state, _ = pretext.pretrained_state(4, 3, TINY)
    assert len(trainings) == 2 and set(state) == set(SmallCNN(3, 4, 3).state_dict())


def _segmenter(**backbone) -> Segmenter:
    return Segmenter(3, {"name": "small_cnn", "width": 4, "depth": 3, **backbone}, "emanet", {"K": 4}, seed=0)


def test_scratch_is_bit_identical_to_the_model_before_init_existed():
    before = _segmenter()  # the spec as every earlier trial config holds it
    explicit = _segmenter(init="scratch", freeze=False)
    assert _same(before.state_dict(), explicit.state_dict())
    reseed(0, "backbone")
    assert _same(before.backbone.state_dict(), SmallCNN(3, 4, 3).state_dict())
    assert provenance(explicit.backbone) == {}
    assert all(p.requires_grad for p in explicit.parameters())


def test_pretrained_loads_the_pretext_weights_and_names_its_key(trainings):
    model = _segmenter(init="pretrained_synthetic")
    state, record = pretext.pretrained_state(4, 3)
    assert _same(model.backbone.state_dict(), state)
    assert provenance(model.backbone) == {"backbone_init": {"init": "pretrained_synthetic", "freeze": False,
                                                            "pretext_key": record["key"]}}
    scratch = _segmenter()
    # the other parts come from their own seed streams: the same as from scratch
    assert _same(model.attention.state_dict(), scratch.attention.state_dict())
    assert _same(model.head.state_dict(), scratch.head.state_dict())


def test_freeze_keeps_backbone_weights_and_statistics_while_the_head_trains(trainings):
    model = _segmenter(init="pretrained_synthetic", freeze=True)
    backbone0 = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    head0 = {k: v.clone() for k, v in model.head.state_dict().items()}
    opt = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.1)
    x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 3, (4, 16, 16))
    for _ in range(3):
        model.train()  # what the trainer calls every epoch
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert not model.backbone.training and model.attention.training
    assert _same(model.backbone.state_dict(), backbone0)  # weights and BN running statistics
    assert not _same(model.head.state_dict(), head0)


def test_unknown_init_is_refused_when_built():
    with pytest.raises(ValueError, match="pretrained_synthetic"):
        build_small_cnn(width=4, init="imagenet")
