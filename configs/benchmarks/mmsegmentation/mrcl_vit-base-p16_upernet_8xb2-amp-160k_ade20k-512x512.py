# ADE20K semantic segmentation from an MRCL ViT-B/16 (Table 2a): mmseg's own
# MAE recipe (UperNet, 512x512 crops, 160k iterations at 8 GPUs x 2, AdamW
# lr 1e-4 wd 0.05, layer decay 0.65, drop path 0.1, slide inference; MAE's
# 48.1 mIoU in Table 2a is this recipe) with only the backbone replaced by
# mmpretrain's VisionTransformer, whose parameter names an MRCL checkpoint
# has, so the converted encoder loads without key surgery.
#
#   bash tools/benchmarks/mmsegmentation/ade20k.sh PRETRAIN_CKPT GPUS
#
# Set the converted encoder with
#   --cfg-options model.backbone.init_cfg.checkpoint=ENCODER.pth
_base_ = ['mmseg::mae/mae-base_upernet_8xb2-amp-160k_ade20k-512x512.py']

custom_imports = dict(imports=['mrcl_plugin'], allow_failed_imports=False)

pretrained = 'pretrain/mrcl_vit-base-p16_mmpretrain.pth'
model = dict(
    # mmseg's EncoderDecoder hands `pretrained` to the backbone, which
    # mmpretrain's ViT has no argument for: the init_cfg below loads it.
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='mmpretrain.VisionTransformer',
        arch='base',
        img_size=512,  # pos_embed 14x14 -> 32x32 on load (_prepare_pos_embed)
        patch_size=16,
        out_indices=[3, 5, 7, 11],  # layers 4/6/8/12, as MAE's config
        out_type='featmap',
        drop_path_rate=0.1,
        # MAE's mmseg backbone has no final norm (the neck normalises):
        # the checkpoint's ln1 is left out, see PretrainedCheckHook.
        final_norm=False,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)))

# mmseg's LayerDecayOptimizerConstructor picks its rule by the backbone's
# class name and raises for VisionTransformer; this one reads the depth from
# mmpretrain's VisionTransformer.get_layer_depth: cls_token/pos_embed/
# patch_embed id 0, layers.i id i+1, neck and heads id 13 (lr x 1), the lr
# of id k is 1e-4 * 0.65 ** (13 - k). No weight decay on norms, biases,
# pos_embed, cls_token (what mmseg's MAE recipe means to do).
optim_wrapper = dict(
    constructor='mmpretrain.BackboneLayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(
        _delete_=True,
        layer_decay_rate=0.65,
        flat_decay_mult=0.,
        custom_keys={
            '.cls_token': dict(decay_mult=0.),
            '.pos_embed': dict(decay_mult=0.),
        }))

# Loud loading: fail at start, naming the keys, when the checkpoint does not
# fit the backbone; log how many tensors were loaded.
custom_hooks = [
    dict(
        type='mmpretrain.PretrainedCheckHook',
        module='backbone',
        ignore_keys=['ln1.weight', 'ln1.bias'])
]
