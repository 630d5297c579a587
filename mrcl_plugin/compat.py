"""Compatibility fixes for the 2023-era OpenMMLab stack on today's torch.

Each fix is narrow, names the error it fixes, and has a test in
``tests/test_compat.py`` (the SyncBN ones: ``tests/test_distributed.py``,
which needs two processes) that fails without it. Both functions are
idempotent:

- :func:`apply` runs when ``mrcl_plugin`` is imported (configs do it through
  ``custom_imports``), for every process: the security fixes (a torch whose
  weights-only loading is safe, every checkpoint scheme of mmengine read as
  data by :mod:`mrcl_plugin.checkpoints.schemes`, a resumed checkpoint's
  saved config, and the one an inferencer builds its model from, read as
  data, never run) and the hooks' part of DeepSpeed
  checkpoints, saved and resumed.
- :func:`apply_cpu_distributed` runs only where a run opts in by importing
  :mod:`mrcl_plugin.cpu_distributed` (the gloo config's ``custom_imports``;
  ``tools/train.py`` with a launcher on a machine without a GPU): mmengine's
  distributed init, ``SyncBatchNorm``, DDP's SyncBN check and DeepSpeed's
  ZeRO step on CPU processes. Importing ``mrcl_plugin`` leaves torch as it
  ships.

- :func:`python_drop_path_rates` runs on the modules that
  :class:`mrcl_plugin.engine.CompileHook` compiles, and on nothing else.

Fixes that need no code live elsewhere:

- numpy 2 breaks mmcv 2.1 (``adjust_hue`` overflows, ``np.in1d`` is gone):
  pinned to numpy 1.26 in requirements/openmmlab.txt.
- mmseg imports ftfy and regex without declaring them: installed by
  tools/setup.sh.
- ``mmpretrain::`` config inheritance adds ``_scope_`` to a base's
  ``collate_fn`` dict, which then reaches ``default_collate`` as a keyword
  ("default_collate() got an unexpected keyword argument '_scope_'"): a config
  that inherits one overrides it with ``collate_fn=dict(_delete_=True,
  type='default_collate')`` (see configs/_base_/datasets/).
- mim 0.3.9 looks for ``<site-packages>/mrcl_plugin/.mim/tools/train.py``,
  which a PEP 660 editable install does not create ("... train.py -h
  returned non-zero exit status 2"): setup.py's editable wheel writes stubs
  there (tests/test_install.py, tests/test_mim_train.py).
"""
import functools
import re

import numpy as np
import torch

_APPLIED = False
_CPU_DISTRIBUTED_APPLIED = False


# torch.load(weights_only=True) could run code before 2.6 (CVE-2025-32434).
MIN_TORCH = (2, 6)


def check_torch(version: str = None) -> None:
    """Refuse a torch older than :data:`MIN_TORCH`: every checkpoint is read
    with its weights-only unpickler, which before 2.6 could be made to run
    code (CVE-2025-32434). setup.cfg asks pip for the same bound."""
    version = version or torch.__version__
    found = tuple(int(p) for p in re.findall(r'\d+', version)[:2])
    if found < MIN_TORCH:
        raise ImportError(
            f'mrcl_plugin needs torch>={".".join(map(str, MIN_TORCH))}: '
            f'torch {version} can run code from a checkpoint even when it '
            'loads weights only (CVE-2025-32434)')


def _saved_config_as_data(checkpoint) -> None:
    """mmengine's ``Runner.resume`` and ``FlexibleRunner.resume`` pass a
    checkpoint's ``meta['config']`` (the legacy place of the config's text;
    mmengine 0.10 saves ``meta['cfg']``) to ``Config.fromstring``, which
    executes it: a checkpoint that is pure data to the weights-only reader
    ran Python text it carried. Both read only its ``gpu_ids``; keep those,
    rewritten from the text parsed as data, and nothing else."""
    meta = checkpoint.get('meta') if isinstance(checkpoint, dict) else None
    if isinstance(meta, dict) and 'config' in meta:
        from mmengine.logging import print_log

        from .checkpoints.config_text import gpu_ids_only
        text = meta.pop('config')
        gpu_ids = gpu_ids_only(text) if isinstance(text, str) else None
        if gpu_ids:
            meta['config'] = gpu_ids
        print_log("meta['config'] of the resumed checkpoint read as data, "
                  f'not run; kept: {gpu_ids or "nothing"}',
                  logger='current', level=30)


def _inferencer_reads_config_as_data(init_model):
    """mmengine's ``BaseInferencer`` (mmseg's and mmdet's inferencers)
    given weights and no config takes the config's text from the checkpoint
    (``message_hub['runtime_info']['cfg']`` or ``meta['cfg']``) and passes
    it to ``Config.fromstring``, which runs it. Give it the text parsed as
    data instead (as mmengine dumps a config, it is all data); text that is
    code is refused in one line."""

    @functools.wraps(init_model)
    def wrapper(self, cfg, weights, device='cpu'):
        if not cfg and weights is not None:
            from mmengine.config import Config

            from .checkpoints import CheckpointError, load_checkpoint
            from .checkpoints.config_text import code_in, config_data
            ckpt = load_checkpoint(weights)
            runtime = (ckpt.get('message_hub') or {}).get('runtime_info')
            text = (runtime or {}).get('cfg') if isinstance(
                runtime, dict) else None
            text = text if isinstance(text, str) else ckpt.get(
                'meta', {}).get('cfg')
            if isinstance(text, str):
                if code_in(text):
                    raise CheckpointError(
                        weights, f'its saved config is Python code '
                        f'({code_in(text)[:80]}), which a saved config never '
                        'is; nothing in it was run')
                cfg = Config(config_data(text))
        return init_model(self, cfg, weights, device)

    return wrapper


def _returns_config_as_data(load):
    """``Runner.load_checkpoint`` and each strategy's ``resume``: the
    checkpoint they return has :func:`_saved_config_as_data`'s ``meta``."""

    @functools.wraps(load)
    def wrapper(*args, **kwargs):
        checkpoint = load(*args, **kwargs)
        _saved_config_as_data(checkpoint)
        return checkpoint

    return wrapper


def _cpu_safe_init_dist_pytorch(init_dist_pytorch):
    """mmengine's ``_init_dist_pytorch`` calls ``torch.cuda.set_device`` even
    when the job runs on the CPU (gloo), which fails on a machine without a
    GPU ("Found no NVIDIA driver on your system" / "Torch not compiled with
    CUDA enabled"). Without a GPU, skip that call and nothing else."""

    @functools.wraps(init_dist_pytorch)
    def wrapper(*args, **kwargs):
        if torch.cuda.is_available():
            return init_dist_pytorch(*args, **kwargs)
        set_device = torch.cuda.set_device
        torch.cuda.set_device = lambda device: None
        try:
            return init_dist_pytorch(*args, **kwargs)
        finally:
            torch.cuda.set_device = set_device

    return wrapper


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes, with the summed gradient in the backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        torch.distributed.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        torch.distributed.all_reduce(grad)
        return grad


def _cpu_sync_batch_norm(forward):
    """torch's ``SyncBatchNorm`` refuses CPU tensors in a distributed
    training forward ("SyncBatchNorm expected input tensor to be on GPU or
    XPU or privateuseone"), and its kernels (``torch.batch_norm_stats``) have
    no CPU version, so a projector with mmpretrain's default
    ``norm_cfg=dict(type='SyncBN')`` cannot train on gloo. For a CPU input in
    that case only (one process included: torch refuses it as well),
    compute the same global batch statistics with an all_reduce of the
    per-channel sums (torch's SyncBN also sums the gradients over
    processes); everything else runs torch's forward."""

    @functools.wraps(forward)
    def wrapper(self, input):
        if (input.device.type != 'cpu' or not self.training
                or not torch.distributed.is_available()
                or not torch.distributed.is_initialized()):
            return forward(self, input)
        dtype, input = input.dtype, input.float()  # fp32 under autocast too
        C = input.size(1)
        dims = [0] + list(range(2, input.dim()))
        local = torch.cat((input.sum(dims), input.pow(2).sum(dims),
                           input.new_tensor([input.numel() / C])))
        total = _AllReduceSum.apply(local)
        count = total[-1]
        mean = total[:C] / count
        var = total[C:2 * C] / count - mean.pow(2)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = (self.momentum if self.momentum is not None else
                            1.0 / self.num_batches_tracked.item())
                # in the buffers' own dtype: bf16 where DeepSpeed casts the
                # whole model ("expected dtype c10::BFloat16 for `end`")
                stats = self.running_mean.dtype
                self.running_mean.lerp_(mean.to(stats), momentum)
                self.running_var.lerp_(
                    (var * count / (count - 1)).to(stats), momentum)
        shape = (1, C) + (1, ) * (input.dim() - 2)
        out = (input - mean.view(shape)) * torch.rsqrt(
            var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(dtype)

    return wrapper


def _ddp_accepts_cpu_sync_batch_norm(check):
    """torch's ``DistributedDataParallel`` refuses a CPU module holding a
    ``SyncBatchNorm`` ("SyncBatchNorm layers only work with GPU modules"),
    which :func:`_cpu_sync_batch_norm` makes work: skip that check on the CPU
    only."""

    @functools.wraps(check)
    def wrapper(self, module):
        if self.device_type != 'cpu':
            return check(self, module)

    return wrapper


def _deepspeed_save_calls_back(save_checkpoint):
    """mmengine 0.10.7's ``DeepSpeedStrategy.save_checkpoint`` takes the
    Runner's ``callback`` but never calls it ("`callback` parameter is not
    supported yet"), so no hook's ``before_save_checkpoint`` runs and a
    DeepSpeed checkpoint lacks what hooks add: ``MRCLMetaHook``'s
    ``meta['mrcl']``, without which the converters refuse it. Call it on the
    extra checkpoint dict, which DeepSpeed saves as its client state, as the
    other strategies call it on theirs."""

    @functools.wraps(save_checkpoint)
    def wrapper(self, filename, *, extra_ckpt=None, callback=None, **kw):
        if callback is not None:
            extra_ckpt = {} if extra_ckpt is None else extra_ckpt
            callback(extra_ckpt)
        return save_checkpoint(self, filename, extra_ckpt=extra_ckpt, **kw)

    return wrapper


def _deepspeed_resume_calls_back(resume):
    """The same on resuming: mmengine 0.10.7's ``DeepSpeedStrategy.resume``
    ignores its ``callback``, so no hook's ``after_load_checkpoint`` runs
    and a resumed DeepSpeed run draws other random numbers than the one it
    continues (``RNGStateHook`` restores them there). Call it on the client
    state DeepSpeed returns, as the other strategies call it on theirs."""

    @functools.wraps(resume)
    def wrapper(self, filename, *, callback=None, **kw):
        checkpoint = resume(self, filename, callback=callback, **kw)
        if callback is not None:
            callback(checkpoint)
        return checkpoint

    return wrapper


def _deepspeed_step_without_grad(step):
    """DeepSpeed's ZeRO flattens each parameter group with ``torch.cat`` in
    grad mode, so the flat buffer keeps a ``grad_fn``; each optimizer step
    ends by all-gathering the updated partitions into it
    (``deepspeed/runtime/utils.py``, ``all_gather_into_tensor_dp_groups``).
    NCCL writes the buffer directly; gloo writes through views from
    ``split``, which autograd refuses in grad mode, so two or more CPU
    processes stop at the first step ("Output 0 of Split is a view and is
    being modified inplace"). No step needs autograd: run mmengine's
    ``DeepSpeedOptimWrapper.step`` under ``torch.no_grad``."""

    @functools.wraps(step)
    def wrapper(self, **kwargs):
        with torch.no_grad():
            return step(self, **kwargs)

    return wrapper


def python_drop_path_rates(module: torch.nn.Module) -> None:
    """mmpretrain's ``VisionTransformer`` gives each layer's mmcv
    ``DropPath`` its rate as a numpy float (``np.linspace``), which dynamo
    traces as a tensor, so that mmcv's ``if drop_prob == 0.`` breaks the
    compiled graph in every layer ("Detected data-dependent branching ...
    drop.py, line 18, in drop_path"). Make each such rate the same Python
    float, in ``module`` only."""
    from mmcv.cnn.bricks.drop import DropPath
    for m in module.modules():
        if isinstance(m, DropPath) and isinstance(m.drop_prob, np.generic):
            m.drop_prob = float(m.drop_prob)


def _patch(owner, name: str, fix) -> None:
    """``owner.name = fix(owner.name)``, once per fix: the wrapper carries
    the names of the fixes in it (``__mrcl_compat__``), so that applying
    again changes nothing."""
    method = getattr(owner, name)
    done = getattr(method, '__mrcl_compat__', ())
    if fix.__name__ not in done:
        wrapped = fix(method)
        wrapped.__mrcl_compat__ = (*done, fix.__name__)
        setattr(owner, name, wrapped)


def apply() -> None:
    """Apply the fixes every process needs, once."""
    global _APPLIED
    if _APPLIED:
        return
    check_torch()
    from .checkpoints.schemes import register_schemes
    register_schemes()
    from mmengine._strategy import BaseStrategy
    from mmengine._strategy.deepspeed import DeepSpeedStrategy
    from mmengine.infer import BaseInferencer
    from mmengine.runner import Runner
    _patch(BaseInferencer, '_init_model', _inferencer_reads_config_as_data)
    _patch(DeepSpeedStrategy, 'save_checkpoint', _deepspeed_save_calls_back)
    _patch(DeepSpeedStrategy, 'resume', _deepspeed_resume_calls_back)
    strategies = [BaseStrategy]
    for cls in strategies:  # grows while it runs: every subclass
        strategies += cls.__subclasses__()
    for owner, name in [(Runner, 'load_checkpoint')] + [
            (cls, 'resume') for cls in strategies if 'resume' in vars(cls)]:
        _patch(owner, name, _returns_config_as_data)
    _APPLIED = True


def apply_cpu_distributed() -> None:
    """Apply the fixes for distributed runs on CPU processes, once."""
    global _CPU_DISTRIBUTED_APPLIED
    if _CPU_DISTRIBUTED_APPLIED:
        return
    from mmengine._strategy.deepspeed import DeepSpeedOptimWrapper
    from mmengine.dist import utils as dist_utils
    _patch(dist_utils, '_init_dist_pytorch', _cpu_safe_init_dist_pytorch)
    _patch(torch.nn.SyncBatchNorm, 'forward', _cpu_sync_batch_norm)
    _patch(torch.nn.parallel.DistributedDataParallel,
           '_passing_sync_batchnorm_handle', _ddp_accepts_cpu_sync_batch_norm)
    _patch(DeepSpeedOptimWrapper, 'step', _deepspeed_step_without_grad)
    _CPU_DISTRIBUTED_APPLIED = True
