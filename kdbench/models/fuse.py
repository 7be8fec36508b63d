"""A frozen teacher's faster copy: every BatchNorm that only rescales a convolution's output is
folded into that convolution.

A teacher never trains during distillation, so in eval mode a BatchNorm reading a convolution's
output ``z = W∗x + b`` is a fixed affine map per output channel,
``y = γ·(z − μ)/√(σ² + ε) + β``. With ``s = γ/√(σ² + ε)`` the same ``y`` comes from one
convolution, ``W' = s·W`` (each output channel's filter scaled) and ``b' = s·(b − μ) + β``; the
BatchNorm pass over the feature map disappears. BatchNorm: Ioffe & Szegedy, "Batch
Normalization", ICML 2015; the folding: Jacob et al., "Quantization and Training of Neural
Networks for Efficient Integer-Arithmetic-Only Inference", CVPR 2018, §3.2; PyTorch's own version
is ``torch/nn/utils/fusion.py: fuse_conv_bn_weights`` (github.com/pytorch/pytorch).

Which pairs fold is read off one traced forward, not off the architecture: the trace
(a :class:`~torch.overrides.TorchFunctionMode`) records every torch call of the model's
``forward`` and, for feature models, of ``features``. A pair folds when, in every traced entry
point, an ``nn.Conv2d`` (exact class) is called once, its output tensor is read by nothing but
one call of an eval-mode ``nn.BatchNorm2d`` (exact class, with running statistics) that is also
called once, and that output is not returned. Everything else is left as it is, and stays
correct: pre-activation BatchNorms after a residual sum (WRN), a convolution whose output is also
a feature tap or a residual input, BatchNorm subclasses that do more (timm's ``BatchNormAct2d``),
convolutions called functionally or twice. ``preact`` taps (the BatchNorm output before ReLU)
keep their value: the folded convolution computes exactly that output.

The copy is checked before it is returned: logits and every feature tap on the probe input must
equal the original's within float tolerance, else the unfused copy is returned with the reason.
The original module (and so any checkpoint on disk) is never changed.

Where kdbench differs from PyTorch's helper: ``s``, ``W'`` and ``b'`` are computed in float64 and
rounded once to the weights' dtype (PyTorch computes them in the weights' dtype), so the folded
model differs from the unfused one by the float32 rounding of the convolution only. PyTorch's
automatic pass (``torch.fx.experimental.optimization.fuse``) needs a symbolic trace, which the
zoo's data-dependent Python (ShuffleNet's channel shuffle unpacks a shape, Cnn32 checks one)
cannot give; a traced forward on a real probe input can.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import inspect
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from ..errors import ConfigError

#: tensor calls that read only shape, type or layout: a convolution output they touch may fold
METADATA = frozenset({
    "dim", "size", "shape", "ndim", "dtype", "device", "layout", "numel", "nelement",
    "stride", "is_contiguous", "is_floating_point", "is_complex", "requires_grad", "is_cuda",
    "is_sparse", "is_quantized", "is_meta", "is_mkldnn", "is_nested", "__len__",
    "data_ptr", "element_size", "storage_offset", "names", "grad_fn", "is_leaf", "_version",
})

#: the relative error the fused copy may show in any output before the check refuses it: the
#: zoo's folded copies differ by at most 3e-6 of an output's magnitude (float32 rounding)
RTOL = 1e-4

_BATCH_NORM = inspect.signature(F.batch_norm)


@dataclass(frozen=True)
class FuseReport:
    """What :func:`fuse_frozen` did: conv–BatchNorm pairs folded out of the model's
    BatchNorm layers, the largest relative difference of any output on the probe, and why
    nothing was folded when the check refused the copy."""

    folded: int
    batchnorms: int
    max_rel_diff: float = 0.0
    refused: str | None = None

    def describe(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ============================== folding ========================================================


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """The weight and bias of one convolution equal to ``bn(conv(x))`` in eval mode.

    ``s = γ/√(σ² + ε)``, ``W' = s·W`` per output channel, ``b' = s·(b − μ) + β`` (γ = 1, β = 0
    without affine parameters, b = 0 without a convolution bias), computed in float64 and
    rounded once to the weight's dtype; the weight keeps its memory format (channels_last).
    """
    w = conv.weight.detach()
    var = bn.running_var.detach().double()
    mean = bn.running_mean.detach().double()
    scale = torch.rsqrt(var + bn.eps)
    shift = torch.zeros_like(mean)
    if bn.weight is not None:
        scale = scale * bn.weight.detach().double()
    if bn.bias is not None:
        shift = bn.bias.detach().double()
    bias = conv.bias.detach().double() if conv.bias is not None else torch.zeros_like(mean)
    weight = (w.double() * scale.view(-1, *([1] * (w.dim() - 1)))).to(w.dtype)
    return weight, (scale * (bias - mean) + shift).to(w.dtype)


# ============================== tracing ========================================================


def _call_name(func: Any) -> str:
    """A torch call's name; a property read (``t.shape``) is named after the property."""
    name = getattr(func, "__name__", "")
    if name == "__get__":
        return getattr(getattr(func, "__self__", None), "__name__", name)
    return name


def _tensors(obj: Any) -> Iterator[torch.Tensor]:
    """Every tensor inside nested tuples, lists, dicts and dataclasses (a model's outputs)."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from _tensors(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _tensors(item)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            yield from _tensors(getattr(obj, f.name))


class _Trace(TorchFunctionMode):
    """Every torch call of one forward with what it read and returned. The call records keep
    their tensors alive, so a tensor's ``id`` names it for the whole trace."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[Any, tuple, dict, Any]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if _call_name(func) not in METADATA:
            self.calls.append((func, args, kwargs, out))
        return out


def _pairs_of_trace(trace: _Trace, outputs: Any, convs: dict[int, nn.Conv2d],
                    bns: dict[int, nn.BatchNorm2d]) -> tuple[dict[nn.Module, nn.Module],
                                                              Counter]:
    """The (conv → BatchNorm) pairs one trace allows, and how often each module was called.

    ``convs`` maps ``id(weight)`` to its ``nn.Conv2d``, ``bns`` ``id(running_mean)`` to its
    ``nn.BatchNorm2d``; calls with other tensors are not those modules' calls.
    """
    reads: Counter = Counter()
    for _, args, kwargs, _ in trace.calls:
        for t in {id(t) for t in _tensors((args, kwargs))}:
            reads[t] += 1
    for t in {id(t) for t in _tensors(outputs)}:  # the caller reads what is returned
        reads[t] += 1
    called: Counter = Counter()
    produced: dict[int, nn.Module] = {}  # id(conv output) → conv
    pairs: dict[nn.Module, nn.Module] = {}
    for func, args, kwargs, out in trace.calls:
        if func is F.conv2d:
            weight = args[1] if len(args) > 1 else kwargs.get("weight")
            bias = args[2] if len(args) > 2 else kwargs.get("bias")
            conv = convs.get(id(weight))
            if conv is not None:
                called[conv] += 1
                if bias is conv.bias and isinstance(out, torch.Tensor):
                    produced[id(out)] = conv
        elif func is F.batch_norm:
            bound = _BATCH_NORM.bind(*args, **kwargs)
            bound.apply_defaults()
            a = bound.arguments
            bn = bns.get(id(a["running_mean"]))
            if bn is None:
                continue
            called[bn] += 1
            x = a["input"]
            if (not a["training"] and a["running_var"] is bn.running_var
                    and a["weight"] is bn.weight and a["bias"] is bn.bias
                    and a["eps"] == bn.eps and id(x) in produced and reads[id(x)] == 1):
                pairs[produced[id(x)]] = bn
    return pairs, called


def _entry_points(unit: nn.Module) -> list[str]:
    """The methods a frozen teacher is called through: ``forward``, and ``features`` for
    models with a feature view."""
    has_features = getattr(unit, "has_features", False) and callable(
        getattr(unit, "features", None))
    return ["forward", "features"] if has_features else ["forward"]


def _units(model: nn.Module) -> list[nn.Module]:
    """What is traced: the model itself if it is a KDModel, else its outermost KDModel
    submodules (each member of an ensemble, whatever the ensemble's own forward does), else
    the model."""
    from .base import KDModel

    if isinstance(model, KDModel):
        return [model]
    units: list[nn.Module] = []

    def walk(m: nn.Module) -> None:
        for child in m.children():
            if isinstance(child, KDModel):
                units.append(child)
            else:
                walk(child)
    walk(model)
    return units or [model]


@contextlib.contextmanager
def _evaluating(model: nn.Module) -> Iterator[None]:
    """Eval mode for a block, every submodule's own mode restored after it."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


def conv_bn_pairs(model: nn.Module, example: torch.Tensor) -> list[tuple[str, str]]:
    """The (convolution, BatchNorm) module names of ``model`` that fold exactly, found by
    tracing its entry points on ``example`` in eval mode (see the module docstring)."""
    names = {m: n for n, m in model.named_modules()}
    convs = {id(m.weight): m for m in model.modules() if type(m) is nn.Conv2d}
    bns = {id(m.running_mean): m for m in model.modules()
           if type(m) is nn.BatchNorm2d and m.running_mean is not None
           and m.running_var is not None}
    pairs: dict[nn.Module, nn.Module] = {}
    bad: set[nn.Module] = set()
    with _evaluating(model), torch.no_grad():
        for unit in _units(model):
            for entry in _entry_points(unit):
                trace = _Trace()
                with trace:
                    outputs = getattr(unit, entry)(example)
                found, called = _pairs_of_trace(trace, outputs, convs, bns)
                del trace  # the recorded tensors
                bad |= {m for m, n in called.items() if n > 1}
                for conv, bn in found.items():
                    if pairs.setdefault(conv, bn) is not bn:
                        bad |= {conv, bn}
                paired = set(found) | set(found.values())
                bad |= {m for m in called if m not in paired}
    partner: Counter = Counter(pairs.values())
    return [(names[c], names[b]) for c, b in pairs.items()
            if c not in bad and b not in bad and partner[b] == 1]


# ============================== the fused copy =================================================


def _outputs(model: nn.Module, example: torch.Tensor) -> list[torch.Tensor]:
    with _evaluating(model), torch.no_grad():
        out = list(_tensors(model(example)))
        if "features" in _entry_points(model):
            out += list(_tensors(model.features(example)))
    return [t.float() for t in out]


def _max_rel_diff(ref: list[torch.Tensor], new: list[torch.Tensor]) -> float:
    """The largest ``max|a − b| / max|a|`` over the outputs (inf if their shapes differ)."""
    if len(ref) != len(new) or any(a.shape != b.shape for a, b in zip(ref, new)):
        return float("inf")
    worst = 0.0
    for a, b in zip(ref, new):
        scale = float(a.abs().max()) if a.numel() else 0.0
        diff = float((a - b).abs().max()) if a.numel() else 0.0
        worst = max(worst, diff / scale if scale > 0 else diff)
    return worst


def fuse_frozen(model: nn.Module, example: torch.Tensor, rtol: float = RTOL
                ) -> tuple[nn.Module, FuseReport]:
    """A frozen copy of ``model`` (eval mode, no gradients) with its BatchNorms folded into the
    convolutions before them, and what was folded.

    ``example`` is a probe batch of the model's input (its values do not matter, its shape
    does): the pairs are read off a traced forward on it, and the copy's logits and feature
    taps on it must match the original's within ``rtol`` (relative to each output's largest
    magnitude), else the unfused copy is returned and the report says why. ``model`` itself
    is not changed. Ensembles fold every member: each KDModel inside is traced on its own.
    """
    if not rtol > 0:
        raise ConfigError(f"fuse rtol must be > 0, got {rtol:g}")
    fused = copy.deepcopy(model).eval()
    for p in fused.parameters():
        p.requires_grad_(False)
    batchnorms = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    modules = dict(fused.named_modules())
    pairs = conv_bn_pairs(fused, example)
    for conv_name, bn_name in pairs:
        conv, bn = modules[conv_name], modules[bn_name]
        weight, bias = fold_conv_bn(conv, bn)
        conv.weight = nn.Parameter(weight, requires_grad=False)
        conv.bias = nn.Parameter(bias, requires_grad=False)
        for parent in fused.modules():  # every place the BatchNorm is registered
            for key, child in list(parent._modules.items()):
                if child is bn:
                    setattr(parent, key, nn.Identity())
    if not pairs:
        return fused, FuseReport(0, batchnorms)
    diff = _max_rel_diff(_outputs(model, example), _outputs(fused, example))
    if not diff <= rtol:
        plain = copy.deepcopy(model).eval()
        for p in plain.parameters():
            p.requires_grad_(False)
        return plain, FuseReport(0, batchnorms, diff, f"the folded copy's outputs differed by "
                                 f"{diff:.2g} (relative) > {rtol:g}: left unfused")
    return fused, FuseReport(len(pairs), batchnorms, diff)


def probe_input(input_shape: tuple[int, ...], device: torch.device | str = "cpu",
                batch: int = 2, seed: int = 0) -> torch.Tensor:
    """A seeded standard-normal probe batch of ``input_shape`` (C, H, W) for
    :func:`fuse_frozen`, drawn from its own generator (the global stream is not touched)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, *input_shape, generator=g).to(device)
