"""timm architectures behind the kdbench feature view: a CNN and a ViT, minimum input sizes,
logit-only models, local weights, unknown names, and a timm student distilled from a zoo
teacher."""

from __future__ import annotations

import textwrap

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdbench.errors import ConfigError, UnknownNameError
from kdbench.models import count_parameters, create_model, load_weights

timm = pytest.importorskip("timm")


# ---- a user's timm model without forward_intermediates (e.g. written for an older timm) -------


class LogitsOnlyNet(nn.Module):
    def __init__(self, num_classes: int = 1000, in_chans: int = 3, **_):
        super().__init__()
        self.num_classes, self.num_features = num_classes, 8
        self.conv = nn.Conv2d(in_chans, 8, 3, padding=1)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x):
        return self.fc(F.adaptive_avg_pool2d(F.relu(self.conv(x)), 1).flatten(1))


def toy_logits_only_net(pretrained=False, **kwargs):
    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
        kwargs.pop(key, None)
    return LogitsOnlyNet(**kwargs)


if "toy_logits_only_net" not in timm.list_models():
    timm.models.register_model(toy_logits_only_net)

#: a feature loss (stages) and a pre-activation loss, as a third party would ship them
TOY_LOSSES = textwrap.dedent('''
    import kdbench
    from kdbench.losses.base import Distiller

    class StageNorm(Distiller):
        taps = frozenset({"stages"})
        needs_teacher = False

        def forward(self, student, teacher, target, index=None, epoch=0):
            return {"sn": sum(s.pow(2).mean() for s in student.stages)}

    class PreactNorm(StageNorm):
        taps = frozenset({"preact"})

        def forward(self, student, teacher, target, index=None, epoch=0):
            return {"sn": sum(s.pow(2).mean() for s in student.preact)}

    @kdbench.hookimpl
    def register_losses(register):
        register("toy_stages", StageNorm, defaults={"w_ce": 1.0, "w_sn": 0.01}, taps=("stages",))
        register("toy_preact", PreactNorm, defaults={"w_ce": 1.0, "w_sn": 0.01}, taps=("preact",))
''')


@pytest.fixture
def toy_losses(local_plugin):
    local_plugin(TOY_LOSSES, "toy_losses.py")


# ---- the feature view -------------------------------------------------------------------------


def test_timm_cnn_feature_view():
    torch.manual_seed(0)
    model = create_model("timm/resnet18", 10)
    assert model.has_features and not model.has_preact
    # resnet18: the stem's activation at stride 2, then layers 1-4 (timm's feature_info)
    expected = [(64, 16, 16), (64, 8, 8), (128, 4, 4), (256, 2, 2), (512, 1, 1)]
    assert model.stage_shapes((32, 32)) == expected
    assert count_parameters(model) == 11_181_642  # timm's resnet18 with a 10-class head
    x = torch.randn(2, 3, 32, 32)
    f = model.features(x)
    assert [tuple(t.shape[1:]) for t in f.stages] == expected
    assert f.preact == [] and f.stem is None
    # the embedding is the global average of the last stage; the logits are forward()'s
    assert torch.allclose(f.embedding, f.stages[-1].mean((2, 3)), atol=1e-6)
    (f.logits.logsumexp(1).mean() + f.stages[1].mean()).backward()
    assert model.model.conv1.weight.grad is not None and model.model.fc.weight.grad is not None
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model.features(x).logits, model(x), atol=1e-6)


def test_timm_vit_feature_view():
    torch.manual_seed(0)
    model = create_model("timm/vit_tiny_patch16_224", 10).eval()
    # twelve blocks: four evenly spaced taps, each a 192-channel map at stride 16
    assert [s.name for s in model.stage_info] == ["blocks.2", "blocks.5", "blocks.8", "blocks.11"]
    assert model.min_input_size == 16 and model.embedding_dim == 192
    for size, grid in ((32, 2), (40, 3)):  # 40 is padded up to 48: ceil(40 / 16) = 3
        assert model.stage_shapes((size, size)) == [(192, grid, grid)] * 4
        x = torch.randn(2, 3, size, size)
        with torch.no_grad():
            f = model.features(x)
            cls_token = model.model.forward_features(x)[:, 0]  # timm's 'token' pooling
            logits = model(x)
        assert [tuple(t.shape[1:]) for t in f.stages] == [(192, grid, grid)] * 4
        assert torch.allclose(f.embedding, cls_token, atol=1e-5)
        assert torch.allclose(f.logits, logits, atol=1e-5)


def test_zoo_model_through_the_timm_namespace_is_the_zoo_model():
    model = create_model("timm/kdbench_resnet20", 100)
    assert type(model).__name__ == "CifarResNet" and count_parameters(model) == 278_324


# ---- bad input --------------------------------------------------------------------------------


def test_too_small_input_names_the_minimum(tiny, results):
    from kdbench.runner import run

    with pytest.raises(ConfigError, match=r"timm/vit_tiny_patch16_224.*at least 16×16.*8×8"):
        run(tiny(student="timm/vit_tiny_patch16_224", **{"loss.name": "ce"}), progress=False)
    assert not (results / "runs").exists() or not any((results / "runs").iterdir())


def test_fixed_size_vit_needs_its_size():
    from kdbench.data import load_dataset
    from kdbench.runner.checks import check_input_size

    model = create_model("timm/vit_tiny_patch16_224", 4, img_size=32)  # a strict 32×32 ViT
    assert model.min_input_size == 32
    with pytest.raises(ConfigError, match="at least 32×32, but dataset 'synthetic' has 16×16"):
        check_input_size(model, "timm/vit_tiny_patch16_224", load_dataset("synthetic", size=16))


def test_unknown_names_list_close_matches(cli_runner):
    with pytest.raises(UnknownNameError, match="did you mean timm/resnet18"):
        create_model("timm/resnt18", 10)
    with pytest.raises(UnknownNameError, match="did you mean resnet20"):
        create_model("resnt20", 10)
    result = cli_runner("run", "--student", "timm/mobilenetv3_smal_100", "--quiet")
    assert result.exit_code == 2
    assert "timm/mobilenetv3_small_100" in result.output and "did you mean" in result.output


def test_pretrained_download_is_refused():
    with pytest.raises(ConfigError, match="never downloaded"):
        create_model("timm/test_resnet", 10, pretrained=True)


def test_logit_only_timm_model_and_feature_loss_message(tiny, toy_losses):
    from kdbench.runner import run

    model = create_model("timm/toy_logits_only_net", 4)
    assert not model.has_features and model.stage_info == []
    f = model.features(torch.randn(2, 3, 8, 8))
    assert f.logits.shape == (2, 4) and f.stages == [] and f.embedding is None
    with pytest.raises(ConfigError, match="toy_stages.*timm/toy_logits_only_net.*logits "
                                          "only"):
        run(tiny(student="timm/toy_logits_only_net", **{"loss.name": "toy_stages"}),
            progress=False)
    with pytest.raises(ConfigError, match="pre-activation"):
        run(tiny(student="timm/test_resnet", **{"loss.name": "toy_preact"}), progress=False)


# ---- local weights ----------------------------------------------------------------------------


def test_local_weights_in_timm_layout(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(1)
    source = timm.create_model("test_resnet", num_classes=4)
    save_file(source.state_dict(), tmp_path / "w.safetensors")
    model = create_model("timm/test_resnet", 4)
    load_weights(model, str(tmp_path / "w.safetensors"))
    assert all(torch.equal(model.model.state_dict()[k], v) for k, v in source.state_dict().items())

    # ImageNet-style weights: a 1000-class head is left out, the backbone loads
    imagenet = timm.create_model("test_resnet", num_classes=1000)
    torch.save(imagenet.state_dict(), tmp_path / "in1k.pth")
    fresh_head = model.model.fc.weight.clone()
    with pytest.warns(RuntimeWarning, match="fresh classifier"):
        load_weights(model, str(tmp_path / "in1k.pth"))
    assert torch.equal(model.model.conv1[0].weight, imagenet.conv1[0].weight)
    assert torch.equal(model.model.fc.weight, fresh_head)

    # our own layout (a saved student) round-trips; another architecture is refused clearly
    torch.save(model.state_dict(), tmp_path / "ours.pt")
    load_weights(create_model("timm/test_resnet", 4), str(tmp_path / "ours.pt"))
    with pytest.raises(ConfigError, match="cannot load weights"):
        load_weights(create_model("timm/test_efficientnet", 4), str(tmp_path / "w.safetensors"))


# ---- a timm student distilled from a zoo teacher -----------------------------------------------


def test_distil_timm_student_from_zoo_teacher(tiny, toy_losses):
    from kdbench.runner import run

    record = run(tiny(student="timm/test_resnet"), progress=False)  # kd from resnet8
    assert record["status"] == "done"
    assert record["config"]["student"] == "timm/test_resnet"
    assert record["teacher"]["arch"] == "resnet8"
    assert record["cost"]["student_params"] == count_parameters(
        timm.create_model("test_resnet", num_classes=4))
    assert 0.0 <= record["metrics"]["top1_last"] <= 100.0
    # a feature loss trains through the timm feature view too
    record = run(tiny(student="timm/test_resnet", **{"loss.name": "toy_stages"}), progress=False)
    assert record["status"] == "done"
    assert all(row["train_sn"] > 0 for row in record["metrics"]["curve"])
