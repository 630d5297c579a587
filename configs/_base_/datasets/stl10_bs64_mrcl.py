# The paper's STL-10 analytical setting (Sec. 4.3): its train + unlabeled
# images (105,000), random resized crops to 224 px, two views with MoCo v3's
# ViT augmentations, 64 images per GPU. Read from the official binary
# release: extract stl10_binary.tar.gz into data/stl10/ (data/stl10/
# stl10_binary/{train,unlabeled}_X.bin ...); no labels are used.
_base_ = 'imagenet_bs64_mrcl.py'

train_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='STL10',
        data_root='data/stl10',
        split='train+unlabeled',
        # the images come decoded from the .bin files: no LoadImageFromFile
        pipeline=[
            dict(
                type='MultiView',
                num_views=[1, 1],
                transforms=[{{_base_.view_pipeline1}},
                            {{_base_.view_pipeline2}}]),
            dict(type='PackInputs')
        ]))
