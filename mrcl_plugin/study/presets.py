"""The planned grids of the small-scale study (paper Table 1 and Figs. 3-5,
scaled down): which runs, at what budget.

A run is identified by what it trains, not by the figure it serves: the
MR-BarlowTwins run at the default r, alpha and lambda with seed 0 is a point
of Table 1 and of Figs. 3-5 at once, and is trained once.
"""
import os.path as osp
from dataclasses import asdict, dataclass, replace
from typing import Dict, List

# the package's configs (a link to the repo's configs/ in a checkout)
CONFIG = osp.join(
    osp.dirname(osp.dirname(osp.abspath(__file__))), '.mim', 'configs',
    'mrcl', 'mrcl-{variant}_vit-tiny-p4_1xb64-coslr-300it_cifar10.py')
VARIANTS = ('barlowtwins', 'byol', 'simclr')


@dataclass(frozen=True)
class Run:
    """One pretraining run. ``method`` is ``'baseline'`` (r = 0, no decoder:
    mmpretrain's algorithm) or ``'mrcl'``."""
    variant: str
    method: str
    mask_ratio: float
    alpha: float
    lambd: float
    seed: int

    @property
    def name(self) -> str:
        if self.method == 'baseline':
            return f'{self.variant}_baseline_s{self.seed}'
        return (f'{self.variant}_mrcl_r{self.mask_ratio:g}_a{self.alpha:g}'
                f'_l{self.lambd:g}_s{self.seed}')

    def overrides(self) -> Dict:
        """``--cfg-options`` of the variant's small config for this run."""
        return {
            'model.backbone.mask_ratio': self.mask_ratio,
            'model.rec_head.alpha': self.alpha,
            'model.rec_head.lambd': self.lambd,
            'randomness': dict(seed=self.seed),
        }

    def as_dict(self) -> Dict:
        return asdict(self)


@dataclass(frozen=True)
class Preset:
    """A study: the grid, and the budget every run of it gets."""
    name: str
    iters: int
    batch_size: int
    warmup_iters: int
    headline_seeds: tuple
    headline_variants: tuple
    mask_ratios: tuple  # Fig. 3, MR-BarlowTwins at the default weights
    rec_weights: tuple  # Fig. 4, alpha = lambda, at the default r
    balances: tuple  # Fig. 5, alpha / lambda at the default alpha and r
    mask_ratio: float = 0.2  # the defaults: the paper's best r and
    alpha: float = 10.  # MR-BarlowTwins' best alpha = lambda (Fig. 4)
    knn_per_class: int = None  # bank images per class; None: all
    knn_test_per_class: int = None  # queries per class; None: all
    linear_epochs: int = 100  # of the linear probe on frozen features
    num_workers: int = 2

    def runs(self) -> List[Run]:
        """Every run of the grid, each once, headline runs first."""
        runs = []
        for seed in self.headline_seeds:
            for variant in self.headline_variants:
                runs.append(Run(variant, 'baseline', 0., 0., 0., seed))
                runs.append(
                    Run(variant, 'mrcl', self.mask_ratio, self.alpha,
                        self.alpha, seed))
        sweep = [
            *(Run('barlowtwins', 'mrcl', r, self.alpha, self.alpha, 0)
              for r in self.mask_ratios),
            *(Run('barlowtwins', 'mrcl', self.mask_ratio, w, w, 0)
              for w in self.rec_weights),
            *(Run('barlowtwins', 'mrcl', self.mask_ratio, self.alpha,
                  self.alpha / b, 0) for b in self.balances),
        ]
        for run in sweep:
            if run not in runs:
                runs.append(run)
        return runs


CPU_PRESET = Preset(
    # About 90 minutes on 2 CPU cores (to be confirmed by the first full
    # run: see docs/study.md once it is written).
    name='cifar10-cpu',
    iters=150,
    batch_size=64,
    warmup_iters=15,
    headline_seeds=(0, 1, 2),
    headline_variants=VARIANTS,
    mask_ratios=(0., 0.1, 0.2, 0.3, 0.5),
    rec_weights=(0.01, 0.1, 1., 10., 100.),
    balances=(0.25, 1., 4., 16.))

PRESETS = {
    # Two runs (BarlowTwins and MR-BarlowTwins, one seed) of a handful of
    # iterations, evaluated on a few images per class: for the tests.
    'micro':
    Preset(
        name='micro',
        iters=2,
        batch_size=8,
        warmup_iters=1,
        headline_seeds=(0, ),
        headline_variants=('barlowtwins', ),
        mask_ratios=(0.2, ),
        rec_weights=(),
        balances=(),
        knn_per_class=10,
        knn_test_per_class=5,
        linear_epochs=5,
        num_workers=0),
    'cifar10-cpu': CPU_PRESET,
    # The same grid at 10x the iterations and 4x the batch, for a GPU.
    'cifar10-gpu': replace(CPU_PRESET, name='cifar10-gpu', iters=1500,
                           batch_size=256, warmup_iters=150, num_workers=8),
}
