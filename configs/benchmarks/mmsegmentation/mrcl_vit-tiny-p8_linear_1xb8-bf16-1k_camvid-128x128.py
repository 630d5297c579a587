# The frozen-encoder readout of the CamVid miniature: the same data,
# schedule and encoder as the UperNet config beside it, but the encoder is
# frozen (every layer) and a linear head (one 1x1 convolution, mmseg's
# FCNHead without convolutions) reads its last block's patch tokens. It
# asks what the patch features hold, as the dense retrieval does, through a
# trained readout.
_base_ = ['./mrcl_vit-tiny-p8_upernet_1xb8-bf16-1k_camvid-128x128.py']

model = dict(
    # the last block's tokens after the final norm, as the dense retrieval
    # reads them
    backbone=dict(out_indices=[5], frozen_stages=6, drop_path_rate=0.,
                  final_norm=True),
    neck=None,
    decode_head=dict(
        _delete_=True,
        type='FCNHead',
        in_channels={{_base_.embed_dims}},
        channels={{_base_.embed_dims}},
        num_convs=0,
        concat_input=False,
        dropout_ratio=0.,
        num_classes={{_base_.num_classes}},
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False,
                         loss_weight=1.0)),
    auxiliary_head=None)

# the encoder's final norm is loaded and checked too
custom_hooks = [dict(type='mmpretrain.PretrainedCheckHook', module='backbone')]

# no layer decay over a frozen encoder: the head alone, at a linear probe's
# lr
optim_wrapper = dict(
    _delete_=True,
    type='mmpretrain.CPUBF16OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-2, weight_decay=0.))
