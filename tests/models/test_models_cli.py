"""``kdbench models``: name, family, parameters and MACs at a dataset's input size."""

from __future__ import annotations

import json

import pytest

from kdbench.models.registry import ZOO


def test_models_lists_the_zoo_with_params_and_macs(cli_runner):
    result = cli_runner("models", "--dataset", "synthetic", "--json")
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.output)}
    assert set(ZOO) <= set(rows) and "timm/*" not in rows
    # synthetic: 4 classes, 3×8×8. resnet20 at 100 classes has 278,324 parameters; its
    # classifier is 64×100+100, here 64×4+4.
    assert rows["resnet20"]["params"] == 278_324 - (64 * 100 + 100) + (64 * 4 + 4)
    assert rows["resnet20"]["family"] == "resnet" and rows["vgg13"]["family"] == "vgg"
    # resnet8 at 8×8, counted by hand (C_in·C_out·k²·H_out·W_out per conv, then the classifier):
    macs = (3 * 16 * 9 * 64                                   # stem, 8×8
            + 2 * 16 * 16 * 9 * 64                            # stage 1, 8×8
            + 16 * 32 * 9 * 16 + 32 * 32 * 9 * 16 + 16 * 32 * 16  # stage 2, 4×4, projection
            + 32 * 64 * 9 * 4 + 64 * 64 * 9 * 4 + 32 * 64 * 4     # stage 3, 2×2, projection
            + 64 * 4)                                         # classifier
    assert rows["resnet8"]["macs"] == macs == 781_568


def test_models_table_at_cifar_size(cli_runner, cifar10_dir):
    result = cli_runner("models", "resnet20", "timm/resnet18", "--dataset", "cifar10",
                        "--data-dir", cifar10_dir)
    assert result.exit_code == 0, result.output
    assert "MMACs @ 32×32" in result.output
    lines = result.output.splitlines()
    resnet20 = next(x for x in lines if x.startswith("resnet20 "))
    resnet18 = next(x for x in lines if x.startswith("timm/resnet18 "))
    # ResNet-20 at 32×32 is the field's "41M FLOPs" (multiply-accumulate) network; at 10
    # classes its classifier has 64·10+10 parameters instead of 64·100+100.
    assert f"{278_324 - 6_500 + 650:,}" in resnet20 and " 40.8" in resnet20
    # timm's resnet18 is 1.82 GMACs at 224×224; at 32×32 every map has (32/224)² the pixels
    assert "timm:resnet" in resnet18 and f"{11_689_512 - 512 * 990 - 990:,}" in resnet18
    assert " 37." in resnet18 and len(lines) == 4


def test_models_timm_pattern(cli_runner):
    import timm

    result = cli_runner("models", "--dataset", "synthetic", "--timm", "vit_tiny_patch16_2*",
                        "--json")
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.output)}
    assert set(rows) == {f"timm/{n}" for n in timm.list_models("vit_tiny_patch16_2*")}
    vit = rows["timm/vit_tiny_patch16_224"]
    assert vit["family"] == "timm:vision_transformer"
    assert vit["macs"] is None and vit["note"] == "needs at least 16×16"
    # 5,717,416 parameters with timm's 1000-class head; a 4-class head is 192·996+996 fewer
    assert vit["params"] == 5_717_416 - 192 * 996 - 996

    plain = cli_runner("models", "--dataset", "synthetic", "--timm", "test_resne", "--json")
    assert [r["name"] for r in json.loads(plain.output)] == ["timm/test_resnet"]


@pytest.mark.parametrize("args,message", [
    (("--timm", "no_such_net"), "no timm model matches '*no_such_net*'"),
    (("resnt20",), "unknown model 'resnt20'; did you mean resnet20"),
    (("timm/resnt18",), "did you mean timm/resnet18"),
    (("--dataset", "cifar1000"), "unknown dataset 'cifar1000'"),
])
def test_models_bad_input(cli_runner, args, message):
    result = cli_runner("models", *args)
    assert result.exit_code == 2
    assert message in result.output


def test_models_piped_writes_no_carriage_returns():
    """Piped (a log, `| less`), the zoo's listing has no progress bar's carriage returns."""
    from conftest import run_cli

    done = run_cli("models", "--dataset", "synthetic")
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stdout + done.stderr and "resnet20" in done.stdout
