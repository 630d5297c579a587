# The CIFAR-10 MR-BarlowTwins config on 2 CPU processes (gloo), 32 images
# each: the same global batch of 64 and so the same lr.
#   bash tools/dist_train.sh THIS_CONFIG 2
# Only what must differ on CPUs: NCCL needs GPUs, and mmengine's Runner gives
# DDP device_ids=[LOCAL_RANK], which a CPU module refuses. The projector's
# SyncBN runs on the CPU through the opt-in mrcl_plugin.cpu_distributed.
_base_ = 'mrcl-barlowtwins_vit-tiny-p4_1xb64-coslr-300it_cifar10.py'

custom_imports = dict(imports=['mrcl_plugin', 'mrcl_plugin.cpu_distributed'])
env_cfg = dict(dist_cfg=dict(backend='gloo'))
model_wrapper_cfg = dict(
    type='MMDistributedDataParallel', device_ids=None, broadcast_buffers=False)
train_dataloader = dict(batch_size=32)
