"""Fixtures shared by the tests.

- ``repo_root``: the repository (a :class:`~pathlib.Path`).
- ``data_root``: the real sample data, ``../shared/data`` from the repo root
  (or ``$MRCL_DATA``, as the configs read it); the test fails with a clear
  message when it is missing.
- ``mrcl_data_env``: sets ``MRCL_DATA`` to ``data_root`` for the test, so the
  configs' ``{{$MRCL_DATA:../shared/data}}`` resolves whatever the cwd is.
- ``free_port``: a free TCP port on localhost (for ``torch.distributed``).
- ``venv_bin``: the folder of the Python running the tests (``.venv/bin``),
  where the ``mim`` executable lies.
- ``mrcl_checkpoint``: a real MRCL pretraining checkpoint, made once per
  session: the small CIFAR-10 config (ViT-Tiny width, 6 layers, 32 px,
  patch 4) trained for 4 iterations at batch 8 on the real sample.
- ``mrcl_checkpoint_p16``: the same encoder with 16 px patches, trained for
  2 iterations at batch 8 on the real Tiny-ImageNet sample (64 px, 16
  tokens): for code that needs ViT-B's patch size (dense transfer).

Every test, and every test module, leaves mmengine's process-wide state
(the default scope, the message hubs, loggers and visualizers) as it found
it (``restore_mmengine_state_per_test`` and ``_per_module``): in a random
order a test otherwise ran in the default scope an earlier one left
("LatentCrossCorrelationHead is not in the mmdet::model registry"). A
module- or session-scoped fixture is set up before the function-scoped
one, so what it makes lasts for the tests that use it; what a module's
fixtures make ends with the module, and the session's checkpoints are
trained inside a restore of their own.
"""
import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='session')
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope='session')
def data_root() -> Path:
    env = os.environ.get('MRCL_DATA')
    root = Path(env) if env else REPO_ROOT / '..' / 'shared' / 'data'
    root = root.resolve()
    if not (root / 'README.md').is_file() or not (root / 'cls').is_dir():
        pytest.fail(
            f'the real sample data is missing: expected it at {root} '
            "(../shared/data from the repo root, or set MRCL_DATA); the "
            'tests read real images and never download them', pytrace=False)
    return root


@pytest.fixture(scope='module', autouse=True)
def restore_mmengine_state_per_module():
    from mrcl_testing import mmengine_state_restored
    with mmengine_state_restored():
        yield


@pytest.fixture(autouse=True)
def restore_mmengine_state_per_test():
    from mrcl_testing import mmengine_state_restored
    with mmengine_state_restored():
        yield


@pytest.fixture
def mrcl_data_env(monkeypatch, data_root) -> Path:
    monkeypatch.setenv('MRCL_DATA', str(data_root))
    return data_root


@pytest.fixture
def free_port() -> int:
    from mrcl_testing import free_port
    return free_port()


@pytest.fixture(scope='session')
def venv_bin() -> Path:
    return Path(sys.executable).parent


SMALL_CIFAR_CONFIG = (REPO_ROOT / 'configs/mrcl/'
                      'mrcl-barlowtwins_vit-tiny-p4_1xb64-coslr-300it_cifar10.py')


TINY_IMAGENET_CONFIG = (
    REPO_ROOT / 'configs/mrcl/'
    'mrcl-barlowtwins_vit-tiny-p8_1xb64-coslr-300it_tiny-imagenet.py')


def _pretrain(config: Path, work: Path, data_root: Path, iters: int,
              **overrides) -> Path:
    """Train ``config`` for ``iters`` iterations at batch 8 in ``work``;
    returns the checkpoint. The Runner's scope, message hub, logger and
    visualizer end with it: the session's tests come after."""
    from mmengine.config import Config
    from mmengine.runner import Runner

    from mrcl_testing import mmengine_state_restored
    old = os.environ.get('MRCL_DATA')
    os.environ['MRCL_DATA'] = str(data_root)
    try:
        cfg = Config.fromfile(str(config))
    finally:
        if old is None:
            del os.environ['MRCL_DATA']
        else:
            os.environ['MRCL_DATA'] = old
    cfg.merge_from_dict({
        'work_dir': str(work),
        'train_cfg.max_iters': iters,
        'train_dataloader.batch_size': 8,
        'train_dataloader.num_workers': 0,
        'train_dataloader.persistent_workers': False,
        'default_hooks.checkpoint.interval': iters,
        # one name a Runner: tests/mrcl_testing.py:experiment_name
        'experiment_name': f'fixture_{work.name}',
        **overrides
    })
    # no kNN evaluation (tests/test_knn.py has it); the other hooks stay
    cfg.custom_hooks = [h for h in cfg.custom_hooks if h.type != 'KNNHook']
    with mmengine_state_restored():
        Runner.from_cfg(cfg).train()
    return work / f'iter_{iters}.pth'


@pytest.fixture(scope='session')
def mrcl_checkpoint(tmp_path_factory, data_root) -> Path:
    return _pretrain(
        SMALL_CIFAR_CONFIG, tmp_path_factory.mktemp('mrcl_pretrain'),
        data_root, 4)


@pytest.fixture(scope='session')
def mrcl_checkpoint_p16(tmp_path_factory, data_root) -> Path:
    return _pretrain(
        TINY_IMAGENET_CONFIG, tmp_path_factory.mktemp('mrcl_pretrain_p16'),
        data_root, 2, **{
            'model.backbone.patch_size': 16,
            'model.decoder.patch_size': 16,
            'model.decoder.num_patches': 16,
            'model.rec_head.patch_size': 16,
        })
