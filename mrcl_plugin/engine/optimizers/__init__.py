from .backbone_layer_decay import BackboneLayerDecayOptimWrapperConstructor
from .cpu_bf16_optim_wrapper import CPUBF16OptimWrapper

__all__ = ['BackboneLayerDecayOptimWrapperConstructor', 'CPUBF16OptimWrapper']
