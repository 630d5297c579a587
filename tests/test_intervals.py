"""The intervals of a dense comparison (mrcl_plugin/evaluation/intervals.py)
against computations written out by hand: the paired bootstrap against
every possible resample of a toy case, enumerated; the seed interval
against the t formula; the verdict rule."""
import itertools
import math

import numpy as np
import pytest
import torch

from mrcl_plugin.evaluation.intervals import (miou, paired_bootstrap,
                                              resamples, run_miou,
                                              seed_interval, summarise,
                                              verdict)


def areas(inter, pred, label):
    """One image's (3, K) areas from per-class lists."""
    return torch.tensor([inter, pred, label], dtype=torch.float64)


def toy_run(shift: int):
    """Two folds of 3 and 2 query images, 2 classes; ``shift`` moves
    intersection from class 0 to class 1 (another encoder, same images)."""
    fold0 = torch.stack([
        areas([5 - shift, 2 + shift], [8, 4], [7, 5]),
        areas([1, 3], [2, 6], [4, 3]),
        areas([0, 4], [3, 5], [1, 6])])
    fold1 = torch.stack([
        areas([6, 0], [7, 2], [9, 1]),
        areas([2 + shift, 2], [3 + shift, 4], [5, 2])])
    return [fold0, fold1]


def test_miou_is_mmsegs():
    """IoU of each class with a non-empty union, averaged."""
    summed = areas([3, 0, 0], [4, 2, 0], [5, 0, 0])
    assert miou(summed) == pytest.approx(100 * (3 / 6 + 0 / 2) / 2)


def test_paired_bootstrap_against_every_resample():
    """With 3 and 2 images per fold there are 3^3 x 2^2 = 108 equally
    likely resamples: the exact distribution of the difference, whose
    mean and percentiles 20,000 bootstrap draws must approach."""
    a = [toy_run(0), toy_run(1)]  # two seeds of arm a
    b = [toy_run(2)]  # one of arm b
    exact = []
    for i0 in itertools.product(range(3), repeat=3):
        for i1 in itertools.product(range(2), repeat=2):
            # the difference written out: each run's fold mIoUs averaged
            def run(r):
                return np.mean([miou(r[0][list(i0)].sum(0)),
                                miou(r[1][list(i1)].sum(0))])
            exact.append(np.mean([run(r) for r in a]) -
                         np.mean([run(r) for r in b]))
    found = paired_bootstrap(a, b, bootstrap=20000, seed=3)
    point = np.mean([run_miou(r) for r in a]) - run_miou(b[0])
    assert found['diff'] == pytest.approx(point)
    assert found['images'] == 5
    low, high = np.percentile(exact, [2.5, 97.5])
    spread = high - low
    assert found['low'] == pytest.approx(low, abs=0.05 * spread)
    assert found['high'] == pytest.approx(high, abs=0.05 * spread)


def test_pairing_is_tighter_than_two_separate_intervals():
    """What the images do to both arms cancels: arm b is arm a plus a
    constant gain on every image's class-0 intersection, so the paired
    interval of the difference is far narrower than either arm's own."""
    a = [toy_run(0)]
    b = [[f.clone() for f in toy_run(0)]]
    for fold in b[0]:
        fold[:, 0, 0] += 1  # one more pixel of class 0 right, everywhere
        fold[:, 1, 0] += 1
    paired = paired_bootstrap(a, b, bootstrap=2000)
    alone = summarise(a[0], bootstrap=2000)
    assert paired['high'] - paired['low'] < 0.5 * (alone['high'] -
                                                   alone['low'])


def test_summarise_draws_what_it_drew_before():
    """The one-run interval is computed batched now; its draws are the
    loop's of before (resample by resample, fold by fold), so published
    intervals do not move."""
    run = toy_run(1)
    g = torch.Generator().manual_seed(0)
    samples = [np.mean([miou(f[torch.randint(len(f), (len(f), ),
                                             generator=g)].sum(0))
                        for f in run]) for _ in range(200)]
    low, high = np.percentile(samples, [2.5, 97.5])
    found = summarise(run, bootstrap=200)
    assert (found['low'], found['high']) == pytest.approx((low, high))
    assert [r.shape for r in resamples([3, 2], 200)] == [(200, 3),
                                                         (200, 2)]


def test_unpaired_runs_are_refused():
    with pytest.raises(ValueError, match='same images'):
        paired_bootstrap([toy_run(0)], [toy_run(0)[:1]])


def test_seed_interval_is_the_t_interval():
    d = [1.0, 2.0, 4.0]
    mean, sd = np.mean(d), np.std(d, ddof=1)
    half = 4.302652729911275 * sd / math.sqrt(3)  # t(0.975, 2)
    found = seed_interval(d)
    assert found['diff'] == pytest.approx(mean)
    assert (found['low'], found['high']) == pytest.approx(
        (mean - half, mean + half))
    assert seed_interval([2.0])['low'] == -math.inf


@pytest.mark.parametrize('paired, seeds, word', [
    ((0.1, 0.5), (0.2, 1.0), 'above'),
    ((-0.5, -0.1), (-1.0, -0.2), 'below'),
    ((0.1, 0.5), (-0.2, 1.0), 'within'),
    ((-0.1, 0.5), (0.2, 1.0), 'within'),
])
def test_verdict_needs_both_intervals(paired, seeds, word):
    assert verdict(dict(low=paired[0], high=paired[1]),
                   dict(low=seeds[0], high=seeds[1])) == word
