"""Pretrained models with Keras's layer names: VGG19 and InceptionV3 (convolutional bases).

```python
from micrograd_gen.applications import (vgg19, inception_v3, feature_extractor, fold_batch_norm,
                                        group_branches)
model = inception_v3.InceptionV3(weights="imagenet", include_top=False)
features = feature_extractor(model, ["mixed4", "mixed5", "mixed6", "mixed7"])
acts = features(inception_v3.preprocess_input(images))   # {name: Tensor}
fast = fold_batch_norm(model)   # inference copy: each conv + batch norm + ReLU as one conv2d
fast = group_branches(fast)     # each Inception block one layer, its branches side by side
```
Each model module has its own `preprocess_input` and `deprocess_image`, as in Keras.
"""
from . import inception_v3, vgg19
from .inception_v3 import InceptionV3
from .network import (Branches, FeatureExtractor, Network, feature_extractor, fold_batch_norm,
                      group_branches)
from .vgg19 import VGG19

__all__ = ["VGG19", "InceptionV3", "feature_extractor", "FeatureExtractor", "Network",
           "fold_batch_norm", "group_branches", "Branches", "vgg19", "inception_v3"]
