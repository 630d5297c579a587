# Two views of each image of the real Tiny-ImageNet sample (10 classes, 64 px,
# 5,000 train images) in ../shared/data. Set MRCL_DATA to read it elsewhere.
_base_ = 'cifar10_bs64_mrcl.py'

data_root = '{{$MRCL_DATA:../shared/data}}/cls/tiny_imagenet_10cls/'
data_preprocessor = dict(
    mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375])
view_pipeline = [
    dict(
        type='RandomResizedCrop',
        scale=64,
        crop_ratio_range=(0.2, 1.),
        backend='pillow'),
    dict(
        type='RandomApply',
        transforms=[
            dict(
                type='ColorJitter',
                brightness=0.4,
                contrast=0.4,
                saturation=0.2,
                hue=0.1)
        ],
        prob=0.8),
    dict(
        type='RandomGrayscale',
        prob=0.2,
        keep_channels=True,
        channel_weights=(0.114, 0.587, 0.2989)),
    dict(type='RandomFlip', prob=0.5),
]
train_pipeline = [
    # About 1.3% of the JPEGs are grayscale.
    dict(type='LoadImageFromFile', color_type='color'),
    dict(type='MultiView', num_views=2, transforms=[view_pipeline]),
    dict(type='PackInputs')
]
train_dataloader = dict(
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
