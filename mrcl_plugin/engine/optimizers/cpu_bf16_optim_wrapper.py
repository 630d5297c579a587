from contextlib import contextmanager, nullcontext
from typing import Optional

import torch
from mmengine.optim import OptimWrapper
from mmpretrain.registry import OPTIM_WRAPPERS
from torch.nn.attention import SDPBackend, sdpa_kernel


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

    Args:
        sdpa_backend (str, optional): the kernel of
            ``F.scaled_dot_product_attention`` on a CPU, forward and
            backward: ``'math'``, ``'flash_attention'``, or
            None for torch's choice (flash). Default ``'math'``: torch
            2.14's CPU flash kernel is slow in bf16, most of all its
            backward at short sequences such as the small SimCLR
            config's 65 tokens (measured in docs/speed.md, "The attention
            kernel on a CPU", with ``benchmark_train_step.py
            --sdpa-backend``).
            The math kernel keeps each layer's attention matrix for the
            backward, so ``'flash_attention'`` is the one to measure
            memory with (a GPU's kernels keep none).
    """

    def __init__(self, *args, loss_scale=None, dtype=None, use_fsdp=False,
                 sdpa_backend: Optional[str] = 'math', **kwargs):
        if dtype not in (None, 'bfloat16', torch.bfloat16):
            raise ValueError(
                f'optim_wrapper.dtype = {dtype!r}: CPUBF16OptimWrapper runs '
                'bf16 autocast only (None or bfloat16)')
        if sdpa_backend not in (None, 'math', 'flash_attention'):
            raise ValueError(
                f'optim_wrapper.sdpa_backend = {sdpa_backend!r}: a CPU has '
                "the 'math' and 'flash_attention' kernels (None: torch's "
                'choice)')
        self.sdpa_backend = sdpa_backend
        super().__init__(*args, **kwargs)

    def attention_kernel(self):
        """A context that runs attention with ``sdpa_backend``."""
        if self.sdpa_backend is None:
            return nullcontext()
        return sdpa_kernel(getattr(SDPBackend, self.sdpa_backend.upper()))

    @contextmanager
    def optim_context(self, model: torch.nn.Module):
        with super().optim_context(model), torch.autocast(
                'cpu', dtype=torch.bfloat16), self.attention_kernel():
            yield

    def backward(self, loss: torch.Tensor, **kwargs) -> None:
        # a checkpointed block recomputes its forward here, and must meet
        # the kernel its forward met (torch.utils.checkpoint restores the
        # autocast state, not the attention kernel)
        with self.attention_kernel():
            super().backward(loss, **kwargs)
