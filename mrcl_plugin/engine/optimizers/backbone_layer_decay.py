from functools import partial

from mmpretrain.engine.optimizers import \
    LearningRateDecayOptimWrapperConstructor
from mmpretrain.registry import OPTIM_WRAPPER_CONSTRUCTORS


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class BackboneLayerDecayOptimWrapperConstructor(
        LearningRateDecayOptimWrapperConstructor):
    """mmpretrain's layer-wise lr decay for a segmentor or detector whose
    ``backbone`` is mmpretrain's ``VisionTransformer``.

    mmseg's ``LayerDecayOptimizerConstructor`` picks its id rule by the
    backbone's class name (``BEiT``/``MAE``/``ConvNeXt``) and raises
    ``NotImplementedError`` for ``VisionTransformer``; mmpretrain's needs a
    ``get_layer_depth`` on the model, which ``EncoderDecoder`` and
    ``MaskRCNN`` lack. This takes the depth from
    ``model.backbone.get_layer_depth(name, 'backbone.')``: with L layers,
    ``cls_token``, ``pos_embed`` and ``patch_embed`` get id 0,
    ``layers.i`` id i + 1, anything else (the backbone's final norm, neck,
    heads) id L + 1; the lr is ``lr * layer_decay_rate ** (L + 1 - id)``.
    ``paramwise_cfg`` is mmpretrain's (``layer_decay_rate``,
    ``flat_decay_mult``, ``custom_keys`` ...).
    """

    def add_params(self,
                   params,
                   module,
                   prefix='',
                   get_layer_depth=None,
                   **kwargs):
        if get_layer_depth is None and not hasattr(module, 'get_layer_depth'):
            backbone = getattr(module, 'backbone', None)
            if not hasattr(backbone, 'get_layer_depth'):
                raise TypeError(
                    f'{type(self).__name__} needs model.backbone with a '
                    'get_layer_depth method (mmpretrain.VisionTransformer), '
                    f'got {type(backbone).__name__}')
            get_layer_depth = partial(backbone.get_layer_depth,
                                      prefix='backbone.')
        super().add_params(params, module, prefix, get_layer_depth, **kwargs)
