"""ImageNet weights from local files into ``timm/<name>`` models: torchvision's and timm's state
dicts (.pth, .safetensors, timm's hub-cache folder) give the logits of the library's own model.
No network: the files are made here from randomly initialised torchvision and timm models."""

from __future__ import annotations

import hashlib
import re
import warnings

import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn

from kdbench.errors import ConfigError
from kdbench.models import create_model, load_weights


def randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Eval mode, BatchNorm statistics and scales at random, and every other tensor a model
    initialises to one value (LayerNorm's, ConvNeXt's layer scale of 1e-6, a ViT's zero head)
    too, so that no part of the network is a no-op the mapping could get wrong unnoticed."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
        for t in model.parameters():
            if t.numel() > 1 and bool((t == t.flatten()[0]).all()):
                if t.flatten()[0].item() == 0:  # biases, heads: small, of either sign
                    t.copy_(torch.randn(t.shape, generator=g) * 0.1)
                else:  # scales: around 1, so that every block counts
                    t.copy_(torch.rand(t.shape, generator=g) + 0.5)
    return model.eval()


def max_diff(a: nn.Module, b: nn.Module, size: int = 64) -> float:
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = a.eval()(x)
        assert want.std() > 1e-3
        return (want - b.eval()(x)).abs().max().item()


def legacy_densenet_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision's published DenseNet files: ``norm.1`` where the module is ``norm1``."""
    return {re.sub(r"(denselayer\d+\.(?:norm|relu|conv))([12])\.", r"\1.\2.", k): v
            for k, v in state.items()}


def case(tv_name, timm_name, layout, size=64, tol=1e-5, slow=False, **options):
    return pytest.param(tv_name, timm_name, layout, size, tol, options, id=tv_name,
                        marks=[pytest.mark.slow] if slow else [])


#: one model per torchvision family that loads (the smallest), with the layout its names take
TORCHVISION_CASES = [
    case("resnet18", "resnet18", "timm"),  # torchvision's names are timm's for ResNets
    case("resnext50_32x4d", "resnext50_32x4d", "timm"),
    case("wide_resnet50_2", "wide_resnet50_2", "timm", slow=True),
    case("mobilenet_v2", "mobilenetv2_100", "torchvision"),
    case("efficientnet_b0", "efficientnet_b0", "torchvision"),
    # torchvision's EfficientNetV2 and MobileNetV3 normalise with BatchNorm eps 1e-3
    case("efficientnet_v2_s", "efficientnetv2_s", "torchvision", bn_eps=1e-3),
    case("mobilenet_v3_small", "mobilenetv3_small_100", "torchvision", bn_eps=1e-3),
    case("mnasnet0_5", "mnasnet_050", "positional"),  # no rules: same tensors in the same order
    case("regnet_x_400mf", "regnetx_004_tv", "torchvision"),  # timm's *_tv: torchvision's widths
    case("regnet_y_400mf", "regnety_004", "torchvision"),
    case("convnext_tiny", "convnext_tiny", "torchvision"),
    case("densenet121", "densenet121", "torchvision"),  # the published files' old names
    case("vgg11_bn", "vgg11_bn", "torchvision", slow=True),  # 133M parameters to initialise
    case("inception_v3", "inception_v3", "torchvision", size=75),  # its smallest input
    # float32 attention: torchvision's nn.MultiheadAttention and timm's scaled_dot_product_
    # attention sum in another order; measured 9.5e-6 on logits of std 3 (3e-6 relative)
    case("vit_b_16", "vit_base_patch16_224", "torchvision", size=224, tol=5e-5, slow=True),
]


@pytest.mark.parametrize(("tv_name", "timm_name", "layout", "size", "tol", "options"),
                         TORCHVISION_CASES)
def test_torchvision_imagenet_weights_give_torchvisions_logits(tmp_path, tv_name, timm_name,
                                                               layout, size, tol, options):
    torch.manual_seed(0)
    with warnings.catch_warnings():  # inception_v3's note on its future default initialisation
        warnings.simplefilter("ignore", FutureWarning)
        tv = randomise_bn(getattr(torchvision.models, tv_name)(weights=None))
    state = tv.state_dict()
    if tv_name.startswith("densenet"):
        state = legacy_densenet_names(state)
    path = tmp_path / f"{tv_name}-imagenet.pth"  # as torch.hub caches torchvision's weights
    torch.save(state, path)
    ours = create_model(f"timm/{timm_name}", 1000, **options)
    loaded = load_weights(ours, str(path))
    assert (loaded.format, loaded.layout, loaded.fresh_head) == ("state_dict", layout, [])
    assert "bn_eps" not in loaded.meta
    assert max_diff(tv, ours, size) <= tol


def test_torchvision_weights_for_another_variant_name_the_first_tensor_that_differs(tmp_path):
    # torchvision's RegNetX-400MF has other widths than timm's regnetx_004 (it is regnetx_004_tv)
    torch.save(torchvision.models.regnet_x_400mf(weights=None).state_dict(), tmp_path / "x.pth")
    with pytest.raises(ConfigError, match=r"^cannot load weights .*x\.pth' \(state_dict file, "
                       r"torchvision names\) into timm/regnetx_004: model\.s4\.b1\.conv1\.conv"
                       r"\.weight is \[400, 160, 1, 1\] in the file, \[384, 160, 1, 1\] in the "
                       r"model"):
        load_weights(create_model("timm/regnetx_004", 1000), str(tmp_path / "x.pth"))


def test_torchvision_mobilenet_v3_into_timms_default_batchnorm_eps_is_flagged(tmp_path):
    torch.manual_seed(0)
    tv = randomise_bn(torchvision.models.mobilenet_v3_small(weights=None))
    torch.save(tv.state_dict(), tmp_path / "mnv3.pth")
    ours = create_model("timm/mobilenetv3_small_100", 1000)
    with pytest.warns(RuntimeWarning, match=r"BatchNorm eps 0.001, the model has 1e-05.*"
                      r"bn_eps=0.001"):
        loaded = load_weights(ours, str(tmp_path / "mnv3.pth"))
    assert loaded.layout == "torchvision" and "bn_eps=0.001" in loaded.meta["bn_eps"]
    assert max_diff(tv, ours) > 1e-5  # what the warning is about


@pytest.mark.parametrize("form", ["pth", "safetensors", "hub-cache", "snapshot", "checkpoint"])
def test_timm_weights_give_timms_logits(tmp_path, form):
    torch.manual_seed(0)
    reference = randomise_bn(timm.create_model("resnet18", pretrained=False))
    state = reference.state_dict()
    if form == "pth":
        path = tmp_path / "resnet18.pth"
        torch.save(state, path)
        target, fmt = path, "state_dict"
    elif form == "checkpoint":  # timm's train.py: {'state_dict', 'arch', 'args': Namespace}
        import argparse

        path = tmp_path / "model_best.pth.tar"
        torch.save({"epoch": 90, "arch": "resnet18", "state_dict": state,
                    "args": argparse.Namespace(model="resnet18", lr=0.5)}, path)
        target, fmt = path, "timm"
    elif form == "safetensors":
        path = tmp_path / "resnet18.safetensors"
        save_file(state, str(path))
        target, fmt = path, "safetensors"
    else:  # what timm leaves in the Hugging Face cache: models--timm--<tag>/snapshots/<hash>/
        root = tmp_path / "hub" / "models--timm--resnet18.a1_in1k"
        snap = root / "snapshots" / "0123abcd"
        snap.mkdir(parents=True)
        (root / "snapshots" / "00old").mkdir()  # an older snapshot without weights
        (root / "refs").mkdir()
        (root / "refs" / "main").write_text("0123abcd")
        path = snap / "model.safetensors"
        save_file(state, str(path))
        (snap / "config.json").write_text("{}")
        target, fmt = (root if form == "hub-cache" else snap), "safetensors"
    ours = create_model("timm/resnet18", 1000)
    loaded = load_weights(ours, str(target))
    assert loaded.format == fmt and loaded.layout == "timm"
    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert max_diff(reference, ours) <= 1e-5


def test_imagenet_weights_on_a_small_task_keep_a_fresh_head(tmp_path):
    torch.manual_seed(0)
    tv = randomise_bn(torchvision.models.mobilenet_v2(weights=None))
    path = tmp_path / "mobilenet_v2.pth"
    torch.save(tv.state_dict(), path)
    ours = create_model("timm/mobilenetv2_100", 10)
    head = ours.model.classifier.weight.clone()
    with pytest.warns(RuntimeWarning, match="keeping a fresh classifier"):
        loaded = load_weights(ours, str(path))
    assert loaded.fresh_head == ["model.classifier.bias", "model.classifier.weight"]
    assert torch.equal(ours.model.classifier.weight, head)
    assert torch.equal(ours.model.conv_stem.weight, tv.features[0][0].weight)
    # the zoo keeps its strictness: a head of another shape is an error unless asked for
    with pytest.raises(ConfigError, match=r"fc.weight is \[1000, 64\] in the file, \[10, 64\]"):
        zoo = create_model("resnet8", 1000)
        torch.save(zoo.state_dict(), tmp_path / "zoo.pt")
        load_weights(create_model("resnet8", 10), str(tmp_path / "zoo.pt"))


def test_a_hub_folder_without_weights_says_what_it_looks_for(tmp_path):
    folder = tmp_path / "models--timm--resnet18.a1_in1k"
    (folder / "snapshots" / "abc").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"holds none of model.safetensors, pytorch_model.bin"):
        load_weights(create_model("timm/resnet18", 10), str(folder))
    with pytest.raises(ConfigError, match=r"weights file .*nowhere.pth' does not exist"):
        load_weights(create_model("timm/resnet18", 10), str(tmp_path / "nowhere.pth"))
