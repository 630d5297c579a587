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
    """

    @contextmanager
    def optim_context(self, model: torch.nn.Module):
        with super().optim_context(model), torch.autocast(
                'cpu', dtype=torch.bfloat16):
            yield
