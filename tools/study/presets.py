"""The planned grids of the small-scale study (paper Table 1 and Figs. 3-5,
scaled down): which runs, at what budget.

A run is identified by what it trains, not by the figure it serves: the
MR-BarlowTwins run at the default r, alpha and lambda with seed 0 is a point
of Table 1 and of Figs. 3-5 at once, and is trained once.
"""
import os.path as osp
from dataclasses import asdict, dataclass, replace
from typing import Dict, List

from mrcl_plugin.models import LEARNERS

# configs/ beside tools/: the checkout's, or the installed package's .mim
CONFIGS = osp.join(
    osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'configs',
    'mrcl')
CONFIG = osp.join(CONFIGS,
                  'mrcl-{learner}_vit-tiny-p4_1xb64-coslr-300it_cifar10.py')
# 64 px Tiny-ImageNet images in 8 px patches: an 8x8 grid of patches
TINY_IMAGENET_CONFIG = osp.join(
    CONFIGS, 'mrcl-{learner}_vit-tiny-p8_1xb64-coslr-300it_tiny-imagenet.py')
# Each learner's MR-X at the paper's STL-10 weights alpha = lambda: 10 for
# MR-BarlowTwins (best in Fig. 4), 0.01 for MR-BYOL (best in Fig. 4) and for
# MR-SimCLR (Fig. 5's fixed alpha). The losses differ in scale: Barlow Twins'
# is ~250 at the start here, BYOL's and SimCLR's under 5. MoCo v3 has no
# small config: the study's learners are these three.
LEARNER_ALPHA = dict(barlowtwins=10., byol=0.01, simclr=0.01)
STUDY_LEARNERS = tuple(v for v in LEARNERS if v in LEARNER_ALPHA)


@dataclass(frozen=True)
class Run:
    """One pretraining run. ``method`` is ``'baseline'`` (r = 0, no decoder:
    mmpretrain's algorithm), ``'mrcl'``, or ``'init'``: the encoder at its
    random initialisation, evaluated without training (the floor every run
    must clear). ``precision`` ``'fp32'`` or ``'bf16'`` overrides the
    preset's, for a same-seed check of bf16 against fp32.
    ``contrastive_weight`` 0 with ``'mrcl'``: reconstruction alone (MAE's
    pole of the method)."""
    learner: str
    method: str
    mask_ratio: float
    alpha: float
    lambd: float
    seed: int
    precision: str = ''
    contrastive_weight: float = 1.

    @property
    def name(self) -> str:
        suffix = f'_{self.precision}' if self.precision else ''
        if self.method == 'init':
            return f'init_s{self.seed}'
        if self.method == 'baseline':
            return f'{self.learner}_baseline_s{self.seed}{suffix}'
        weight = (f'_c{self.contrastive_weight:g}'
                  if self.contrastive_weight != 1 else '')
        return (f'{self.learner}_mrcl_r{self.mask_ratio:g}_a{self.alpha:g}'
                f'_l{self.lambd:g}{weight}_s{self.seed}{suffix}')

    def overrides(self) -> Dict:
        """``--cfg-options`` of the learner's small config for this run."""
        return {
            'model.backbone.mask_ratio': self.mask_ratio,
            'model.rec_head.alpha': self.alpha,
            'model.rec_head.lambd': self.lambd,
            **({'model.contrastive_weight': self.contrastive_weight}
               if self.contrastive_weight != 1 else {}),
            'randomness': dict(seed=self.seed),
        }

    def as_dict(self, preset: 'Preset') -> Dict:
        """The run's parameters, its precision resolved."""
        return dict(asdict(self), precision=self.precision_in(preset))

    def precision_in(self, preset: 'Preset') -> str:
        return self.precision or ('bf16' if preset.bf16 else 'fp32')


@dataclass(frozen=True)
class Preset:
    """A study: the grid, and the budget every run of it gets."""
    name: str
    iters: int
    batch_size: int
    warmup_iters: int
    headline_seeds: tuple
    headline_learners: tuple
    # the sweeps, of MR-<sweep_learner> around its defaults: r =
    # ``mask_ratio`` (the paper's best) and alpha = lambda =
    # LEARNER_ALPHA[sweep_learner]
    mask_ratios: tuple  # Fig. 3, r
    rec_weights: tuple  # Fig. 4, alpha = lambda
    balances: tuple  # Fig. 5, alpha / lambda at the default alpha
    mask_ratio: float = 0.2
    sweep_learner: str = 'barlowtwins'
    knn_per_class: int = None  # bank images per class; None: all
    knn_test_per_class: int = None  # queries per class; None: all
    linear_epochs: int = 100  # of the linear probe on frozen features
    num_workers: int = 2
    bf16: bool = False  # train under CPU bf16 autocast (CPUBF16OptimWrapper)
    fp32_check: bool = True  # with bf16: MR-<sweep_learner> again in fp32
    # Learning curves (tools/study/curves.py): a KNNHook point every
    # ``curve_interval`` iterations and at iteration 0, on the first
    # ``curve_*_per_class`` images of each class (the same images for every
    # run and point), and a checkpoint at each point, from which a killed
    # run resumes. 0: no curve, no checkpoints.
    curve_interval: int = 0
    curve_bank_per_class: int = None
    curve_query_per_class: int = None
    # The stall rule: a run of one of ``stall_learners`` whose curve at the
    # halfway point is no more than ``stall_margin`` points above its
    # iteration-0 point (None: 2 binomial standard errors of the curve's
    # queries) stops there; once both X and MR-X of a seed stopped, the
    # learner's later seeds are skipped and headline_learners[0] trains
    # ``spare_seeds`` instead.
    stall_learners: tuple = ()
    stall_margin: float = None
    spare_seeds: tuple = ()
    model_overrides: tuple = ()  # (key, value) --cfg-options: tests only
    rationale: str = ''  # why this budget: printed in the report
    # what was learnt after the preset ran, printed under its heading
    note: str = ''
    config: str = CONFIG  # each learner's small config ({learner})
    # more MR arms at every headline seed: dicts of Run's parameters
    # (learner, mask_ratio, alpha, lambd, contrastive_weight)
    extra_arms: tuple = ()
    # Dense evaluation (mrcl_plugin/evaluation/dense.py) of every run's
    # patch tokens on a segmentation folder of the sample data (a path
    # under it), at ``dense_size`` px: at the end, and a DenseKNNHook
    # point with each curve point. None: none.
    dense_root: str = None
    dense_size: int = None
    dense_folds: int = 5
    dense_bootstrap: int = 1000
    dense_splits: tuple = ('training', 'validation')  # pooled for the folds
    dense_blocks: tuple = None  # None: the middle block and the last
    dense_temperatures: tuple = (0.02, 0.07)
    dense_bank_copies: int = 0  # memory-bank augmentation
    dense_curve_every: int = 1  # curve points on every n-th image
    # Keep each run's final weights in its work_dir (iter_<iters>.pth, a
    # random init's init.pth), for readouts after the study (UperNet,
    # pictures, the instrument check).
    keep_checkpoints: bool = False
    methods: tuple = None  # only runs of these methods; None: all
    # a preset that trained some of these runs with the same configs: their
    # rows and work_dirs are taken, not trained again (run.py checks)
    reuses: str = None
    # the dense figure the instrument check chose (tools/study/
    # instrument.py): the pictures' retrieval, the verdicts' first rows
    dense_headline: str = None

    def dense_args(self) -> Dict:
        """The dense evaluation's settings: DenseKNNHook's arguments (the
        curve points) and, with the bank and bootstrap, dense_eval's."""
        return dict(splits=self.dense_splits, size=self.dense_size,
                    blocks=self.dense_blocks, folds=self.dense_folds,
                    temperatures=self.dense_temperatures,
                    every=self.dense_curve_every)

    def mr_defaults(self, learner: str) -> Dict:
        """The parameters of MR-``learner`` at the preset's defaults: the
        headline MR-X, and the point every sweep passes through."""
        alpha = LEARNER_ALPHA[learner]
        return dict(learner=learner, method='mrcl',
                    mask_ratio=self.mask_ratio, alpha=alpha, lambd=alpha)

    def runs(self) -> List[Run]:
        """Every run of the grid, each once: the random inits, the headline
        runs, then the sweeps."""
        runs = [
            Run('barlowtwins', 'init', 0., 0., 0., seed)
            for seed in self.headline_seeds
        ]
        for seed in self.headline_seeds:
            for learner in self.headline_learners:
                runs.append(Run(learner, 'baseline', 0., 0., 0., seed))
                runs.append(Run(**self.mr_defaults(learner), seed=seed))
            runs += [Run(method='mrcl', seed=seed, **arm)
                     for arm in self.extra_arms]
        learner, r = self.sweep_learner, self.mask_ratio
        alpha = LEARNER_ALPHA[learner]
        sweep = [
            *(Run(learner, 'mrcl', x, alpha, alpha, 0)
              for x in self.mask_ratios),
            *(Run(learner, 'mrcl', r, w, w, 0) for w in self.rec_weights),
            *(Run(learner, 'mrcl', r, alpha, alpha / b, 0)
              for b in self.balances),
        ]
        if self.bf16 and self.fp32_check:
            # does bf16 change the result? the same seed in fp32
            sweep.append(
                Run(**self.mr_defaults(learner), seed=self.headline_seeds[0],
                    precision='fp32'))
        for run in sweep:
            if run not in runs:
                runs.append(run)
        return [r for r in runs
                if self.methods is None or r.method in self.methods]

    def spare_runs(self) -> List[Run]:
        """X and MR-X of headline_learners[0] at the spare seeds: trained
        in the stead of the runs the stall rule skips."""
        learner = self.headline_learners[0]
        return [run for seed in self.spare_seeds for run in (
            Run(learner, 'baseline', 0., 0., 0., seed),
            Run(**self.mr_defaults(learner), seed=seed))]


CPU_PRESET = Preset(
    name='cifar10-cpu',
    iters=130,
    batch_size=64,
    warmup_iters=13,
    headline_seeds=(0, 1, 2),
    headline_learners=STUDY_LEARNERS,
    mask_ratios=(0., 0.1, 0.2, 0.3, 0.5),
    rec_weights=(0.001, 0.01, 0.1, 1., 10.),
    balances=(0.25, 1., 4., 16.),
    sweep_learner='simclr',
    knn_per_class=500,
    bf16=True,
    rationale=(
        'How the budget was chosen, on the 2-core machine above. A '
        'training step of the small ViT (ViT-Tiny width, 6 layers, 32 px '
        'in 4 px patches, batch 64, two views) takes about 1 s, 1.2x less '
        'under bf16 autocast than in fp32 (`CPUBF16OptimWrapper`; the '
        'fp32 check below re-measures both); evaluating one encoder '
        '(features of 5,000 bank and all 10,000 test images, kNN, linear '
        'probe) takes about 50 s (the `init` rows). 33 runs (3 random '
        'inits, 18 headline runs, 11 sweep points, 1 fp32 check) in about '
        '90 minutes leave 130 iterations a run. The grid is the smallest '
        'the questions allow (3 seeds for the headline, 1 for sweep '
        'points) and the model is the shipped small config, so that the '
        'study speaks of what users run. The price is a short schedule, '
        'at which Barlow Twins and BYOL hardly leave their random init '
        '(kNN 29.4 at init; after 130 iterations, seed 0: BarlowTwins '
        '30.8, MR-BarlowTwins 30.4, BYOL 29.1) while SimCLR gains 10 '
        'points (39.5). The sweeps (the paper runs them on MR-BarlowTwins '
        'and MR-BYOL, Fig. 5 also on MR-SimCLR) were therefore moved to '
        'MR-SimCLR at its paper weight alpha = lambda = 0.01, with alpha = '
        'lambda from 0.001 to 10: a sweep of an encoder that has not left '
        'its init measures noise. That choice was made after the first '
        'seed of the headline runs and before any sweep point ran.'))

# Does a gap open with training? SimCLR and Barlow Twins against
# their MR-X, 3 seeds, at 10x cifar10-cpu's horizon, with learning curves.
LONG_PRESET = replace(
    CPU_PRESET,
    name='cifar10-long',
    iters=390,
    warmup_iters=39,
    # SimCLR first: it is the learner that learns at this scale
    headline_learners=('simclr', 'barlowtwins'),
    mask_ratios=(),
    rec_weights=(),
    balances=(),
    fp32_check=False,
    # loading in the main process: 1 or 2 loader workers pay nothing on 2
    # cores (run.py --plan --num-workers, docs/speed.md#data-loading)
    num_workers=0,
    # 6 points and iteration 0; 65 puts one at the halfway point, 195
    curve_interval=65,
    curve_bank_per_class=100,
    curve_query_per_class=100,
    stall_learners=('barlowtwins', ),
    # the time of the Barlow Twins seed the rule skips buys one SimCLR seed
    spare_seeds=(3, ),
    rationale=(
        'At 130 iterations (the section above) no claim held and Barlow '
        'Twins did not leave its random init; this preset asks whether a '
        'gap opens later. The aim was 10x that horizon; measured '
        'here (`run.py --plan`), 1,300 iterations a run come to 5.4 h for '
        'the 15 runs, so the horizon is 3x (390 iterations at batch 64, '
        'the warm-up 10% of it as there), the longest at which the whole '
        'study fits one working session with room to spare. The two '
        'learners at the paper weights, 3 seeds each, in bf16 as above '
        '(with the math attention kernel: `CPUBF16OptimWrapper`). The kNN '
        'curve is taken every 65 iterations on the first 100 train images '
        'of each class (bank) and the first 100 test images of each class '
        '(queries), the same images for every run and point; the end point '
        'is evaluated as above (5,000 bank and all 10,000 test images, and '
        'the linear probe). Barlow Twins follows a stall rule: a Barlow '
        'Twins run whose curve at iteration 195 is within 2 binomial '
        'standard errors of its iteration-0 point stops there, '
        'and its MR-Barlow Twins (trained next) stops at 195 too, so that '
        'the two arms of a seed have the same budget; once a seed stopped, '
        'the later Barlow Twins seeds are skipped and their time goes to '
        'SimCLR: a fourth seed (3) of X and MR-X, what one skipped seed of '
        'Barlow Twins costs.'))

# Do MR-X's patch features keep what dense tasks need? X and MR-X of
# SimCLR and Barlow Twins, MR-SimCLR with a reconstruction weight large
# enough to be a sizeable share of its loss, and reconstruction alone, with
# dense evaluation of the patch tokens.
DENSE_PRESET = replace(
    CPU_PRESET,
    name='dense',
    config=TINY_IMAGENET_CONFIG,
    iters=300,
    warmup_iters=30,
    headline_learners=('simclr', 'barlowtwins'),
    extra_arms=(
        dict(learner='simclr', mask_ratio=0.2, alpha=1., lambd=1.),
        dict(learner='simclr', mask_ratio=0.2, alpha=1., lambd=1.,
             contrastive_weight=0.),
    ),
    mask_ratios=(),
    rec_weights=(),
    balances=(),
    fp32_check=False,
    knn_per_class=None,
    num_workers=0,
    curve_interval=60,
    curve_bank_per_class=100,
    curve_query_per_class=None,
    dense_root='coco_semseg_ade_layout',
    dense_size=64,
    rationale=(
        'Why this data, resolution and budget. Patches must carry meaning: '
        'the Tiny-ImageNet sample at 64 px in 8 px patches gives an 8x8 '
        'grid of 64-pixel patches (CIFAR-10 at 32 px in 4 px patches has '
        '16 pixels a patch), the closest to ViT-B/16\'s 14x14 grid at 224 '
        'px that this 2-core machine trains in minutes; it is the shipped '
        '`*_tiny-imagenet.py` configs\' model and their 300-iteration '
        'schedule (batch 64, 3.8 epochs of the 5,000 images). The dense '
        'evaluation runs at the same 64 px, the grid the encoder was '
        'trained on (no interpolated position embedding), on the 200 COCO '
        'images of `coco_semseg_ade_layout` scaled and centre-cropped to '
        '64 px: coarse scenes, so absolute mIoU is low; the question is the '
        'difference between arms. Its 133 classes are not grouped: in each '
        'of the 5 folds 87-92 classes appear among the 40 query images and '
        'only 1-3 of them are absent from the 160-image bank, so no fold '
        'is dominated by classes it cannot predict, and supercategories '
        'would merge classes that dense features must tell apart. The '
        'arms: X and MR-X at the paper\'s weights for SimCLR (alpha = '
        'lambda = 0.01) and Barlow Twins (10); MR-SimCLR at alpha = lambda '
        '= 1, where reconstruction is a sizeable share of the loss (at '
        '0.01 it is under 1%); reconstruction alone (SimCLR\'s '
        'config with contrastive weight 0, alpha = lambda = 1, r = 0.2: '
        'the method\'s own pole, not MAE\'s 75% masking); the random '
        'init as the floor; 3 seeds each. Measured first (`run.py --plan`, '
        'on the machine below): 0.45-0.56 s an iteration, 6.8 s a curve '
        'point (kNN on 100 train images a class and the 500 val images, '
        'and the dense kNN), 29 s the final evaluation: 66 minutes for the '
        '21 runs.'),
    note=(
        'Measured afterwards: a weak instrument. Every arm scores 1.2-2.4% '
        'mIoU on 133 classes; trained SimCLR sits 0.07-0.33 points above its '
        'random init, 1.5-4.1 pooled seed standard deviations depending on '
        'the figure, where one run\'s bootstrap interval is ±0.31 and the '
        'class-token kNN separates the two by 12 points. The verdicts of '
        '±0.1-0.2 points this section once gave against the seed spread are '
        'withdrawn: its runs kept no per-image areas (no paired intervals), '
        'and which figure counts was not fixed beforehand. The CamVid '
        'section below replaced it.'))

CAMVID_RATIONALE = (
    'The dense preset\'s arms, budget and seeds (the section above), '
    'evaluated on CamVid (`camvid`: road-scene frames, 11 classes): '
    'training + validation pooled (468 images) for the 5-fold retrieval '
    'and the linear patch probe, test (233) kept for the fine-tuned '
    'readouts and the pictures. The design is the one the instrument '
    'check chose before any MR-X arm was trained '
    '([dense](dense.md#the-instrument-on-camvid)): 64 px, no bank '
    'augmentation, the headline figure retrieval at block 5, T = 0.02, '
    'which tells X from the random init by 4.4 (Barlow Twins) and 4.6 '
    '(SimCLR) pooled seed standard deviations. The random inits and X '
    'were trained once, by `camvid-instrument`, with the same configs '
    '(run.py checks) and are not trained again. No learning curves: the '
    'instrument\'s runs kept none, and the COCO section\'s stand. Measured '
    'on the machine below (the instrument\'s runs, alone): 200-230 s a '
    'trained run with its evaluation, so the 12 MR runs take about 45 '
    'minutes (three of the instrument\'s runs shared the cores with other '
    'jobs, hence their 1,000-1,800 s below; that changes no figure); 3x the iterations for the SimCLR pair and alpha = lambda = '
    '1 (9 runs of 900 iterations, about 95 minutes more) was not run in '
    'the session that ran this preset.')

# Do MR-X's patch features keep what dense tasks need, on an instrument
# that can see? The dense preset's arms on CamVid, the weights kept for
# the readouts (tools/study/finetune.py) and the pictures. Its init and X
# runs are camvid-instrument's (the same configs), checked first.
CAMVID_PRESET = replace(
    DENSE_PRESET,
    name='camvid',
    curve_interval=0,
    dense_root='camvid',
    keep_checkpoints=True,
    reuses='camvid-instrument',
    dense_headline='knn_b5_t0.02',
    rationale=CAMVID_RATIONALE,
    note='')

# Can the dense evaluation on CamVid tell training from the random init?
# The camvid preset's init and X runs alone, for tools/study/instrument.py
# to evaluate in each candidate design before any MR-X arm is trained.
CAMVID_INSTRUMENT = replace(
    CAMVID_PRESET,
    name='camvid-instrument',
    methods=('init', 'baseline'),
    reuses=None,
    dense_headline=None,
    rationale=(
        'The dense preset\'s SimCLR and Barlow Twins (X) and their random '
        'inits, 3 seeds, trained as there and kept, so that '
        '`tools/study/instrument.py` can check each design of the CamVid '
        'evaluation (size, block, temperature, bank augmentation) on X '
        'against the init before any MR-X arm is trained.'))

# A micro run's encoder: 2 layers at width 48; its decoder: 1 layer
_TINY_ARCH = (
    ('model.backbone.arch', dict(embed_dims=48, num_layers=2, num_heads=3,
                                 feedforward_channels=96)),
    ('model.neck.in_channels', 48),
    ('model.decoder.embed_dim', 48),
    ('model.decoder.decoder_embed_dim', 32),
    ('model.decoder.decoder_depth', 1),
)


def _micro(preset: Preset, **changes) -> Preset:
    """``preset`` at test size: the tiny ViT, 2 iterations at batch 8, a
    few images per class for kNN, a short linear probe, 2 dense folds."""
    return replace(preset, **{
        **dict(iters=2, batch_size=8, warmup_iters=1, knn_per_class=10,
               knn_test_per_class=5, linear_epochs=5, dense_folds=2,
               dense_bootstrap=20, model_overrides=_TINY_ARCH,
               rationale=''), **changes})

# the camvid study at test size (SimCLR and MR-SimCLR; 2 seeds, as a
# seed std needs two; 2 iterations, 2 folds), reusing the runs of its
# instrument preset
_MICRO_CAMVID = _micro(
    CAMVID_PRESET,
    name='micro-camvid',
    headline_learners=('simclr', ),
    extra_arms=(),
    headline_seeds=(0, 1),
    dense_splits=('validation', ),  # 101 images: quick to read
    reuses='micro-camvid-instrument',
    dense_headline='knn_b1_t0.02')  # the tiny ViT's last block

PRESETS = {
    # BarlowTwins and MR-BarlowTwins (one seed, bf16), a handful of
    # iterations, the random init and the fp32 check, evaluated on a few
    # images per class: for the tests.
    'micro':
    Preset(
        name='micro',
        iters=2,
        batch_size=8,
        warmup_iters=1,
        headline_seeds=(0, ),
        headline_learners=('barlowtwins', ),
        mask_ratios=(0.2, ),
        rec_weights=(),
        balances=(),
        knn_per_class=10,
        knn_test_per_class=5,
        linear_epochs=5,
        num_workers=0,
        bf16=True),
    # cifar10-long at test size: a tiny ViT, 2 iterations with a curve
    # point at each, two seeds, and a stall margin of 100 points, so that
    # every Barlow Twins run stops at its halfway point and the rule drops
    # its second seed (no spare seeds: they would only cost test time).
    'micro-long':
    _micro(
        LONG_PRESET,
        name='micro-long',
        headline_seeds=(0, 1),
        num_workers=0,
        curve_interval=1,
        curve_bank_per_class=3,
        curve_query_per_class=2,
        stall_margin=100.,
        spare_seeds=()),
    # the dense preset at test size: a tiny ViT, 2 iterations, one seed,
    # SimCLR, MR-SimCLR and reconstruction alone, a curve point at each
    # iteration, 2 folds
    'micro-dense':
    _micro(
        DENSE_PRESET,
        name='micro-dense',
        headline_learners=('simclr', ),
        extra_arms=DENSE_PRESET.extra_arms[1:],
        headline_seeds=(0, ),
        curve_interval=1,
        curve_bank_per_class=3,
        curve_query_per_class=2),
    # the instrument check at test size: SimCLR and the init, 2 seeds (a
    # seed std needs two), 2 iterations, 2 folds
    'micro-camvid': _MICRO_CAMVID,
    'micro-camvid-instrument':
    replace(_MICRO_CAMVID, name='micro-camvid-instrument',
            methods=CAMVID_INSTRUMENT.methods, reuses=None,
            dense_headline=None),
    'camvid': CAMVID_PRESET,
    'camvid-instrument': CAMVID_INSTRUMENT,
    'cifar10-cpu': CPU_PRESET,
    'cifar10-long': LONG_PRESET,
    'dense': DENSE_PRESET,
    # The same grid at 10x the iterations and 4x the batch, for a GPU, in
    # fp32 (CPUBF16OptimWrapper is for CPUs), the whole train split as bank.
    'cifar10-gpu': replace(CPU_PRESET, name='cifar10-gpu', iters=1300,
                           batch_size=256, warmup_iters=130, num_workers=8,
                           knn_per_class=None, bf16=False, rationale=''),
}
