"""Every private attribute or method of torch, mmengine or mmpretrain the
package reaches into, and every upstream method body it repeats, pinned to
the stack versions it was checked against.

When a version moves, or an upstream source changes under the same
version, these tests fail with a message naming what to re-check and where
we use it. Re-check it, then update STACK or the recorded hash here.
The hash is of the upstream source (``inspect.getsource``), so a change of
any of its lines shows.
"""
import hashlib
import importlib
import inspect
from typing import NamedTuple

import pytest

STACK = {'torch': '2.14.1', 'mmengine': '0.10.7', 'mmpretrain': '1.2.0'}


class Internal(NamedTuple):
    package: str
    upstream: str  # the object whose source is hashed
    sha256: str  # the first 16 hex digits of its source's
    where: str  # in mrcl_plugin/
    what: str  # what we rely on: what to re-check


INTERNALS = [
    Internal('mmpretrain', 'SimCLR._create_buffer', 'be1e851b9c5699e7',
             'models/algorithms/mr_simclr.py',
             'its (mask, pos_idx, neg_mask) for a 2N batch, from which '
             'MR-SimCLR builds the InfoNCE logits as SimCLR.loss does'),
    Internal('mmpretrain', 'LatentCrossCorrelationHead', 'afeabaaa13721f14',
             'models/algorithms/mr_barlowtwins.py',
             'its .bn (BatchNorm1d) and .loss_module (CrossCorrelationLoss), '
             'called on their own to compute the cross-correlation'),
    Internal('mmpretrain', 'PixelReconstructionLoss', 'fbbbd0ea0cfaa961',
             'models/heads/reconstruction_head.py',
             'its .penalty (per-pixel L1/L2) and .channel, used for the '
             'masked and unmasked terms separately'),
    Internal('mmpretrain', 'MAEViT.forward', 'd2086cfb464d1fa6',
             'models/backbones/mrcl_vit.py',
             'MRCLViT.forward repeats its masked branch with its own mask '
             'generator: patch embed, gather of the visible tokens, class '
             'token, layers, norm1'),
    Internal('mmpretrain', 'MAEPretrainDecoder.forward', 'afe09e834921c270',
             'models/necks/checkpointed_mae_decoder.py',
             'CheckpointedMAEDecoder.forward repeats its steps to wrap each '
             'block in activation checkpointing'),
    Internal('mmpretrain', 'VisionTransformer.forward', 'b1f4f294be29f9c1',
             'evaluation/dense.py',
             'out_indices and out_type="featmap" set on the instance give '
             'the patch tokens of chosen blocks (final norm after the last, '
             'position embedding resized to the input)'),
    Internal('mmengine', 'HistoryBuffer', '0b351b685d552f7d',
             'checkpoints/reader.py',
             'the state it pickles (max_length, _log_history, '
             '_count_history, statistics_methods as getattr(HistoryBuffer, '
             'name) of its four built-in statistics) and its constructor, '
             'which rebuilds it from that state'),
    Internal('mmengine', 'IterBasedTrainLoop', 'c02ff7910f7db123',
             'engine/hooks/rng_state_hook.py',
             'loop.dataloader_iterator, wrapped to restore the RNG states '
             'after a resume skips the trained batches'),
    Internal('mmengine', 'dist.utils._init_dist_pytorch', '8a14beff62037f6b',
             'compat.py',
             'wrapped to skip torch.cuda.set_device without a GPU'),
    Internal('mmengine', 'runner.checkpoint.save_checkpoint',
             '7f60c6ca167fd4dd', 'checkpoints/atomic.py',
             'a local checkpoint is written with one file_backend.put from '
             "the hook's backend_args, which AtomicLocalBackend makes atomic"),
    Internal('mmengine', 'CheckpointHook._save_checkpoint_with_step',
             'cdbc1b54c7c88d95', 'checkpoints/atomic.py',
             'it writes last_checkpoint with a bare open after the '
             'checkpoint, which latest_checkpoint falls back from when torn'),
    Internal('mmengine', '_strategy.deepspeed.DeepSpeedStrategy.'
             'save_checkpoint', 'c53947bfe49f8a27', 'compat.py',
             'wrapped to call the callback it drops on extra_ckpt, which it '
             "passes to DeepSpeed's save_checkpoint as the client state"),
    Internal('mmengine', '_strategy.deepspeed.DeepSpeedStrategy.resume',
             'ef24384362660839', 'compat.py',
             'wrapped to call the callback it drops on the client state '
             "DeepSpeed's load_checkpoint returns, and to read its "
             "meta['config'] as data"),
    Internal('mmengine', 'infer.BaseInferencer._init_model', 'a60060d85e023a7e',
             'compat.py',
             'given no cfg it reads the config text from '
             "message_hub['runtime_info']['cfg'] or meta['cfg'] and runs "
             'Config.fromstring on it; wrapped to pass the text as data'),
    Internal('mmengine', 'Runner.resume', '30cc2d3b4e1afabd', 'compat.py',
             "it passes meta['config'] of the checkpoint that "
             'self.load_checkpoint returns to Config.fromstring, reading '
             'only gpu_ids: load_checkpoint is wrapped to leave only those'),
    Internal('mmengine', 'FlexibleRunner.resume', 'ed1d4658229635bf', 'compat.py',
             "the same, on what self.strategy.resume returns: every "
             "strategy's resume is wrapped"),
    Internal('mmengine', 'runner.checkpoint.CheckpointLoader', 'c162242c7dfab146',
             'checkpoints/schemes.py',
             '_schemes (prefix regex -> loader) and _get_checkpoint_loader, '
             'the one place every load_from, resume and init_cfg passes; '
             'register_scheme(force=True) replaces each loader'),
    Internal('mmengine', 'runner.checkpoint.load_from_openmmlab', 'c17b71970067b708',
             'checkpoints/schemes.py',
             'the name tables our loader reads the same way: '
             'get_external_models, get_deprecated_model_names, '
             '_get_mmengine_home (load_from_mmcls: get_mmcls_models, '
             '_process_mmcls_checkpoint; load_from_torchvision: '
             'get_torchvision_models)'),
    Internal('mmengine', 'runner.checkpoint.load_from_mmcls', '3e1213f5442779a8',
             'checkpoints/schemes.py', 'as load_from_openmmlab'),
    Internal('mmengine', 'runner.checkpoint.load_from_torchvision', 'ad456a3b0615a9bb',
             'checkpoints/schemes.py', 'as load_from_openmmlab'),
    Internal('mmengine', 'runner.checkpoint.load_from_ceph', 'dabd19a85fecf851',
             'checkpoints/schemes.py',
             'get_file_backend(filename, backend_args=dict(backend=...))'
             '.get(filename) gives the bytes'),
    Internal('mmengine', 'runner.checkpoint.load_from_pavi', '65d239620a49308d',
             'checkpoints/schemes.py',
             "pavi.modelcloud.get(path).download(file) fetches the file"),
    Internal('mmengine', '_strategy.deepspeed.DeepSpeedOptimWrapper.step',
             'b284acd86acbb462', 'compat.py',
             "wrapped in no_grad: it calls DeepSpeed's engine.step, whose "
             'ZeRO all-gather fails in grad mode on gloo'),
    Internal('torch', 'DistributedDataParallel._passing_sync_batchnorm_handle',
             '4ac73592414589fb', 'compat.py',
             'wrapped so that DDP accepts SyncBatchNorm on CPU processes'),
]


def _upstream(name: str):
    """The object an INTERNALS row names."""
    import torch
    from mmengine._strategy import deepspeed
    from mmengine.dist import utils as dist_utils
    from mmengine import infer
    from mmengine.hooks import CheckpointHook
    from mmengine.logging import HistoryBuffer
    from mmengine.runner import FlexibleRunner, IterBasedTrainLoop, Runner
    from mmengine.runner import checkpoint as runner_checkpoint
    from mmpretrain.models import (MAEPretrainDecoder, MAEViT, SimCLR,
                                   VisionTransformer)
    from mmpretrain.models.heads import LatentCrossCorrelationHead
    from mmpretrain.models.losses import PixelReconstructionLoss
    scope = dict(
        SimCLR=SimCLR, LatentCrossCorrelationHead=LatentCrossCorrelationHead,
        PixelReconstructionLoss=PixelReconstructionLoss, MAEViT=MAEViT,
        MAEPretrainDecoder=MAEPretrainDecoder,
        VisionTransformer=VisionTransformer, HistoryBuffer=HistoryBuffer,
        Runner=Runner, FlexibleRunner=FlexibleRunner,
        IterBasedTrainLoop=IterBasedTrainLoop,
        runner=type('runner', (), dict(checkpoint=runner_checkpoint)),
        dist=type('dist', (), dict(utils=dist_utils)),
        CheckpointHook=CheckpointHook, infer=infer,
        _strategy=type('_strategy', (), dict(deepspeed=deepspeed)),
        DistributedDataParallel=torch.nn.parallel.DistributedDataParallel)
    head, *rest = name.split('.')
    obj = scope[head]
    for part in rest:
        obj = getattr(obj, part)
    return obj


def _version(package: str) -> str:
    return importlib.import_module(package).__version__.split('+')[0]


@pytest.mark.parametrize('package', sorted(STACK))
def test_the_stack_is_the_checked_one(package):
    rows = [i for i in INTERNALS if i.package == package]
    assert _version(package) == STACK[package], (
        f'{package} {_version(package)} is not {STACK[package]}, the version '
        'these were checked against; re-check each, then update STACK:\n' +
        '\n'.join(f'- {i.upstream} (mrcl_plugin/{i.where}): {i.what}'
                  for i in rows))


@pytest.mark.parametrize('internal', INTERNALS, ids=lambda i: i.upstream)
def test_each_internal_is_as_checked(internal):
    try:
        obj = _upstream(internal.upstream)
    except AttributeError as e:
        pytest.fail(f'{internal.package} has no {internal.upstream} any more '
                    f'({e}): mrcl_plugin/{internal.where} relies on '
                    f'{internal.what}')
    digest = hashlib.sha256(inspect.getsource(obj).encode()).hexdigest()
    assert digest[:16] == internal.sha256, (
        f'{internal.package} {internal.upstream} changed: re-check '
        f'mrcl_plugin/{internal.where}, which relies on {internal.what}; '
        f'then record its new hash {digest[:16]}')


# The underscored names the package reads on other objects than its own
# (self, cls), each covered by a row above; numpy's array rebuilders are
# named in the checkpoint allow-list, as numpy itself pickles them.
PRIVATE_NAMES = {
    '_create_buffer', '_statistics_methods', '_init_dist_pytorch',
    '_passing_sync_batchnorm_handle', '_strategy', '_get_checkpoint_loader',
    '_core', '_reconstruct'
}


def test_no_private_name_outside_the_list():
    """A new ``<object>._<name>`` in mrcl_plugin/ must join INTERNALS (and
    this list); names without an underscore that are upstream internals
    all the same (head.bn, loss_module.penalty, loop.dataloader_iterator,
    backbone.out_indices) are listed above by reading."""
    import re
    from pathlib import Path
    root = Path(__file__).resolve().parents[1] / 'mrcl_plugin'
    found = {}
    for path in root.rglob('*.py'):
        for obj, name in re.findall(r'\b([A-Za-z_]\w*)\.(_[a-z]\w*)',
                                    path.read_text()):
            if obj not in ('self', 'cls'):
                found.setdefault(name, set()).add(
                    str(path.relative_to(root)))
    new = {k: v for k, v in found.items() if k not in PRIVATE_NAMES}
    assert not new, f'upstream private names not in INTERNALS: {new}'
