from .compile_hook import CompileHook
from .dense_knn_hook import DenseKNNHook
from .knn_hook import KNNHook
from .mrcl_meta_hook import MRCLMetaHook
from .non_finite_loss_hook import NonFiniteLossHook
from .pretrained_check_hook import PretrainedCheckHook
from .rng_state_hook import RNGStateHook

__all__ = [
    'CompileHook', 'DenseKNNHook', 'KNNHook', 'MRCLMetaHook',
    'NonFiniteLossHook', 'PretrainedCheckHook', 'RNGStateHook'
]
