"""ImageNet weights from local files into ``timm/<name>`` models: torchvision's and timm's state
dicts (.pth, .safetensors, timm's hub-cache folder) give the logits of the library's own model.
No network: the files are made here from randomly initialised torchvision and timm models."""

from __future__ import annotations

import hashlib

import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn

from kdbench.errors import ConfigError
from kdbench.models import create_model, load_weights


def randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
    return model.eval()


def max_diff(a: nn.Module, b: nn.Module, size: int = 64) -> float:
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = a.eval()(x)
        assert want.std() > 1e-3
        return (want - b.eval()(x)).abs().max().item()


@pytest.mark.parametrize(("tv_name", "timm_name", "layout"), [
    ("resnet18", "resnet18", "timm"),  # torchvision's names are timm's for ResNets
    ("mobilenet_v2", "mobilenetv2_100", "positional"),  # other names, same tensors in order
])
def test_torchvision_imagenet_weights_give_torchvisions_logits(tmp_path, tv_name, timm_name,
                                                               layout):
    torch.manual_seed(0)
    tv = randomise_bn(getattr(torchvision.models, tv_name)(weights=None))
    path = tmp_path / f"{tv_name}-imagenet.pth"  # as torch.hub caches torchvision's weights
    torch.save(tv.state_dict(), path)
    ours = create_model(f"timm/{timm_name}", 1000)
    loaded = load_weights(ours, str(path))
    assert (loaded.format, loaded.layout, loaded.fresh_head) == ("state_dict", layout, [])
    assert max_diff(tv, ours) <= 1e-5


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
