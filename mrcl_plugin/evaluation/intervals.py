"""mIoU from per-image areas, and the intervals a comparison needs.

The dense evaluation keeps, for each query image, the areas of
intersection, prediction and label of every class (``(3, K)``,
:func:`~mrcl_plugin.evaluation.dense.image_areas`): mIoU over any set of
images is a function of their sum. Two sources of noise stand between two
encoders' figures, and each gets its interval:

- the images: :func:`summarise` resamples one run's query images (a 95%
  percentile bootstrap, within each fold); :func:`paired_bootstrap`
  resamples them once for both arms of a comparison, which share the
  images, so what the images do to both cancels in the difference;
- the training seed: :func:`seed_interval`, a t interval over the
  per-seed differences of the two arms.

:func:`verdict` says **above** or **below** only where both intervals
exclude 0.
"""
import math
from typing import Dict, List, Sequence

import numpy as np
import torch

FoldAreas = List[torch.Tensor]  # per fold, (n_f, 3, K) of its queries


def miou(areas: torch.Tensor) -> float:
    """mIoU (%) of summed (3, K) areas, mmseg's: the mean IoU of the classes
    with a non-empty union (in the masks or in the predictions)."""
    return float(mious(areas[None])[0])


def mious(areas: torch.Tensor) -> torch.Tensor:
    """:func:`miou` of each of (B, 3, K) summed areas: (B, )."""
    inter, pred, label = areas.double().unbind(1)
    union = pred + label - inter
    present = union > 0
    iou = torch.where(present, inter / union.clamp(min=1e-12), 0.)
    return iou.sum(1) / present.sum(1) * 100


def run_miou(fold_areas: FoldAreas, resample=None) -> torch.Tensor:
    """A run's figure: the mean over folds of each fold's mIoU, on the
    fold's queries (a float), or on each resample of them (``resample``:
    per fold, (B, n_f) indices; a (B, ) tensor)."""
    if resample is None:
        return float(np.mean([miou(a.sum(0)) for a in fold_areas]))
    return torch.stack([mious(a[idx].sum(1))
                        for a, idx in zip(fold_areas, resample)]).mean(0)


def resamples(fold_sizes: Sequence[int], bootstrap: int,
              seed: int = 0) -> List[torch.Tensor]:
    """``bootstrap`` resamples of the query images: per fold, (bootstrap,
    n_f) indices drawn with replacement from the fold's n_f (drawn
    resample by resample, fold by fold)."""
    g = torch.Generator().manual_seed(seed)
    draws = [[torch.randint(n, (n, ), generator=g) for n in fold_sizes]
             for _ in range(bootstrap)]
    return [torch.stack([d[f] for d in draws])
            for f in range(len(fold_sizes))]


def _percentiles(samples: torch.Tensor) -> Dict[str, float]:
    low, high = np.percentile(samples.numpy(), [2.5, 97.5])
    return dict(low=float(low), high=float(high))


def summarise(fold_areas: FoldAreas, bootstrap: int = 1000,
              seed: int = 0) -> Dict[str, float]:
    """One run: the mean mIoU over folds (``miou``) and, with
    ``bootstrap``, its 95% percentile bootstrap interval (``low``,
    ``high``; query images resampled within each fold)."""
    result = dict(miou=run_miou(fold_areas))
    if bootstrap:
        result.update(_percentiles(run_miou(fold_areas, resamples(
            [len(a) for a in fold_areas], bootstrap, seed))))
    return result


def paired_bootstrap(a: Sequence[FoldAreas], b: Sequence[FoldAreas],
                     bootstrap: int = 1000, seed: int = 0
                     ) -> Dict[str, float]:
    """The difference of two arms, each the mean of its runs' figures
    (:func:`run_miou`), with a 95% percentile interval from resampling the
    query images: one resample for every run of both arms, which must have
    been evaluated on the same images in the same folds.

    Args:
        a, b: the runs (seeds) of each arm, each run its :data:`FoldAreas`.

    Returns:
        dict: ``diff`` (points, a - b), ``low``, ``high``, ``images`` (the
        number of query images).
    """
    sizes = [len(f) for f in a[0]]
    if any([len(f) for f in run] != sizes for run in [*a, *b]):
        raise ValueError('a paired comparison needs every run evaluated on '
                         'the same images in the same folds')

    def diff(resample=None):
        def arm(runs):
            return sum(run_miou(r, resample) for r in runs) / len(runs)
        return arm(a) - arm(b)

    return dict(diff=float(diff()),
                **_percentiles(diff(resamples(sizes, bootstrap, seed))),
                images=sum(sizes))


def seed_interval(differences: Sequence[float]) -> Dict[str, float]:
    """The mean of per-seed differences (arm a minus arm b at each seed)
    and its 95% t interval (n - 1 degrees of freedom); with one seed the
    interval is unbounded."""
    from scipy.stats import t
    d = np.asarray(differences, dtype=float)
    n = len(d)
    if n < 2:
        return dict(diff=float(d.mean()), low=-math.inf, high=math.inf, n=n)
    half = float(t.ppf(0.975, n - 1) * d.std(ddof=1) / math.sqrt(n))
    return dict(diff=float(d.mean()), low=float(d.mean()) - half,
                high=float(d.mean()) + half, n=n)


def verdict(paired: Dict[str, float], seeds: Dict[str, float]) -> str:
    """'above' or 'below' where both the paired image interval and the
    seed interval exclude 0 on that side, else 'within'."""
    if paired['low'] > 0 and seeds['low'] > 0:
        return 'above'
    if paired['high'] < 0 and seeds['high'] < 0:
        return 'below'
    return 'within'
