from contextlib import contextmanager

import torch
from mmengine.optim import OptimWrapper
from mmpretrain.registry import OPTIM_WRAPPERS


@OPTIM_WRAPPERS.register_module()
class CPUBF16OptimWrapper(OptimWrapper):
    """``OptimWrapper`` whose forward runs under CPU bf16 autocast.

    mmengine's ``AmpOptimWrapper`` asserts a GPU, NPU or MLU at construction,
    so CPU mixed precision needs its own wrapper; bf16 keeps fp32's exponent
    range, so no loss scaling is needed. Parameters, gradients and the
    optimizer state stay fp32; MRCL's loss terms are computed in fp32.

    It takes ``AmpOptimWrapper``'s arguments, so a GPU config runs on a CPU
    with ``--cfg-options optim_wrapper.type=CPUBF16OptimWrapper`` alone
    (what ``tools/train.py`` does there by itself): ``loss_scale`` and
    ``use_fsdp`` have nothing to do without fp16 gradients and are ignored;
    ``dtype`` must be bf16 (None, 'bfloat16' or ``torch.bfloat16``).
    """

    def __init__(self, *args, loss_scale=None, dtype=None, use_fsdp=False,
                 **kwargs):
        if dtype not in (None, 'bfloat16', torch.bfloat16):
            raise ValueError(
                f'optim_wrapper.dtype = {dtype!r}: CPUBF16OptimWrapper runs '
                'bf16 autocast only (None or bfloat16)')
        super().__init__(*args, **kwargs)

    @contextmanager
    def optim_context(self, model: torch.nn.Module):
        with super().optim_context(model), torch.autocast(
                'cpu', dtype=torch.bfloat16):
            yield
