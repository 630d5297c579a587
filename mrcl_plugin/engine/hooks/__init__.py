from .atomic_checkpoint_hook import AtomicCheckpointHook
from .compile_hook import CompileHook
from .dense_knn_hook import DenseKNNHook
from .knn_hook import KNNHook
from .non_finite_loss_hook import NonFiniteLossHook
from .pretrained_check_hook import PretrainedCheckHook
from .rng_state_hook import RNGStateHook

__all__ = [
    'AtomicCheckpointHook', 'CompileHook', 'DenseKNNHook', 'KNNHook', 'NonFiniteLossHook',
    'PretrainedCheckHook', 'RNGStateHook'
]
