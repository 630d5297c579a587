# Table 1's MR-BarlowTwins recipe on mmengine's FlexibleRunner with FSDP
# (PyTorch's FullyShardedDataParallel): parameters, gradients and AdamW
# states sharded over the GPUs, for models or batches that DDP cannot fit.
# The same model, data and schedule; the base's AmpOptimWrapper gets
# FSDPStrategy's use_fsdp=True (a sharded grad scaler).
#   bash tools/dist_train.sh THIS_CONFIG 8
_base_ = 'mrcl-barlowtwins_vit-base-p16_8xb64-coslr-600e_in1k.py'

runner_type = 'FlexibleRunner'
strategy = dict(
    type='FSDPStrategy',
    model_wrapper=dict(
        # one FSDP unit per ViT-B block (7.1M parameters), the projector's
        # 8192 x 8192 layers and the decoder's blocks
        auto_wrap_policy=dict(
            type='torch.distributed.fsdp.wrap.size_based_auto_wrap_policy',
            min_num_params=int(3e6))),
    # checkpoints hold the full weights, as DDP's (mrcl_backbone reads them)
    state_dict_cfg='full')
