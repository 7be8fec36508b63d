"""RepDistiller's CIFAR zoo as its checkpoints name it: our own rewrite of the module structure of
HobbitLong/RepDistiller ``models/`` (resnet.py, resnetv2.py, wrn.py, vgg.py, mobilenetv2.py,
ShuffleNetv1.py, ShuffleNetv2.py; mdistiller's ``mdistiller/models/cifar`` names them alike).

Independent of kdbench's classes on purpose: the attribute names, the module nesting (what a
``state_dict`` key spells) and the forward computation follow the official files, so a
checkpoint saved from these models is what RepDistiller's ``train_teacher.py`` writes, and the
logits are what its models compute. ``MODEL_DICT`` mirrors its ``models.model_dict``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# ---- resnet.py: ResNet-(6n+2), layer1..3 of BasicBlocks, downsample = Sequential(conv, bn) ---

class RDBasicBlock(nn.Module):
    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        res = x if self.downsample is None else self.downsample(x)
        return F.relu(out + res)


class RDResNet(nn.Module):
    def __init__(self, depth, num_filters, num_classes=10):
        super().__init__()
        n = (depth - 2) // 6
        self.inplanes = num_filters[0]
        self.conv1 = nn.Conv2d(3, num_filters[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(num_filters[0])
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(num_filters[1], n)
        self.layer2 = self._make_layer(num_filters[2], n, 2)
        self.layer3 = self._make_layer(num_filters[3], n, 2)
        self.avgpool = nn.AvgPool2d(8)
        self.fc = nn.Linear(num_filters[3], num_classes)

    def _make_layer(self, planes, blocks, stride=1):
        down = None
        if stride != 1 or self.inplanes != planes:
            down = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, stride, bias=False),
                                 nn.BatchNorm2d(planes))
        layers = [RDBasicBlock(self.inplanes, planes, stride, down)]
        self.inplanes = planes
        layers += [RDBasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.avgpool(x).view(x.size(0), -1))


# ---- resnetv2.py: ResNet50, layer1..4 of Bottlenecks, `shortcut`, `linear` -----------------

class RDBottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, 4 * planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(4 * planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != 4 * planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, 4 * planes, 1, stride, bias=False),
                                          nn.BatchNorm2d(4 * planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class RDResNetV2(nn.Module):
    def __init__(self, num_blocks, num_classes=10):
        super().__init__()
        self.in_planes = 64
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._make_layer(64, num_blocks[0], 1)
        self.layer2 = self._make_layer(128, num_blocks[1], 2)
        self.layer3 = self._make_layer(256, num_blocks[2], 2)
        self.layer4 = self._make_layer(512, num_blocks[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.linear = nn.Linear(512 * 4, num_classes)

    def _make_layer(self, planes, n, stride):
        layers = []
        for s in [stride] + [1] * (n - 1):
            layers.append(RDBottleneck(self.in_planes, planes, s))
            self.in_planes = planes * 4
        return nn.Sequential(*layers)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(self.avgpool(out).view(out.size(0), -1))


# ---- wrn.py: block1..3 = NetworkBlock(.layer = Sequential of BasicBlocks), convShortcut ------

class RDWideBlock(nn.Module):
    def __init__(self, in_planes, out_planes, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, 1, 1, bias=False)
        self.equalInOut = in_planes == out_planes
        self.convShortcut = None if self.equalInOut else nn.Conv2d(
            in_planes, out_planes, 1, stride, 0, bias=False)

    def forward(self, x):
        if not self.equalInOut:
            x = self.relu1(self.bn1(x))
            out = x
        else:
            out = self.relu1(self.bn1(x))
        out = self.conv2(self.relu2(self.bn2(self.conv1(out))))
        return (x if self.equalInOut else self.convShortcut(x)) + out


class RDNetworkBlock(nn.Module):
    def __init__(self, n, in_planes, out_planes, stride):
        super().__init__()
        self.layer = nn.Sequential(*[RDWideBlock(in_planes if i == 0 else out_planes, out_planes,
                                                 stride if i == 0 else 1) for i in range(n)])

    def forward(self, x):
        return self.layer(x)


class RDWideResNet(nn.Module):
    def __init__(self, depth, num_classes, widen_factor=1):
        super().__init__()
        ch = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        n = (depth - 4) // 6
        self.conv1 = nn.Conv2d(3, ch[0], 3, 1, 1, bias=False)
        self.block1 = RDNetworkBlock(n, ch[0], ch[1], 1)
        self.block2 = RDNetworkBlock(n, ch[1], ch[2], 2)
        self.block3 = RDNetworkBlock(n, ch[2], ch[3], 2)
        self.bn1 = nn.BatchNorm2d(ch[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(ch[3], num_classes)
        self.nChannels = ch[3]

    def forward(self, x):
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = F.avg_pool2d(self.relu(self.bn1(out)), 8)
        return self.fc(out.view(-1, self.nChannels))


# ---- vgg.py: block0..4 Sequentials (conv, bn, relu, ..., last relu dropped), pool0..4 --------

VGG_CFG = {
    8: [[64], [128], [256], [512], [512]],
    11: [[64], [128], [256, 256], [512, 512], [512, 512]],
    13: [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    16: [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    19: [[64, 64], [128, 128], [256] * 4, [512] * 4, [512] * 4],
}


def _vgg_block(widths, inp):
    layers = []
    for w in widths:
        layers += [nn.Conv2d(inp, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
        inp = w
    return nn.Sequential(*layers[:-1])


class RDVGG(nn.Module):
    def __init__(self, cfg, num_classes=1000):
        super().__init__()
        self.block0 = _vgg_block(cfg[0], 3)
        self.block1 = _vgg_block(cfg[1], cfg[0][-1])
        self.block2 = _vgg_block(cfg[2], cfg[1][-1])
        self.block3 = _vgg_block(cfg[3], cfg[2][-1])
        self.block4 = _vgg_block(cfg[4], cfg[3][-1])
        self.pool0 = nn.MaxPool2d(2, 2)
        self.pool1 = nn.MaxPool2d(2, 2)
        self.pool2 = nn.MaxPool2d(2, 2)
        self.pool3 = nn.MaxPool2d(2, 2)
        self.pool4 = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = nn.Linear(512, num_classes)

    def forward(self, x):
        h = x.shape[2]
        x = self.pool0(F.relu(self.block0(x)))
        x = self.pool1(F.relu(self.block1(x)))
        x = self.pool2(F.relu(self.block2(x)))
        x = F.relu(self.block3(x))
        if h == 64:
            x = self.pool3(x)
        x = self.pool4(F.relu(self.block4(x)))
        return self.classifier(x.view(x.size(0), -1))


# ---- mobilenetv2.py: conv1, blocks[i][j].conv (8-module Sequential), conv2, classifier[0] ----

def _conv_bn(inp, oup, k, stride):
    return nn.Sequential(nn.Conv2d(inp, oup, k, stride, k // 2, bias=False),
                         nn.BatchNorm2d(oup), nn.ReLU(inplace=True))


class RDInvertedResidual(nn.Module):
    def __init__(self, inp, oup, stride, t):
        super().__init__()
        self.use_res_connect = stride == 1 and inp == oup
        self.conv = nn.Sequential(
            nn.Conv2d(inp, inp * t, 1, 1, 0, bias=False), nn.BatchNorm2d(inp * t),
            nn.ReLU(inplace=True),
            nn.Conv2d(inp * t, inp * t, 3, stride, 1, groups=inp * t, bias=False),
            nn.BatchNorm2d(inp * t), nn.ReLU(inplace=True),
            nn.Conv2d(inp * t, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup))

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class RDMobileNetV2(nn.Module):
    def __init__(self, T, feature_dim, input_size=32, width_mult=1.0):
        super().__init__()
        setting = [[1, 16, 1, 1], [T, 24, 2, 1], [T, 32, 3, 2], [T, 64, 4, 2], [T, 96, 3, 1],
                   [T, 160, 3, 2], [T, 320, 1, 1]]
        inp = int(32 * width_mult)
        self.conv1 = _conv_bn(3, inp, 3, 2)
        self.blocks = nn.ModuleList([])
        for t, c, n, s in setting:
            oup = int(c * width_mult)
            layers = []
            for stride in [s] + [1] * (n - 1):
                layers.append(RDInvertedResidual(inp, oup, stride, t))
                inp = oup
            self.blocks.append(nn.Sequential(*layers))
        self.last_channel = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.conv2 = _conv_bn(inp, self.last_channel, 1, 1)
        self.classifier = nn.Sequential(nn.Linear(self.last_channel, feature_dim))
        self.avgpool = nn.AvgPool2d(input_size // 16, ceil_mode=True)

    def forward(self, x):
        out = self.conv1(x)
        for block in self.blocks:
            out = block(out)
        out = self.avgpool(self.conv2(out))
        return self.classifier(out.view(out.size(0), -1))


# ---- ShuffleNetv1.py: layer1..3 of Bottlenecks with conv1..3/bn1..3, `linear` ----------------

def _shuffle(x, g):
    n, c, h, w = x.size()
    return x.view(n, g, c // g, h, w).permute(0, 2, 1, 3, 4).reshape(n, c, h, w)


class RDShuffleV1Block(nn.Module):
    def __init__(self, in_planes, out_planes, stride, groups):
        super().__init__()
        self.stride = stride
        mid = int(out_planes / 4)
        self.g = 1 if in_planes == 24 else groups
        self.conv1 = nn.Conv2d(in_planes, mid, 1, groups=self.g, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, out_planes, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = nn.Sequential()
        if stride == 2:
            self.shortcut = nn.Sequential(nn.AvgPool2d(3, stride=2, padding=1))

    def forward(self, x):
        out = _shuffle(F.relu(self.bn1(self.conv1(x))), self.g)
        out = self.bn3(self.conv3(F.relu(self.bn2(self.conv2(out)))))
        res = self.shortcut(x)
        return F.relu(torch.cat([out, res], 1) if self.stride == 2 else out + res)


class RDShuffleV1(nn.Module):
    def __init__(self, num_classes=10, out_planes=(240, 480, 960), num_blocks=(4, 8, 4),
                 groups=3):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 24, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        self.in_planes = 24
        self.layer1 = self._make_layer(out_planes[0], num_blocks[0], groups)
        self.layer2 = self._make_layer(out_planes[1], num_blocks[1], groups)
        self.layer3 = self._make_layer(out_planes[2], num_blocks[2], groups)
        self.linear = nn.Linear(out_planes[2], num_classes)

    def _make_layer(self, out_planes, n, groups):
        layers = []
        for i in range(n):
            cat = self.in_planes if i == 0 else 0
            layers.append(RDShuffleV1Block(self.in_planes, out_planes - cat, 2 if i == 0 else 1,
                                           groups))
            self.in_planes = out_planes
        return nn.Sequential(*layers)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.avg_pool2d(out, 4)
        return self.linear(out.view(out.size(0), -1))


# ---- ShuffleNetv2.py: layer1..3 = [DownBlock(conv1..5), BasicBlock(conv1..3) ...], conv2 ----

class RDShuffleV2Basic(nn.Module):
    def __init__(self, in_channels):
        super().__init__()
        c = in_channels // 2
        self.conv1 = nn.Conv2d(c, c, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, 1, 1, groups=c, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.conv3 = nn.Conv2d(c, c, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c)

    def forward(self, x):
        c = x.size(1) // 2
        x1, x2 = x[:, :c], x[:, c:]
        out = F.relu(self.bn1(self.conv1(x2)))
        out = F.relu(self.bn3(self.conv3(self.bn2(self.conv2(out)))))
        return _shuffle(torch.cat([x1, out], 1), 2)


class RDShuffleV2Down(nn.Module):
    def __init__(self, in_channels, out_channels):
        super().__init__()
        mid = out_channels // 2
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, 2, 1, groups=in_channels, bias=False)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv2 = nn.Conv2d(in_channels, mid, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(in_channels, mid, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv4 = nn.Conv2d(mid, mid, 3, 2, 1, groups=mid, bias=False)
        self.bn4 = nn.BatchNorm2d(mid)
        self.conv5 = nn.Conv2d(mid, mid, 1, bias=False)
        self.bn5 = nn.BatchNorm2d(mid)

    def forward(self, x):
        out1 = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        out2 = self.bn4(self.conv4(F.relu(self.bn3(self.conv3(x)))))
        out2 = F.relu(self.bn5(self.conv5(out2)))
        return _shuffle(torch.cat([out1, out2], 1), 2)


class RDShuffleV2(nn.Module):
    def __init__(self, num_classes=10, out_channels=(116, 232, 464, 1024),
                 num_blocks=(3, 7, 3)):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 24, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        self.in_channels = 24
        self.layer1 = self._make_layer(out_channels[0], num_blocks[0])
        self.layer2 = self._make_layer(out_channels[1], num_blocks[1])
        self.layer3 = self._make_layer(out_channels[2], num_blocks[2])
        self.conv2 = nn.Conv2d(out_channels[2], out_channels[3], 1, 1, 0, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels[3])
        self.linear = nn.Linear(out_channels[3], num_classes)

    def _make_layer(self, out_channels, n):
        layers = [RDShuffleV2Down(self.in_channels, out_channels)]
        layers += [RDShuffleV2Basic(out_channels) for _ in range(n)]
        self.in_channels = out_channels
        return nn.Sequential(*layers)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.avg_pool2d(F.relu(self.bn2(self.conv2(out))), 4)
        return self.linear(out.view(out.size(0), -1))


def _resnet(depth, filters=(16, 16, 32, 64)):
    return lambda num_classes: RDResNet(depth, list(filters), num_classes=num_classes)


def _wrn(depth, widen):
    return lambda num_classes: RDWideResNet(depth, num_classes, widen)


def _vgg(depth):
    return lambda num_classes: RDVGG(VGG_CFG[depth], num_classes)


#: RepDistiller's model_dict: name -> constructor(num_classes)
MODEL_DICT = {
    **{f"resnet{d}": _resnet(d) for d in (8, 14, 20, 32, 44, 56, 110)},
    "resnet8x4": _resnet(8, (32, 64, 128, 256)),
    "resnet32x4": _resnet(32, (32, 64, 128, 256)),
    "ResNet50": lambda num_classes: RDResNetV2([3, 4, 6, 3], num_classes),
    **{f"wrn_{d}_{k}": _wrn(d, k) for d, k in ((16, 1), (16, 2), (40, 1), (40, 2))},
    **{f"vgg{d}": _vgg(d) for d in (8, 11, 13, 16, 19)},
    "MobileNetV2": lambda num_classes: RDMobileNetV2(6, num_classes, width_mult=0.5),
    "ShuffleV1": lambda num_classes: RDShuffleV1(num_classes),
    "ShuffleV2": lambda num_classes: RDShuffleV2(num_classes),
}
