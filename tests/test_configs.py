"""Every shipped config builds; the paper's configs hold the paper's recipe;
the small configs train on the real samples with a falling loss."""
import sys
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

import mrcl_plugin  # noqa: F401
from mrcl_plugin.models import LEARNERS
from mrcl_plugin.models import MRCL
from mrcl_testing import experiment_name

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(
    p for folder in ('mrcl', 'baselines')
    for p in (ROOT / 'configs' / folder).glob('*.py'))
# the small configs of one process (the _gloo ones: tests/test_distributed.py)
SMALL = [p for p in CONFIGS if '300it' in p.name and '_gloo' not in p.name]
IN1K = [p for p in CONFIGS if p.name.endswith('600e_in1k.py')]


def test_configs_exist():
    names = {p.name for p in CONFIGS}
    for learner in ('barlowtwins', 'simclr', 'byol', 'mocov3'):
        assert f'mrcl-{learner}_vit-base-p16_8xb64-coslr-600e_in1k.py' in names
    for learner in ('barlowtwins', 'byol'):
        assert f'mrcl-{learner}_vit-base-p16_8xb64-coslr-300e_stl10.py' in names
    for learner in ('barlowtwins', 'simclr'):
        assert f'{learner}_vit-base-p16_8xb64-coslr-600e_in1k.py' in names
    assert len(SMALL) == 5


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: p.name)
def test_config_builds(path):
    from mmpretrain.registry import MODELS
    cfg = Config.fromfile(str(path))
    assert 'mrcl_plugin' in cfg.custom_imports['imports']
    # exact resume, the meta and the NaN stop hold for every pretraining config
    hooks = {h['type'] for h in cfg.custom_hooks}
    assert {'RNGStateHook', 'MRCLMetaHook', 'NonFiniteLossHook'} <= hooks, \
        path.name
    init_default_scope(cfg.default_scope)
    model = MODELS.build(cfg.model)
    learner = type(model).learner
    assert type(model).__name__ == LEARNERS[learner].__name__
    assert isinstance(model, MRCL) and learner in path.name
    if path.parent.name == 'baselines':
        assert model.backbone.mask_ratio == 0 and model.decoder is None
    else:
        assert model.backbone.mask_ratio == 0.2
        assert model.with_reconstruction
    if path in IN1K:
        n = sum(p.numel() for name, p in model.named_parameters()
                if name.startswith(('backbone.', 'decoder.')))
        # ViT-B/16 + the 8x512 decoder: the paper's 113M (Table 1)
        expected = 113 if path.parent.name == 'mrcl' else 86
        assert round(n / 1e6) == pytest.approx(expected, abs=1)


@pytest.mark.parametrize('path', IN1K, ids=lambda p: p.name)
def test_imagenet_recipe_is_the_papers(path):
    cfg = Config.fromfile(str(path))
    opt = cfg.optim_wrapper.optimizer
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert opt.type == 'AdamW' and tuple(opt.betas) == (0.9, 0.95)
    assert opt.weight_decay == 1e-6
    assert cfg.train_dataloader.batch_size * 8 == 512
    assert opt.lr == pytest.approx(1.5e-4 * 512 / 256)
    assert cfg.auto_scale_lr.base_batch_size == 512
    assert cfg.train_cfg.max_epochs == 600
    warmup, cosine = cfg.param_scheduler
    assert (warmup.type, warmup.end) == ('LinearLR', 30)
    assert (cosine.type, cosine.begin, cosine.end) == ('CosineAnnealingLR',
                                                       30, 600)
    weights = dict(simclr=(8, 5), barlowtwins=(7, 2))
    learner = next(v for v, cls in LEARNERS.items()
                   if cls.__name__ == cfg.model.type)
    if path.parent.name == 'mrcl' and learner in weights:
        assert (cfg.model.rec_head.alpha,
                cfg.model.rec_head.lambd) == weights[learner]


def test_ablation_sweeps_are_overrides():
    """Figs. 3-5 sweep r, alpha and lambda by --cfg-options."""
    from mmpretrain.registry import MODELS
    path = ROOT / 'configs/mrcl/mrcl-barlowtwins_vit-base-p16_8xb64-coslr-300e_stl10.py'  # noqa
    cfg = Config.fromfile(str(path))
    # the STL-10 base lr is read as the ImageNet one is: base x 512 / 256
    assert cfg.optim_wrapper.optimizer.lr == pytest.approx(3e-4 * 512 / 256)
    assert cfg.auto_scale_lr.base_batch_size == 512
    assert cfg.train_cfg.max_epochs == 300
    # the release's binary files, decoded by the dataset: no image loading
    dataset = cfg.train_dataloader.dataset
    assert (dataset.type, dataset.split) == ('STL10', 'train+unlabeled')
    assert [t.type for t in dataset.pipeline] == ['MultiView', 'PackInputs']
    cfg.merge_from_dict({
        'model.backbone.mask_ratio': 0.4,
        'model.rec_head.alpha': 0.1,
        'model.rec_head.lambd': 0.025
    })
    init_default_scope('mmpretrain')
    model = MODELS.build(cfg.model)
    assert model.backbone.mask_ratio == 0.4
    assert (model.rec_head.alpha, model.rec_head.lambd) == (0.1, 0.025)


@pytest.mark.parametrize('path', SMALL, ids=lambda p: p.name)
def test_small_config_trains_with_falling_loss(path, tmp_path):
    from mmengine.runner import Runner
    cfg = Config.fromfile(str(path))
    cfg.merge_from_dict({
        'work_dir': str(tmp_path),
        'experiment_name': experiment_name('small'),
        'train_cfg.max_iters': 20,
        'train_dataloader.batch_size': 32,
        'train_dataloader.num_workers': 0,
        'train_dataloader.persistent_workers': False,
        'default_hooks.logger.interval': 1,
        'default_hooks.checkpoint.interval': 20,
        'randomness.seed': 0,
    })
    # its kNN hook runs (at iteration 0 and the end), on 2 images a class:
    # the curve's own size is tested in test_knn.py
    for hook in cfg.custom_hooks:
        if hook.type == 'KNNHook':
            hook.update(bank_per_class=2, query_per_class=2)
    # the config's 30-iteration warm-up, shortened to fit 20 iterations
    cfg.param_scheduler = [
        dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0,
             end=3),
        dict(type='CosineAnnealingLR', by_epoch=False, begin=3, end=20)
    ]
    runner = Runner.from_cfg(cfg)
    runner.train()
    history = runner.message_hub.get_scalar('train/loss').data[0]
    assert len(history) == 20 and all(map(torch.isfinite,
                                          torch.tensor(history)))
    # single iterations are noisy: compare 5-iteration means. The total
    # falls less where reconstruction weighs 0.01 (MR-BYOL, MR-SimCLR: the
    # InfoNCE loss at batch 32 falls by ~10% in 20 iterations), so each
    # reconstruction term must fall too
    def falls(key, ratio):
        values = runner.message_hub.get_scalar(f'train/{key}').data[0]
        return sum(values[-5:]) < ratio * sum(values[:5])

    assert falls('loss', 0.95)
    assert falls('loss_rec_masked', 0.9) and falls('loss_rec_unmasked', 0.9)
    assert runner.message_hub.get_scalar('train/loss_contrastive')
    assert (tmp_path / 'iter_20.pth').is_file()


def test_small_configs_weigh_reconstruction_per_learner():
    """The paper's STL-10 weights: 10 for MR-BarlowTwins, 0.01 for MR-BYOL
    and MR-SimCLR, whose losses are ~100x smaller; the study's MR-X runs use
    the same."""
    sys.path.insert(0, str(ROOT / 'tools' / 'study'))
    from presets import LEARNER_ALPHA
    for learner, alpha in LEARNER_ALPHA.items():
        cfg = Config.fromfile(
            str(ROOT / 'configs/mrcl' /
                f'mrcl-{learner}_vit-tiny-p4_1xb64-coslr-300it_cifar10.py'))
        assert (cfg.model.rec_head.alpha, cfg.model.rec_head.lambd) == \
            (alpha, alpha)
