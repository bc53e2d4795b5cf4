"""IdentitySampler guarantees (SPEC §4): ids per batch, modality balance, label alignment, epoch
length, determinism per seed, pt walks the ids once per epoch with drop_last (the paper code's
CamRandomIdentitySampler + DataLoader(drop_last=True))."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mvd_core.data.base import ImageSet, TrainSet
from mvd_core.data.sampler import IdentitySampler
from mvd_core.errors import ConfigError


def make_set(vis_counts: list[int], th_counts: list[int], shuffle_seed: int | None = None) -> TrainSet:
    def part(counts: list[int], mod: str) -> ImageSet:
        labels = np.repeat(np.arange(len(counts)), counts)
        if shuffle_seed is not None:
            labels = np.random.default_rng(shuffle_seed).permutation(labels)
        n = labels.shape[0]
        return ImageSet(pids=labels + 1000, labels=labels, cams=np.ones(n, np.int64), modality=mod,
                        images=np.zeros((n, 1, 1, 3), np.uint8))

    return TrainSet(part(vis_counts, "visible"), part(th_counts, "thermal"), len(vis_counts), "t")


def test_ms_steps_per_epoch_hand_derived() -> None:
    ts = make_set([10, 10, 10, 7], [5, 5, 5, 5])  # #V = 37, #I = 20
    assert IdentitySampler(ts, 2, 3, "ms").steps_per_epoch == 37 // 6 + 1 == 7
    assert IdentitySampler(ts, 4, 4, "ms").steps_per_epoch == 37 // 16 + 1 == 3
    assert IdentitySampler(ts, 3, 2, "pt").steps_per_epoch == 1  # 4 // 3: drop_last
    assert IdentitySampler(ts, 4, 2, "pt").steps_per_epoch == 1
    assert IdentitySampler(ts, 2, 3).batch_size == 12


counts = st.lists(st.integers(1, 6), min_size=2, max_size=12)


@settings(max_examples=40, deadline=None)
@given(
    vis=counts, extra=st.data(), n=st.integers(1, 12), k=st.integers(1, 4), kind=st.sampled_from(["ms", "pt"]),
    seed=st.integers(0, 2**32 - 1), shuffled=st.booleans(),
)
def test_batch_guarantees(vis, extra, n, k, kind, seed, shuffled) -> None:
    c = len(vis)
    th = extra.draw(st.lists(st.integers(1, 6), min_size=c, max_size=c))
    n = min(n, c)
    ts = make_set(vis, th, shuffle_seed=seed % 97 if shuffled else None)
    s = IdentitySampler(ts, n, k, kind)
    plan = s.epoch_indices(np.random.default_rng(seed))
    assert len(plan) == s.steps_per_epoch
    if kind == "ms":
        assert s.steps_per_epoch == max(sum(vis), sum(th)) // (n * k) + 1
    seen: set[int] = set()
    walked = 0
    for v, t in plan:
        assert v.shape == t.shape == (n * k,)
        assert v.dtype == np.int64 and t.dtype == np.int64
        lv, lt = ts.visible.labels[v], ts.thermal.labels[t]
        np.testing.assert_array_equal(lv, lt)  # same ids, same order: modality balance
        ids = lv.reshape(n, k)
        assert np.all(ids == ids[:, :1])  # id-major blocks of K
        assert len(set(ids[:, 0].tolist())) == n  # N distinct ids per batch
        seen |= set(ids[:, 0].tolist())
        walked += n
        if kind == "pt":
            for block_v, block_t, lab in zip(v.reshape(n, k), t.reshape(n, k), ids[:, 0]):
                # without replacement when the id has at least K images
                if (ts.visible.labels == lab).sum() >= k:
                    assert len(set(block_v.tolist())) == k
                if (ts.thermal.labels == lab).sum() >= k:
                    assert len(set(block_t.tolist())) == k
    if kind == "pt":
        assert s.steps_per_epoch == c // n
        assert walked == len(seen) == (c // n) * n  # each id at most once; the c mod n tail unused


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), kind=st.sampled_from(["ms", "pt"]))
def test_determinism_per_seed(seed: int, kind: str) -> None:
    ts = make_set([3, 5, 2, 4, 6, 1], [2, 2, 3, 1, 4, 2])
    s = IdentitySampler(ts, 3, 2, kind)
    a = s.epoch_indices(np.random.default_rng(seed))
    b = s.epoch_indices(np.random.default_rng(seed))
    c = s.epoch_indices(np.random.default_rng(seed + 1))
    assert all(np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) for x, y in zip(a, b))
    assert not all(np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) for x, y in zip(a, c))


def test_ms_uses_replacement_and_covers_ids() -> None:
    ts = make_set([1] * 5, [2] * 5)
    s = IdentitySampler(ts, 5, 4, "ms")
    v, t = s.epoch_indices(np.random.default_rng(0))[0]
    # one visible image per id, drawn 4 times: with replacement
    assert np.all(v.reshape(5, 4) == v.reshape(5, 4)[:, :1])
    counts = np.zeros(5)
    for v, _ in sum((s.epoch_indices(np.random.default_rng(e)) for e in range(200)), []):
        counts[ts.visible.labels[v[::4]]] += 1
    assert counts.min() > 0  # every id gets drawn


def test_bad_arguments() -> None:
    ts = make_set([2, 2, 2], [2, 2, 2])
    with pytest.raises(ConfigError, match="num_ids"):
        IdentitySampler(ts, 4, 2)
    with pytest.raises(ConfigError, match="num_pos"):
        IdentitySampler(ts, 2, 0)
    with pytest.raises(ConfigError, match="sampler"):
        IdentitySampler(ts, 2, 2, "random")


def paper_code_batches(perm: list[int], num_instances: int, batch_size: int) -> list[list[int]]:
    """The paper code's epoch, from the id permutation ``torch.randperm`` gave: its
    ``CamRandomIdentitySampler`` lists ``num_instances`` entries per id (visible and thermal
    alternating), ``DataLoader(batch_size, drop_last=True)`` cuts the list. Returns the ids of
    each batch, in order of first appearance."""
    flat = [pid for pid in perm for _ in range(num_instances)]
    n_batches = len(flat) // batch_size  # drop_last
    out = []
    for b in range(n_batches):
        chunk = flat[b * batch_size:(b + 1) * batch_size]
        out.append(list(dict.fromkeys(chunk)))
    return out


@pytest.mark.parametrize(
    ("name", "c", "num_ids", "batch", "steps", "unused"),
    [("SYSU-MM01 (mm01.py: batch 128)", 395, 16, 128, 24, 11),
     ("RegDB (regdb.py: batch 64)", 206, 8, 64, 25, 6),
     ("RegDB at batch 128", 206, 16, 128, 12, 14)],
)
def test_pt_epoch_matches_the_paper_code_loader(name, c, num_ids, batch, steps, unused) -> None:
    ts = make_set([5] * c, [3] * c)  # 5 visible, 3 thermal per id: thermal needs replacement
    s = IdentitySampler(ts, num_ids, 4, "pt")
    assert s.steps_per_epoch == steps, name
    for seed in range(3):
        plan = s.epoch_indices(np.random.default_rng(seed))
        assert len(plan) == steps
        ours = [ts.visible.labels[v][::4].tolist() for v, _ in plan]
        walked = [i for ids in ours for i in ids]
        assert len(walked) == len(set(walked)) == c - unused
        # the permutation the epoch used, completed by its unused tail, batched by the paper code
        perm = walked + sorted(set(range(c)) - set(walked))
        assert paper_code_batches(perm, 8, batch) == ours
        for v, t in plan:
            # visible: 5 >= 4 images per id, drawn without replacement; thermal: 3 < 4, with
            assert all(len(set(block.tolist())) == 4 for block in v.reshape(num_ids, 4))
            np.testing.assert_array_equal(ts.thermal.labels[t], ts.visible.labels[v])
    # over epochs every id is used (the unused tail differs from epoch to epoch)
    used = set()
    for seed in range(20):
        used |= {i for v, _ in s.epoch_indices(np.random.default_rng(seed)) for i in ts.visible.labels[v].tolist()}
    assert used == set(range(c))
