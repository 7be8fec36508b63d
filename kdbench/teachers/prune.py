"""A teacher *view* pruned to a student's widths: InDistill's structured L1 filter pruning.

Sarridis, Koutlis, Kordopatis-Zilos, Kompatsiaris, Papadopoulos, "InDistill: Information
flow-preserving knowledge distillation for model compression", WACV 2025 (arXiv 2205.10003);
official code github.com/gsarridis/InDistill.

At every distilled layer the teacher keeps the output filters of largest L1 norm until its width
equals the student's; the rest are removed physically (a smaller conv, BatchNorm sliced to the kept
channels). Input channels are kept, so pruned layer k is fed by the *unpruned* teacher's layer k−1
activations (reference ``models/cnn32.py`` ``get_features``, lines 52–60 and 72–82: ``out_b`` is the
unpruned map). The view computes, for each distilled layer, the pruned layer's output from those
activations; the teacher itself is only read (it must be frozen and in eval mode).

Official recipe (``prune.py`` + ``utils/utils.py`` ``prune_model_l1_structured``, lines 86–124):
``torch.nn.utils.prune.ln_structured(conv, "weight", 0.5, n=1, dim=0)`` on conv1..conv3 of the
auxiliary Cnn32 (16/32/64 → 8/16/32, the student's widths), then the non-zero filters are copied,
in ascending index order, into a fresh ``nn.Conv2d``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..models.base import Features, KDModel
from ..models.cnn32 import Cnn32
from ..models.resnet import BasicBlock, Bottleneck, ResNet

#: what the pruned copies' BatchNorm does; see :class:`PrunedTeacherView`
BATCHNORM_MODES = ("running_stats", "batch_stats_gamma_only")
#: how a residual stage chooses its kept channels; see :class:`PrunedTeacherView`
RESIDUAL_RULES = ("stream_l1_sum", "last_block_l1")
SUPPORTED = "the plain CNNs (cnn32, cnn32_small) and the zoo ResNets (resnet8..110, resnet8x4, " \
            "resnet32x4, resnet50)"


def filter_l1_norms(weight: torch.Tensor) -> torch.Tensor:
    """L1 norm of each output filter (dim 0) of a conv weight, computed exactly as
    ``torch.nn.utils.prune.ln_structured(..., n=1, dim=0)`` does (``vector_norm`` over the
    other dims), so near-ties round the same way."""
    return torch.linalg.vector_norm(weight.detach(), ord=1, dim=tuple(range(1, weight.dim())))


def l1_keep_indices(norms: torch.Tensor, keep: int) -> torch.Tensor:
    """Indices, ascending, of the ``keep`` largest entries of ``norms`` (per-filter L1 norms).

    ``torch.topk(norms, keep, largest=True)``, the call ``ln_structured`` makes, so the kept set
    is exactly the one it keeps, ties included: topk breaks ties in an implementation-defined way
    (on CPU it tends to keep the *higher* indices of a tied group, unlike a stable sort), which
    only matters for exactly equal norms. Ascending order is the order the reference's
    ``remove_zero_channels_from_a_tensor`` (``utils/utils.py`` lines 168–181) leaves the
    kept filters in, so channel c of the pruned map is the c-th kept filter.
    """
    if not 0 < keep <= norms.numel():
        raise ConfigError(f"cannot keep {keep} of {norms.numel()} filters (valid: 1 to "
                          f"{norms.numel()})")
    return torch.topk(norms, keep, largest=True).indices.sort().values


class _ConvBN(nn.Module):
    """A conv and its BatchNorm restricted to some output filters (and input channels).

    Weights are copied into buffers (a view has no trainable parameters and never aliases the
    teacher); the forward is functional, so the module's train/eval flag changes nothing.
    """

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d, out_idx: torch.Tensor | None,
                 in_idx: torch.Tensor | None, batchnorm: str = "running_stats"):
        super().__init__()
        if conv.groups != 1:
            raise ConfigError(f"pruning supports ungrouped convolutions only, got groups="
                              f"{conv.groups}")
        w = conv.weight.detach()
        bias = None if conv.bias is None else conv.bias.detach()
        if out_idx is not None:
            w = w[out_idx]
            bias = None if bias is None else bias[out_idx]
        if in_idx is not None:
            w = w[:, in_idx]
        self.register_buffer("weight", w.clone())
        self.register_buffer("bias", None if bias is None else bias.clone())
        self.stride, self.padding, self.dilation = conv.stride, conv.padding, conv.dilation

        def sl(t: torch.Tensor | None) -> torch.Tensor | None:
            if t is None:
                return None
            t = t.detach()
            return (t if out_idx is None else t[out_idx]).clone()

        # only a layer whose filters were removed gets the reference's BatchNorm behaviour
        self.batchnorm = batchnorm if out_idx is not None else "running_stats"
        self.register_buffer("bn_weight", sl(bn.weight))
        self.register_buffer("bn_bias", sl(bn.bias))
        self.register_buffer("running_mean", sl(bn.running_mean))
        self.register_buffer("running_var", sl(bn.running_var))
        self.eps = bn.eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation)
        if self.batchnorm == "batch_stats_gamma_only" or self.running_mean is None:
            # the reference's pruned copy: fresh BatchNorm2d holding only γ, left in train mode
            beta = None if self.batchnorm == "batch_stats_gamma_only" else self.bn_bias
            return F.batch_norm(z, None, None, self.bn_weight, beta, True, 0.0, self.eps)
        return F.batch_norm(z, self.running_mean, self.running_var, self.bn_weight,
                            self.bn_bias, False, 0.0, self.eps)


class _PrunedPlainLayer(nn.Module):
    """One Cnn32 block with kept filters: max_pool(relu(BN(conv(x)))) on the kept channels."""

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d, keep: torch.Tensor, batchnorm: str):
        super().__init__()
        self.convbn = _ConvBN(conv, bn, keep, None, batchnorm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(F.max_pool2d(self.convbn(x), 2))


class _PrunedBlock(nn.Module):
    """A residual block whose *output* (residual stream) keeps ``out_idx`` channels and whose
    input is the stream restricted to ``in_idx`` (None: all channels). Inner widths are kept."""

    def __init__(self, block: BasicBlock | Bottleneck, in_idx: torch.Tensor | None,
                 out_idx: torch.Tensor | None, batchnorm: str):
        super().__init__()
        if isinstance(block, BasicBlock):
            pairs = [(block.conv1, block.bn1), (block.conv2, block.bn2)]
        else:
            pairs = [(block.conv1, block.bn1), (block.conv2, block.bn2), (block.conv3, block.bn3)]
        last = len(pairs) - 1
        self.body = nn.ModuleList(
            _ConvBN(conv, bn, out_idx if i == last else None, in_idx if i == 0 else None,
                    batchnorm) for i, (conv, bn) in enumerate(pairs))
        ds = block.downsample
        self.shortcut = None if ds is None else _ConvBN(ds[0], ds[1], out_idx, in_idx, batchnorm)
        # an identity shortcut meets a full-width input only when in_idx is None
        self.identity_idx = out_idx if (ds is None and in_idx is None) else None
        if ds is None and in_idx is not None and out_idx is not None \
                and not torch.equal(in_idx, out_idx):
            raise ConfigError("an identity shortcut needs the same kept channels in and out")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for i, convbn in enumerate(self.body):
            out = convbn(out)
            if i < len(self.body) - 1:
                out = F.relu(out)
        if self.shortcut is not None:
            short = self.shortcut(x)
        else:
            short = x if self.identity_idx is None else x[:, self.identity_idx]
        return F.relu(out + short)


class _PrunedStage(nn.Module):
    def __init__(self, blocks: Sequence[nn.Module]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


def _last_conv(block: BasicBlock | Bottleneck) -> nn.Conv2d:
    return block.conv2 if isinstance(block, BasicBlock) else block.conv3


def residual_channel_norms(stage: Sequence[BasicBlock | Bottleneck], rule: str) -> torch.Tensor:
    """Per-channel importance of a residual stage's output for ``rule``.

    ``stream_l1_sum``: Σ over the filters that write channel c of the residual stream — the last
    conv of every block and the projection shortcut's conv where there is one — of their L1 norms.
    ``last_block_l1``: the L1 norms of the last block's last conv alone (the reference's ResNet
    code, ``models/resnet.py`` ``get_pruned_features`` lines 172–189, prunes
    ``layer[-1].conv2``).
    """
    if rule == "last_block_l1":
        return filter_l1_norms(_last_conv(stage[-1]).weight)
    total = torch.zeros_like(filter_l1_norms(_last_conv(stage[0]).weight))
    for block in stage:
        total = total + filter_l1_norms(_last_conv(block).weight)
        if block.downsample is not None:
            total = total + filter_l1_norms(block.downsample[0].weight)
    return total


class PrunedTeacherView(nn.Module):
    """A teacher view for InDistill's layer-wise warm-up: the teacher's distilled layers pruned
    (structured L1 filter pruning) to the student's widths.

    ``view(x)`` returns one map per distilled layer, the pruned layer's output computed from the
    *unpruned* teacher's previous activations (for Cnn32: the input or the previous block's pooled
    output; for a ResNet: the stem or the previous stage's output). ``student_widths[i]`` is the
    student's width at teacher layer ``layers[i]`` (default: layers 0, 1, …); a pair whose widths
    already match gets the teacher's own map (identity view, no copy). The teacher is only read:
    its weights are copied into buffers, it must be in eval mode, and the view has no parameters.

    Per layer, for Cnn32: keep the ``w_s`` filters of conv_k with the largest L1 norm (what
    ``torch.nn.utils.prune.ln_structured(conv, "weight", w_t − w_s, n=1, dim=0)`` keeps; see
    :func:`l1_keep_indices`), slice bias and BatchNorm to them, keep all input channels:
    ``max_pool(relu(BN_kept(conv_kept(a_{k−1}))))``.

    For a residual stage the output width is the residual stream's, written by every block and by
    the projection shortcut, so ``residual`` chooses the kept channels:

    * ``"stream_l1_sum"`` (default, kdbench's rule): channel c scores the summed L1 norms of all
      filters that write it (each block's last conv, the projection conv if any); the stream is
      restricted to the kept channels throughout the stage: each block's last conv and BN, the
      projection conv and BN are sliced to them, an identity shortcut is sliced, and the blocks
      after the first read only the kept channels (their first conv loses the other input
      channels). Inner block widths and the first block's input (the unpruned previous stage)
      are kept, as a plain layer keeps its input channels.
    * ``"last_block_l1"``: the reference's ResNet code (``models/resnet.py`` lines 172–189, for
      its pre-activation ResNet-18; not used by the published CIFAR-10 pipeline, which prunes only
      the Cnn32 auxiliary): channels scored by the last block's last conv alone; only that
      block's last conv/BN and its shortcut are sliced, earlier blocks run at full width.

    BatchNorm of a pruned layer (``batchnorm``):

    * ``"running_stats"`` (default, kdbench): the kept channels' γ, β, running mean and variance,
      evaluated in eval mode. Then each pruned map equals the teacher's own map at the kept
      channels (channels are computed independently up to the end of a block), except where a
      residual stage's later blocks read the pruned stream.
    * ``"batch_stats_gamma_only"``: what the reference does. ``prune_model_l1_structured``
      (``utils/utils.py`` lines 112–122) builds a fresh ``nn.BatchNorm2d`` and copies only γ
      (``bn_layer.weight = ...[idxs]``), so β = 0 and the running statistics are reset (the
      shipped ``results/models/pruned_auxiliary_cifar10.pt`` has β = 0, mean 0, var 1, and a
      freshly initialised conv bias, lines 100–110); ``kd_from_aux_to_student.py`` loads it
      (lines 106 and 117–119) and never calls ``.eval()`` on it (line 24 sets only the teacher's
      mode), so it normalises with the batch's statistics: ``γ·(z − mean_B)/√(var_B + ε)``. The
      batch mean cancels any conv bias, so kdbench keeps the kept bias. Statistics are not
      accumulated (the reference updates running stats that nothing reads).

    Official defaults: Cnn32 16/32/64 pruned to 8/16/32 at layers 0, 1, 2 (``prune.py``).
    Where kdbench differs: the BatchNorm default above; the pruned copy is a view of the frozen
    teacher (no saved file); ties among exactly equal norms follow ``torch.topk`` on the weights'
    device.
    """

    def __init__(self, teacher: KDModel, student_widths: Sequence[int],
                 layers: Sequence[int] | None = None, *, batchnorm: str = "running_stats",
                 residual: str = "stream_l1_sum"):
        super().__init__()
        if batchnorm not in BATCHNORM_MODES:
            raise ConfigError(f"batchnorm {batchnorm!r} is not a pruning BatchNorm mode "
                              f"(valid: {', '.join(BATCHNORM_MODES)})")
        if residual not in RESIDUAL_RULES:
            raise ConfigError(f"residual rule {residual!r} is unknown (valid: "
                              f"{', '.join(RESIDUAL_RULES)})")
        if isinstance(teacher, Cnn32):
            kind = "plain"
        elif isinstance(teacher, ResNet):
            kind = "resnet"
        else:
            raise ConfigError(f"no pruning rule for teacher architecture "
                              f"{type(teacher).__name__} (valid: {SUPPORTED})")
        widths_t = [s.channels for s in teacher.stage_info]
        student_widths = [int(w) for w in student_widths]
        if len(student_widths) > len(widths_t):
            raise ConfigError(f"the student has {len(student_widths)} distilled layers but the "
                              f"teacher {type(teacher).__name__} only {len(widths_t)} (valid: 1 "
                              f"to {len(widths_t)})")
        layers = list(range(len(student_widths))) if layers is None else [int(i) for i in layers]
        if len(layers) != len(student_widths):
            raise ConfigError(f"layers {layers} and student_widths {student_widths} must have "
                              f"the same length")
        if any(i < 0 or i >= len(widths_t) for i in layers) or sorted(set(layers)) != layers:
            raise ConfigError(f"layers {layers} must be increasing teacher stage indices in 0 to "
                              f"{len(widths_t) - 1}")
        for i, ws in zip(layers, student_widths):
            if not 1 <= ws <= widths_t[i]:
                raise ConfigError(f"student width {ws} at teacher layer {i} is not prunable from "
                                  f"the teacher's {widths_t[i]} (valid: 1 to {widths_t[i]})")
        object.__setattr__(self, "_teacher", teacher)  # read, never registered or moved
        self.kind, self.layers, self.student_widths = kind, layers, student_widths
        self.batchnorm, self.residual = batchnorm, residual
        self.kept: list[torch.Tensor | None] = []
        self.pruned = nn.ModuleList()
        for i, ws in zip(layers, student_widths):
            if ws == widths_t[i]:
                self.kept.append(None)
                self.pruned.append(nn.Identity())
            elif kind == "plain":
                conv, bn = teacher.blocks()[i]
                keep = l1_keep_indices(filter_l1_norms(conv.weight), ws)
                self.kept.append(keep)
                self.pruned.append(_PrunedPlainLayer(conv, bn, keep, batchnorm))
            else:
                stage = list(teacher.layers[i])
                keep = l1_keep_indices(residual_channel_norms(stage, residual), ws)
                self.kept.append(keep)
                self.pruned.append(self._prune_stage(stage, keep))

    def _prune_stage(self, stage: list[nn.Module], keep: torch.Tensor) -> _PrunedStage:
        n = len(stage)
        if self.residual == "last_block_l1":
            blocks = [_PrunedBlock(b, None, keep if j == n - 1 else None, self.batchnorm)
                      for j, b in enumerate(stage)]
        else:
            blocks = [_PrunedBlock(b, None if j == 0 else keep, keep, self.batchnorm)
                      for j, b in enumerate(stage)]
        return _PrunedStage(blocks)

    @property
    def teacher(self) -> KDModel:
        return self._teacher

    def inputs(self, x: torch.Tensor, feats: Features) -> list[torch.Tensor]:
        """The unpruned teacher activations that feed each distilled layer."""
        first = x if self.kind == "plain" else feats.stem
        return [first if i == 0 else feats.stages[i - 1] for i in self.layers]

    def from_features(self, x: torch.Tensor, feats: Features) -> list[torch.Tensor]:
        """The pruned maps from a teacher forward already done (``feats = teacher.features(x)``),
        so an engine that runs the teacher anyway pays only for the pruned layers."""
        with torch.no_grad():
            return [feats.stages[i] if isinstance(m, nn.Identity) else m(a)
                    for i, m, a in zip(self.layers, self.pruned, self.inputs(x, feats))]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self._teacher.training:
            raise ConfigError("the pruned teacher view needs a frozen teacher in eval mode "
                              "(call teacher.eval())")
        with torch.no_grad():
            feats = self._teacher.features(x)
        return self.from_features(x, feats)
