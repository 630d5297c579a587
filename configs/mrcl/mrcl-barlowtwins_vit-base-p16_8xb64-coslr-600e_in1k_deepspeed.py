# Table 1's MR-BarlowTwins recipe on mmengine's FlexibleRunner with DeepSpeed
# ZeRO stage 2 (optimizer states and gradients sharded; pip install -r
# requirements/deepspeed.txt). bf16, not DeepSpeed's fp16: DeepSpeed runs
# the whole model, loss included, in the half type, and the 8192 x 8192
# cross-correlation's sum of squares overflows fp16 (autocast, as the base's
# AmpOptimWrapper, keeps sums in fp32).
#   bash tools/dist_train.sh THIS_CONFIG 8
_base_ = 'mrcl-barlowtwins_vit-base-p16_8xb64-coslr-600e_in1k.py'

runner_type = 'FlexibleRunner'
strategy = dict(
    type='DeepSpeedStrategy',
    bf16=dict(enabled=True),
    inputs_to_half=['inputs'],
    zero_optimization=dict(
        stage=2,
        allgather_partitions=True,
        reduce_scatter=True,
        allgather_bucket_size=50000000,
        reduce_bucket_size=50000000,
        overlap_comm=True,
        contiguous_gradients=True,
        cpu_offload=False))
# DeepSpeed does the loss scaling: the base's optimizer, without AMP's.
optim_wrapper = dict(
    _delete_=True,
    type='DeepSpeedOptimWrapper',
    optimizer={{_base_.optim_wrapper.optimizer}},
    paramwise_cfg={{_base_.optim_wrapper.paramwise_cfg}})
