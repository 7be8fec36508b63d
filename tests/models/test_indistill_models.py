"""InDistill's Cnn32 / Cnn32_Small: parameter counts from the reference's layer shapes, the
feature view (stages after the max-pool, the embedding after fc1's ReLU), state-dict names."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kdbench.errors import ConfigError
from kdbench.models import count_parameters, create_model
from kdbench.models.cnn32 import Cnn32


def _hand_count(widths, hidden, nc, in_chans):
    # gsarridis/InDistill models/cnn32.py: Conv2d(in, out, 3) has bias; BN has γ and β;
    # fc1 takes the 2×2 map of the last block
    convs = sum(cin * cout * 9 + cout for cin, cout in zip((in_chans, *widths[:-1]), widths))
    bns = sum(2 * w for w in widths)
    return convs + bns + (widths[-1] * 4 * hidden + hidden) + (hidden * nc + nc)


@pytest.mark.parametrize("in_chans", [3, 1])
def test_parameter_counts_equal_the_reference_layer_shapes(in_chans):
    big = create_model("cnn32", 10, in_chans=in_chans)
    small = create_model("cnn32_small", 10, in_chans=in_chans)
    assert count_parameters(big) == _hand_count((16, 32, 64), 128, 10, in_chans)
    assert count_parameters(small) == _hand_count((8, 16, 32), 64, 10, in_chans)
    # the same numbers written out: 448+32+4640+64+18496+128+32896+1290 and 224+16+1168+32+
    # 4640+64+8256+650 at three channels
    if in_chans == 3:
        assert (count_parameters(big), count_parameters(small)) == (57_994, 15_050)


def test_state_dict_keys_are_the_reference_s():
    keys = set(create_model("cnn32", 10).state_dict())
    expected = {f"conv{i}.{p}" for i in (1, 2, 3) for p in ("weight", "bias")}
    expected |= {f"conv{i}_bn.{p}" for i in (1, 2, 3)
                 for p in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")}
    expected |= {f"fc{i}.{p}" for i in (1, 2) for p in ("weight", "bias")}
    assert keys == expected


@pytest.mark.parametrize("name,widths,emb", [("cnn32", (16, 32, 64), 128),
                                              ("cnn32_small", (8, 16, 32), 64)])
@pytest.mark.parametrize("in_chans", [1, 3])
def test_feature_view_at_32(name, widths, emb, in_chans):
    torch.manual_seed(0)
    model = create_model(name, 10, in_chans=in_chans).eval()
    expected = [(widths[0], 15, 15), (widths[1], 6, 6), (widths[2], 2, 2)]
    assert model.stage_shapes((32, 32)) == expected
    assert model.min_input_size == 32 and model.embedding_dim == emb
    with torch.no_grad():
        f = model.features(torch.randn(4, in_chans, 32, 32))
    assert [tuple(t.shape[1:]) for t in f.stages] == expected
    assert [tuple(t.shape[1:]) for t in f.preact] == expected
    assert f.embedding.shape == (4, emb) and f.logits.shape == (4, 10) and f.stem is None


def test_stages_equal_the_reference_block_order_relu_then_pool():
    """The reference computes max_pool(relu(bn(conv))) and fc2(relu(fc1(flatten)))."""
    torch.manual_seed(1)
    model = create_model("cnn32", 10).eval()
    for bn in (model.conv1_bn, model.conv2_bn, model.conv3_bn):
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.bias.data.uniform_(-0.5, 0.5)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        f = model.features(x)
        out, maps = x, []
        for conv, bn in ((model.conv1, model.conv1_bn), (model.conv2, model.conv2_bn),
                         (model.conv3, model.conv3_bn)):
            out = F.max_pool2d(F.relu(bn(conv(out))), 2)
            maps.append(out)
        emb = F.relu(model.fc1(out.view(3, -1)))
    for mine, ref in zip(f.stages, maps):
        assert torch.equal(mine, ref)
    assert torch.equal(f.embedding, emb) and torch.equal(f.logits, model.fc2(emb))
    assert all((p < 0).any() for p in f.preact)


def test_other_input_sizes_are_refused_with_one_line():
    model = create_model("cnn32_small", 10)
    with pytest.raises(ConfigError, match=r"30 to 37 pixels.*\(40, 40\)"):
        model.features(torch.randn(1, 3, 40, 40))
    with pytest.raises(ConfigError, match="three conv blocks"):
        Cnn32(widths=(8, 16))
