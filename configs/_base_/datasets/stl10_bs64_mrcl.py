# The paper's STL-10 analytical setting: random resized crops to 224 px, two
# views with MoCo v3's ViT augmentations, 64 images per GPU. STL-10 ships as
# binary arrays: export its train + unlabeled images as JPEGs into
# data/stl10/{train,unlabeled}/ first (no labels are read).
_base_ = 'imagenet_bs64_mrcl.py'

train_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='CustomDataset',
        data_root='data/stl10/',
        data_prefix='',
        with_label=False,
        pipeline={{_base_.train_pipeline}}))
