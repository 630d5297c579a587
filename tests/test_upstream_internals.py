"""Every private attribute or method of torch, mmengine, mmpretrain or
setuptools that the package, its tools, setup.py or the tests' fixtures
reach into, and every upstream method body they repeat, pinned to the stack
versions it was checked against.

When a version moves, or an upstream source changes under the same
version, these tests fail with a message naming what to re-check and where
we use it. Re-check it, then update STACK or the recorded hash here.
The hash is of the upstream source (``inspect.getsource``; an ATen
operator's schema, which is all torch has of it in Python), so a change of
any of its lines shows.
"""
import ast
import hashlib
import importlib
import inspect
import re
from pathlib import Path
from typing import NamedTuple

import pytest

STACK = {'torch': '2.14.1', 'mmengine': '0.10.7', 'mmpretrain': '1.2.0',
         'setuptools': '80.9.0'}
ROOT = Path(__file__).resolve().parents[1]


class Internal(NamedTuple):
    upstream: str  # the import path of the object whose source is hashed
    sha256: str  # the first 16 hex digits of its source's
    where: str  # the file(s) of this repository that rely on it
    what: str  # what we rely on: what to re-check

    @property
    def package(self) -> str:
        return self.upstream.split('.')[0]


CHECKPOINT = 'mmengine.runner.checkpoint.'
VIT = 'mmpretrain.models.VisionTransformer.'
VIT_SAM = 'mmpretrain.models.backbones.vit_sam.'
VITDET = 'mrcl_plugin/models/backbones/vitdet_vit.py'
SCHEMES = 'mrcl_plugin/checkpoints/schemes.py'
COMPAT = 'mrcl_plugin/compat.py'
SDPA_CPU = 'torch.ops.aten._scaled_dot_product_flash_attention_for_cpu'

INTERNALS = [
    Internal('mmpretrain.models.SimCLR._create_buffer', 'be1e851b9c5699e7',
             'mrcl_plugin/models/algorithms/mr_simclr.py',
             'its (mask, pos_idx, neg_mask) for a 2N batch, from which '
             'MR-SimCLR builds the InfoNCE logits as SimCLR.loss does'),
    Internal('mmpretrain.models.heads.LatentCrossCorrelationHead',
             'afeabaaa13721f14',
             'mrcl_plugin/models/algorithms/mr_barlowtwins.py',
             'its .bn (BatchNorm1d) and .loss_module (CrossCorrelationLoss), '
             'called on their own to compute the cross-correlation'),
    Internal('mmpretrain.models.losses.PixelReconstructionLoss',
             'fbbbd0ea0cfaa961',
             'mrcl_plugin/models/heads/reconstruction_head.py',
             'its .penalty (per-pixel L1/L2) and .channel, used for the '
             'masked and unmasked terms separately'),
    Internal('mmpretrain.models.MAEViT.forward', 'd2086cfb464d1fa6',
             'mrcl_plugin/models/backbones/mrcl_vit.py',
             'MRCLViT.forward repeats its masked branch with its own mask '
             'generator: patch embed, gather of the visible tokens, class '
             'token, layers, norm1'),
    Internal('mmpretrain.models.MAEPretrainDecoder.forward',
             'afe09e834921c270',
             'mrcl_plugin/models/necks/checkpointed_mae_decoder.py',
             'CheckpointedMAEDecoder.forward repeats its steps to wrap each '
             'block in activation checkpointing'),
    Internal(VIT + 'forward', 'b1f4f294be29f9c1',
             f'mrcl_plugin/evaluation/patch_tokens.py, {VITDET}',
             'out_indices and out_type="featmap" set on the instance give '
             'the patch tokens of chosen blocks (final norm after the last, '
             'position embedding resized to the input); ViTDetViT.forward '
             'repeats it on a (B, H, W, C) token map: patch embed, '
             'resize_pos_embed, drop_after_pos, pre_norm, layers, ln1 if '
             'final_norm, out_indices'),
    Internal(VIT + '_prepare_pos_embed', 'e0a1050a1919fe8f',
             f'{VITDET}, mrcl_plugin/engine/hooks/pretrained_check_hook.py',
             "its (state_dict, prefix, ...) load hook resizes a checkpoint's "
             'pos_embed to the grid: ViTDetViT drops the class slot before '
             'calling it (super()), PretrainedCheckHook calls it on the '
             'state it compares'),
    Internal(VIT + '_format_output', 'e714cbbb558bef54', VITDET,
             'given (B, N, C) tokens and the (H, W) grid it returns the '
             "out_type's output, (B, C, H, W) for 'featmap'"),
    Internal(VIT_SAM + 'get_rel_pos', '5a76e099b01b2d8b', VITDET,
             '(q_size, k_size, rel_pos) -> the (q_size, k_size, C) table, '
             'resized by linear interpolation, of ViTDet/SAM'),
    Internal(VIT_SAM + 'window_partition', 'ab4270f6e518e93d', VITDET,
             '(B, H, W, C) -> (B * windows, s, s, C) and the padded (H, W), '
             'zero-padding at the bottom and right'),
    Internal(VIT_SAM + 'window_unpartition', 'f049a48111dbfff8', VITDET,
             "window_partition's inverse, the padding cut off"),
    Internal('mmpretrain.models.utils.MultiheadAttention', '1448be7670afc09d',
             VITDET,
             'WindowRelPosAttention.forward repeats its forward (qkv '
             'reshaped to heads, scaled_dot_product_attention with '
             'attn_drop in training, proj, then out_drop(gamma1(proj_drop))) '
             'on windows; ViTDetViT reads attn_drop (a float), proj_drop.p '
             'and qkv.bias of the attention it replaces'),
    Internal('mmengine.logging.HistoryBuffer', '0b351b685d552f7d',
             'mrcl_plugin/checkpoints/reader.py',
             'the state it pickles (max_length, _log_history, '
             '_count_history, statistics_methods as getattr(HistoryBuffer, '
             'name) of its four built-in statistics) and its constructor, '
             'which rebuilds it from that state'),
    Internal('mmengine.runner.IterBasedTrainLoop', 'c02ff7910f7db123',
             'mrcl_plugin/engine/hooks/rng_state_hook.py',
             'loop.dataloader_iterator, wrapped to restore the RNG states '
             'after a resume skips the trained batches'),
    Internal('mmengine.dist.utils._init_dist_pytorch', '8a14beff62037f6b',
             COMPAT, 'wrapped to skip torch.cuda.set_device without a GPU'),
    Internal('torch.nn.SyncBatchNorm.forward', '0428bead60358289', COMPAT,
             '_cpu_sync_batch_norm reimplements its training forward for '
             'CPU processes: batch statistics over all but the channel '
             'dimension of every process, running_mean/var updated with '
             'momentum (None: a cumulative average over '
             'num_batches_tracked) and the unbiased variance, eps, affine; '
             'every other case calls it'),
    Internal('mmengine.runner.checkpoint.save_checkpoint',
             '7f60c6ca167fd4dd', 'mrcl_plugin/checkpoints/atomic.py',
             'a local checkpoint is written with one file_backend.put from '
             "the hook's backend_args, which AtomicLocalBackend makes atomic"),
    Internal('mmengine.hooks.CheckpointHook._save_checkpoint_with_step',
             'cdbc1b54c7c88d95', 'mrcl_plugin/checkpoints/atomic.py',
             'it writes last_checkpoint with a bare open after the '
             'checkpoint, which latest_checkpoint falls back from when torn'),
    Internal('mmengine._strategy.deepspeed.DeepSpeedStrategy.'
             'save_checkpoint', 'c53947bfe49f8a27', COMPAT,
             'wrapped to call the callback it drops on extra_ckpt, which it '
             "passes to DeepSpeed's save_checkpoint as the client state"),
    Internal('mmengine._strategy.deepspeed.DeepSpeedStrategy.resume',
             'ef24384362660839', COMPAT,
             'wrapped to call the callback it drops on the client state '
             "DeepSpeed's load_checkpoint returns, and to read its "
             "meta['config'] as data"),
    Internal('mmengine.infer.BaseInferencer._init_model', 'a60060d85e023a7e',
             COMPAT,
             'given no cfg it reads the config text from '
             "message_hub['runtime_info']['cfg'] or meta['cfg'] and runs "
             'Config.fromstring on it; wrapped to pass the text as data'),
    Internal('mmengine.runner.Runner.resume', '30cc2d3b4e1afabd', COMPAT,
             "it passes meta['config'] of the checkpoint that "
             'self.load_checkpoint returns to Config.fromstring, reading '
             'only gpu_ids: load_checkpoint is wrapped to leave only those'),
    Internal('mmengine.runner.FlexibleRunner.resume', 'ed1d4658229635bf',
             COMPAT,
             "the same, on what self.strategy.resume returns: every "
             "strategy's resume is wrapped"),
    Internal(CHECKPOINT + 'CheckpointLoader', 'c162242c7dfab146', SCHEMES,
             '_schemes (prefix regex -> loader) and _get_checkpoint_loader, '
             'the one place every load_from, resume and init_cfg passes; '
             'register_scheme(force=True) replaces each loader'),
    Internal(CHECKPOINT + 'load_from_openmmlab', 'c17b71970067b708',
             SCHEMES,
             'the name tables our loader reads the same way: '
             'get_external_models, get_deprecated_model_names, '
             '_get_mmengine_home (load_from_mmcls: get_mmcls_models, '
             '_process_mmcls_checkpoint; load_from_torchvision: '
             'get_torchvision_models)'),
    Internal(CHECKPOINT + 'load_from_mmcls', '3e1213f5442779a8', SCHEMES,
             'as load_from_openmmlab'),
    Internal(CHECKPOINT + 'load_from_torchvision', 'ad456a3b0615a9bb',
             SCHEMES, 'as load_from_openmmlab'),
    Internal(CHECKPOINT + '_get_mmengine_home', 'e21bb1b0fbd1ad5c', SCHEMES,
             'the folder a relative open-mmlab:// table entry is under'),
    Internal(CHECKPOINT + '_process_mmcls_checkpoint', '07b57b2de782847d',
             SCHEMES,
             "an mmcls checkpoint's keys renamed for mmengine, applied to "
             'what the weights-only reader returns'),
    Internal(CHECKPOINT + 'get_external_models', '503f399d11a109cd',
             SCHEMES, 'the open-mmlab:// table, {name: URL or path}'),
    Internal(CHECKPOINT + 'get_deprecated_model_names', '3f956482279bd7a7',
             SCHEMES, '{old name: new name} of open-mmlab:// models'),
    Internal(CHECKPOINT + 'get_mmcls_models', 'f38739c24d69c2e3', SCHEMES,
             'the mmcls:// table, {name: URL}'),
    Internal(CHECKPOINT + 'get_torchvision_models', 'fd28466f2112c72e',
             SCHEMES, 'the torchvision:// table, {name: URL}'),
    Internal(CHECKPOINT + 'load_from_ceph', 'dabd19a85fecf851', SCHEMES,
             'get_file_backend(filename, backend_args=dict(backend=...))'
             '.get(filename) gives the bytes'),
    Internal(CHECKPOINT + 'load_from_pavi', '65d239620a49308d', SCHEMES,
             "pavi.modelcloud.get(path).download(file) fetches the file"),
    Internal('mmengine._strategy.deepspeed.DeepSpeedOptimWrapper.step',
             'b284acd86acbb462', COMPAT,
             "wrapped in no_grad: it calls DeepSpeed's engine.step, whose "
             'ZeRO all-gather fails in grad mode on gloo'),
    Internal('torch.nn.parallel.DistributedDataParallel.'
             '_passing_sync_batchnorm_handle', '4ac73592414589fb', COMPAT,
             'wrapped so that DDP accepts SyncBatchNorm on CPU processes'),
    Internal(SDPA_CPU, '35df1dcc7278c684',
             'tools/analysis_tools/benchmark_train_step.py',
             "torch's CPU attention kernel, whose FLOPs the benchmark "
             'counts from its first three arguments (query, key, value)'),
    Internal(SDPA_CPU + '_backward', 'cdd1691f211e76bc',
             'tools/analysis_tools/benchmark_train_step.py',
             'its backward, counted from (grad_out, query, key, value)'),
    Internal('setuptools.command.editable_wheel.editable_wheel.'
             '_select_strategy', '28fa98ad6c53ffab', 'setup.py',
             '(name, tag, build_lib) -> the editable strategy, which '
             "EditableWheelForMim wraps to add mim's stubs to the wheel"),
    Internal('setuptools.command.editable_wheel.EditableStrategy',
             'fd71945b08639489', 'setup.py',
             'a strategy is a context manager called as (wheel, files, '
             'mapping), which _WithMimStubs forwards'),
    Internal('mmengine.utils.manager', '0b4d75679ec181c1',
             'tests/mrcl_testing.py',
             "each ManagerMixin class's own _instance_dict (ManagerMeta), "
             'the latest instance the current one: mmengine_state_restored '
             'saves and replaces it'),
]


def _upstream(path: str):
    """The object at an import path: its longest importable module, then
    attributes."""
    parts = path.split('.')
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module('.'.join(parts[:i]))
        except ImportError:
            continue
        for part in parts[i:]:
            obj = getattr(obj, part)
        return obj
    raise ImportError(path)


def _source(obj) -> str:
    if hasattr(obj, 'overloads'):  # an ATen operator: its schemas
        return '\n'.join(
            str(getattr(obj, name)._schema) for name in obj.overloads())
    return inspect.getsource(obj)


def _version(package: str) -> str:
    return importlib.import_module(package).__version__.split('+')[0]


@pytest.mark.parametrize('package', sorted(STACK))
def test_the_stack_is_the_checked_one(package):
    rows = [i for i in INTERNALS if i.package == package]
    assert _version(package) == STACK[package], (
        f'{package} {_version(package)} is not {STACK[package]}, the version '
        'these were checked against; re-check each, then update STACK:\n' +
        '\n'.join(f'- {i.upstream} ({i.where}): {i.what}' for i in rows))


@pytest.mark.parametrize('internal', INTERNALS, ids=lambda i: i.upstream)
def test_each_internal_is_as_checked(internal):
    try:
        obj = _upstream(internal.upstream)
    except (AttributeError, ImportError) as e:
        pytest.fail(f'{internal.package} has no {internal.upstream} any more '
                    f'({e}): {internal.where} relies on {internal.what}')
    digest = hashlib.sha256(_source(obj).encode()).hexdigest()
    assert digest[:16] == internal.sha256, (
        f'{internal.upstream} changed: re-check {internal.where}, which '
        f'relies on {internal.what}; then record its new hash {digest[:16]}')


# -- the scan for private names -----------------------------------------------

# _name, not __dunder__ and not a config key such as _delete_ or _scope_
PRIVATE = re.compile(r'_[a-z](\w*[a-z0-9])?')
# used with no row: numpy's array rebuilder, named in the checkpoint
# allow-list as numpy itself pickles it
WITHOUT_ROW = {'_reconstruct'}


def _scanned():
    for folder in ('mrcl_plugin', 'tools'):
        yield from sorted((ROOT / folder).rglob('*.py'))
    yield ROOT / 'setup.py'


def _own_names(trees) -> set:
    """Every name this repository defines or assigns, attributes included."""
    names = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef,
                                 ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(
                    node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.Attribute) and isinstance(
                    node.ctx, ast.Store):
                names.add(node.attr)
    return names


def _private_names(tree, own: set):
    """The upstream private names ``tree`` uses: ``obj._name`` and
    ``super()._name``; ``self._name`` that this repository never defines
    (inherited); ``'_name'`` after an object in a call (``getattr``,
    ``hasattr``, ``setattr``, ``compat._patch``); ``from x import _name``
    and private modules (``mmengine._strategy``)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and PRIVATE.fullmatch(node.attr):
            on_self = (isinstance(node.value, ast.Name)
                       and node.value.id in ('self', 'cls'))
            if not on_self or node.attr not in own:
                yield node.attr
        elif isinstance(node, ast.Call):  # (obj, '_name', ...)
            yield from (arg.value for arg in node.args[1:]
                        if isinstance(arg, ast.Constant)
                        and isinstance(arg.value, str)
                        and PRIVATE.fullmatch(arg.value))
        elif isinstance(node, ast.ImportFrom) and not node.level:
            yield from filter(PRIVATE.fullmatch, node.module.split('.'))
            yield from (alias.name for alias in node.names
                        if PRIVATE.fullmatch(alias.name)
                        and alias.name not in own)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield from filter(PRIVATE.fullmatch, alias.name.split('.'))


def _found() -> dict:
    trees = {path: ast.parse(path.read_text()) for path in _scanned()}
    own = _own_names(trees.values())
    found = {}
    for path, tree in trees.items():
        for name in _private_names(tree, own):
            found.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    return found


def test_the_scan_sees_each_kind_of_use():
    tree = ast.parse(
        'from mmengine._strategy import BaseStrategy\n'
        'from mmengine.runner.checkpoint import _get_mmengine_home\n'
        'class A(B):\n'
        '    def _own(self):\n'
        '        super()._prepare(self._own(), self._inherited)\n'
        '        getattr(obj, "_by_name"), obj._attr, s.split("_b")\n'
        '        hasattr(obj, "_key_")\n')
    assert set(_private_names(tree, _own_names([tree]))) == {
        '_strategy', '_get_mmengine_home', '_prepare', '_inherited',
        '_by_name', '_attr'}


def test_every_private_name_in_use_has_a_row():
    """A new upstream private name in mrcl_plugin/, tools/ or setup.py must
    be named by an INTERNALS row (its import path or what it says we rely
    on). Names without an underscore that are upstream internals all the
    same (head.bn, loss_module.penalty, loop.dataloader_iterator,
    backbone.out_indices) are in the rows by reading."""
    found = _found()
    rows = '\n'.join(f'{i.upstream} {i.what}' for i in INTERNALS)
    missing = {
        name: sorted(where)
        for name, where in found.items()
        if name not in WITHOUT_ROW and not re.search(rf'\b{name}\b', rows)
    }
    assert not missing, f'upstream private names with no row: {missing}'
    assert WITHOUT_ROW <= set(found), 'WITHOUT_ROW names one no more used'
