"""``torch.compile`` for the modules that hold a step's FLOPs."""
from typing import Sequence

import torch
from mmengine.hooks import Hook
from mmpretrain.registry import HOOKS

from ...compat import python_drop_path_rates
from .utils import bare_model

COMPILED_TYPES = ('MRCLViT', 'MAEPretrainDecoder', 'CheckpointedMAEDecoder')


@HOOKS.register_module()
class CompileHook(Hook):
    """Compile every module of the model whose class is one of ``types``
    (each in place: :meth:`torch.nn.Module.compile`), before the run.

    mmengine's own ``compile=True`` compiles the whole ``train_step`` with
    its data samples, which dynamo cannot trace (torch 2.14: "AttributeError:
    'UserDefinedDictVariable' object has no attribute 'items'"). This hook
    compiles the encoder and the decoder instead, the momentum target's
    encoder copy (BYOL, MoCo v3) included, and keeps the Python around them
    (data preprocessor, projector, losses, optimizer) eager. The mask is
    drawn eagerly (``MRCLViT.draw_mask``), so a seed gives the same masks
    compiled or not. In-place compilation keeps the module tree, hence the
    checkpoint keys (no ``_orig_mod.``).

    Args:
        types (Sequence[str]): class names of the modules to compile.
        **compile_cfg: keyword arguments of :func:`torch.compile`, e.g.
            ``backend='aot_eager'`` or ``mode='max-autotune'``.
    """

    priority = 'VERY_HIGH'

    def __init__(self, types: Sequence[str] = COMPILED_TYPES,
                 **compile_cfg) -> None:
        backend = compile_cfg.get('backend', 'inductor')
        known = torch.compiler.list_backends(exclude_tags=())
        if not callable(backend) and backend not in known:
            raise ValueError(
                f'CompileHook.backend = {backend!r}: not a torch.compile '
                f'backend (one of {", ".join(known)})')
        self.types = tuple(types)
        self.compile_cfg = compile_cfg

    def before_run(self, runner) -> None:
        compiled = compile_modules(bare_model(runner), self.types,
                                   **self.compile_cfg)
        runner.logger.info(f'CompileHook: torch.compile({self.compile_cfg}) '
                           f'of {", ".join(compiled)}; the first iterations '
                           'compile them (minutes on a CPU)')


def compile_modules(model, types: Sequence[str] = COMPILED_TYPES,
                    **compile_cfg) -> list:
    """Compile in place every module of ``model`` whose class name is in
    ``types``; their names in ``model``."""
    names = [name for name, m in model.named_modules()
             if type(m).__name__ in types]
    if not names:
        raise ValueError(f'CompileHook.types {tuple(types)}: the model has '
                         'no module of these classes')
    for name in names:
        compile_in_place(model.get_submodule(name), **compile_cfg)
    return names


def compile_in_place(module, **compile_cfg) -> None:
    """:meth:`torch.nn.Module.compile` of ``module``, its drop-path rates
    made Python floats first (:func:`python_drop_path_rates`)."""
    python_drop_path_rates(module)
    module.compile(**compile_cfg)
