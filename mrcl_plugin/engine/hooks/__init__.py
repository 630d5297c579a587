from .knn_hook import KNNHook
from .pretrained_check_hook import PretrainedCheckHook

__all__ = ['KNNHook', 'PretrainedCheckHook']
