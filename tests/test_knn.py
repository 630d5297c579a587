"""kNN evaluation: the classifier, the tool's library, and the KNNHook."""
import json
import sys
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

from mrcl_plugin.checkpoints import CheckpointError
from mrcl_plugin.evaluation import (balanced_subset, build_model,
                                    knn_eval, knn_top1, split_dataset)
from mrcl_testing import experiment_name

CONFIG = 'configs/mrcl/mrcl-barlowtwins_vit-tiny-p4_1xb64-coslr-300it_cifar10.py'  # noqa
ITERS, INTERVAL = 5, 2  # the hook logs at 0 (before_train), 2, 4 and 5
BANK, QUERIES = 20, 10  # per class: 200 bank and 100 test images
# MR-SimCLR with a 2-layer encoder for 40 iterations (fp32) moved kNN top-1
# on these 1,000 queries by +5.1, +7.6 and +5.8 points (seeds 0, 1, 2; 38 s
# a seed on a 2-core AMD EPYC); the 6-layer one for 80 iterations by +6.7
# (seed 0, 103 s). On the whole split at 130 iterations, +9.9 over 3 seeds
# (docs/study.md).
KNN_TEST_ITERS, KNN_TEST_LAYERS = 40, 2


def small_cifar_cfg(repo_root, data_root, work_dir, **options):
    cfg = Config.fromfile(str(repo_root / CONFIG))
    cfg.merge_from_dict(dict({
        'work_dir': str(work_dir),
        'experiment_name': experiment_name('knn'),
        'train_dataloader.dataset.data_root': str(data_root / 'cls/cifar10'),
    }, **options))
    return cfg


@pytest.mark.parametrize('chunk', [1, 1024])
def test_knn_top1_on_known_features(chunk):
    bank = torch.nn.functional.normalize(torch.eye(3)[[0, 0, 1, 1, 2, 2]])
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    query = torch.nn.functional.normalize(
        torch.tensor([[1., .1, 0], [0, 1., .2], [.1, 0, 1.], [1., 0, 0]]))
    assert knn_top1((bank, labels), (query, torch.tensor([0, 1, 2, 0])),
                    k=2, temperature=0.07, chunk=chunk) == 100
    assert knn_top1((bank, labels), (query, torch.tensor([1, 1, 2, 0])),
                    k=2, temperature=0.07, chunk=chunk) == 75


def test_knn_votes_are_weighted_by_similarity():
    # two far neighbours of class 1 outvote one near neighbour of class 0
    # with uniform votes, but not with exp(s / T) at a small T
    bank = torch.nn.functional.normalize(
        torch.tensor([[1., 0.], [.6, .8], [.6, .8]]))
    labels = torch.tensor([0, 1, 1])
    query = (torch.tensor([[1., 0.]]), torch.tensor([0]))
    assert knn_top1((bank, labels), query, k=3, temperature=0.07) == 100
    assert knn_top1((bank, labels), query, k=3, temperature=100.) == 0


def test_balanced_subset_and_split_fallback(data_root):
    test = split_dataset(str(data_root / 'cls/cifar10'), 'test')
    indices = balanced_subset(test, 3)
    labels = [test.get_gt_labels()[i] for i in indices]
    assert sorted(labels) == sorted(list(range(10)) * 3)
    assert len(balanced_subset(test)) == 10000
    # Tiny-ImageNet has no test split: its val split stands in
    val = split_dataset(str(data_root / 'cls/tiny_imagenet_10cls'), 'test')
    assert len(val) == 500
    with pytest.raises(FileNotFoundError, match='meta/train.txt'):
        split_dataset(str(data_root / 'coco_tiny'), 'train')


@pytest.fixture(scope='module')
def pretrain_run(repo_root, data_root, tmp_path_factory):
    """The small CIFAR-10 config for ITERS iterations at batch 8 with its
    KNNHook every INTERVAL iterations and before training."""
    work = tmp_path_factory.mktemp('knn_pretrain')
    cfg = small_cifar_cfg(
        repo_root, data_root, work, **{
            'train_cfg.max_iters': ITERS,
            'train_dataloader.batch_size': 8,
            'train_dataloader.num_workers': 0,
            'train_dataloader.persistent_workers': False,
            'default_hooks.checkpoint.interval': ITERS,
            'randomness.seed': 0,
        })
    [hook] = [h for h in cfg.custom_hooks if h.type == 'KNNHook']
    hook.update(interval=INTERVAL, bank_per_class=BANK,
                query_per_class=QUERIES, num_workers=0, before_train=True)
    runner = Runner.from_cfg(cfg)
    runner.train()
    return runner, work


def knn_log(runner, work):
    lines = [json.loads(line) for line in
             (work / runner.timestamp / 'vis_data' /
              f'{runner.timestamp}.json').read_text().splitlines()]
    return {d['step']: d['knn/top1'] for d in lines if 'knn/top1' in d}


def test_hook_logs_knn_top1_at_its_interval(pretrain_run):
    runner, work = pretrain_run
    log = knn_log(runner, work)
    assert sorted(log) == [0, 2, 4, 5]  # interval, and the last iteration
    assert all(0 < v <= 100 for v in log.values())
    # LocalVisBackend's scalars.json (what TensorBoard gets too) has them
    scalars = (work / runner.timestamp / 'vis_data/scalars.json').read_text()
    assert scalars.count('"knn/top1"') == 4
    assert runner.message_hub.get_scalar('knn/top1').current() == log[5]
    assert runner.model.training  # back in train mode after the last one


def test_knn_eval_of_the_checkpoint_matches_the_hook(pretrain_run,
                                                    repo_root, data_root):
    runner, work = pretrain_run
    cfg = small_cifar_cfg(repo_root, data_root, work)
    model = build_model(cfg, str(work / f'iter_{ITERS}.pth'))
    result = knn_eval(model, cfg.train_dataloader.dataset.data_root,
                      bank_per_class=BANK, query_per_class=QUERIES,
                      num_workers=0)
    assert result['top1'] == pytest.approx(knn_log(runner, work)[ITERS])
    assert (result['bank'], result['queries']) == (200, 100)
    p = result['top1'] / 100
    assert result['se'] == pytest.approx(100 * (p * (1 - p) / 100)**.5)


def test_build_model_refuses_a_checkpoint_of_another_model(
        repo_root, data_root, tmp_path):
    cfg = small_cifar_cfg(repo_root, data_root, tmp_path)
    bad = tmp_path / 'other.pth'
    torch.save({'state_dict': {'backbone.weight': torch.zeros(1)}}, bad)
    with pytest.raises(CheckpointError, match='does not fit'):
        build_model(cfg, str(bad))


def test_hook_without_a_labelled_split_stops_before_training(
        repo_root, data_root, tmp_path):
    """A kNN data root with no meta/test.txt (nor val) fails at the start,
    naming the file, not after the last iteration."""
    cfg = small_cifar_cfg(repo_root, data_root, tmp_path / 'work', **{
        'train_cfg.max_iters': 2,
        'train_dataloader.batch_size': 4,
        'train_dataloader.num_workers': 0,
        'train_dataloader.persistent_workers': False,
    })
    [hook] = [h for h in cfg.custom_hooks if h.type == 'KNNHook']
    unlabelled = tmp_path / 'unlabelled'
    (unlabelled / 'meta').mkdir(parents=True)
    (unlabelled / 'meta/train.txt').write_text('airplane/0000.jpg 0\n')
    hook.update(data_root=str(unlabelled))
    runner = Runner.from_cfg(cfg)
    with pytest.raises(FileNotFoundError, match='meta/val.txt does not exist'):
        runner.train()
    assert runner.iter == 0


def test_briefly_pretrained_encoder_beats_its_random_init(mrcl_data_env,
                                                          tmp_path):
    """MR-SimCLR, the study's fastest-moving learner (docs/study.md), with
    a 2-layer encoder for a short run at the study's batch; kNN on the same
    2,000 bank and 1,000 test images before and after. Barlow Twins and BYOL barely move at this
    budget, so they would make this test a coin toss."""
    from dataclasses import replace

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'tools' /
                           'study'))
    from presets import PRESETS, Run
    from runner import train_and_evaluate
    preset = replace(
        PRESETS['cifar10-cpu'], name='knn-test', iters=KNN_TEST_ITERS,
        warmup_iters=KNN_TEST_ITERS // 10, knn_per_class=200,
        knn_test_per_class=100, bf16=False,
        model_overrides=(
            ('model.backbone.arch.num_layers', KNN_TEST_LAYERS), ))
    init = train_and_evaluate(
        Run('simclr', 'init', 0., 0., 0., 0), preset, str(tmp_path))
    trained = train_and_evaluate(
        Run('simclr', 'mrcl', 0.2, 0.01, 0.01, 0), preset, str(tmp_path))
    assert init['knn_queries'] == trained['knn_queries'] == 1000
    assert trained['knn_top1'] > init['knn_top1'] + 3, (init, trained)
