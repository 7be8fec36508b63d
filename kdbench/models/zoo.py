"""The CIFAR zoo in one table: registry name → (factory, family).

The built-in model plugin registers these names in kdbench's registry, and
:mod:`kdbench.models.timm_zoo` registers them in timm's as ``kdbench_<name>``.
"""

from __future__ import annotations

from collections.abc import Callable

from . import cnn32, mobilenetv2, resnet, shufflenet, vgg, wrn
from .base import KDModel

Factory = Callable[..., KDModel]

ZOO: dict[str, tuple[Factory, str]] = {
    **{f.__name__: (f, "resnet") for f in (
        resnet.resnet8, resnet.resnet14, resnet.resnet20, resnet.resnet32, resnet.resnet44,
        resnet.resnet56, resnet.resnet110, resnet.resnet8x4, resnet.resnet32x4,
        resnet.resnet50)},
    **{f.__name__: (f, "wrn") for f in (wrn.wrn_16_1, wrn.wrn_16_2, wrn.wrn_40_1, wrn.wrn_40_2)},
    **{f.__name__: (f, "vgg") for f in (vgg.vgg8, vgg.vgg11, vgg.vgg13, vgg.vgg16, vgg.vgg19)},
    **{f.__name__: (f, "mobilenetv2") for f in (
        mobilenetv2.mobilenetv2, mobilenetv2.mobilenetv2_075, mobilenetv2.mobilenetv2_100)},
    **{f.__name__: (f, "shufflenet") for f in (shufflenet.shufflev1, shufflenet.shufflev2)},
    **{f.__name__: (f, "cnn") for f in (cnn32.cnn32, cnn32.cnn32_small)},
}
