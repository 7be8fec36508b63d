"""Weights files as the field trades them: reading them safely, telling their format, and
mapping their parameter names onto kdbench's models.

Formats read (``Checkpoint.format``, recorded as the teacher's ``weights_format``):

- ``repdistiller``: what RepDistiller's ``train_teacher.py``/``train_student.py`` save and its
  published CIFAR-100 teachers are, ``{'model': state_dict, 'epoch', 'accuracy' | 'best_acc',
  'optimizer', 'opt': argparse.Namespace}`` (``opt`` only in ``*_last.pth``);
- ``mdistiller``: mdistiller's own files, ``{'model': state_dict}`` (``student_best``) or a
  distiller checkpoint whose ``model`` holds ``module.student.*``/``module.teacher.*`` (the
  student is read); mdistiller's *teachers* are RepDistiller's files and read as those;
- ``timm``: timm's training checkpoint, ``{'state_dict', 'state_dict_ema'?, 'arch', 'args'}``;
- ``state_dict``: a plain state dict (``.pt``/``.pth``: torchvision's and timm's published
  weights, kdbench's own checkpoints), optionally under ``state_dict``/``model``;
- ``safetensors``: a ``.safetensors`` file (timm's and the Hugging Face hub's format).

``read`` never runs code from a file: ``torch.load(weights_only=True)`` unpickles tensors,
containers and plain values only, plus :data:`SAFE_GLOBALS`, a short allow-list of inert types
(``argparse.Namespace``, numpy's scalar and dtype) that RepDistiller's files hold.

Key layouts (``weights_layout``): ``kdbench`` (our own names), ``repdistiller`` (RepDistiller's
and mdistiller's CIFAR zoo, mapped by :data:`KEY_MAPS`, one explicit rule list per family), and
for ``timm/<name>`` models ``timm`` (timm's own names; torchvision's ResNets and DenseNets have
them), ``torchvision`` (torchvision's ImageNet classifiers, mapped by the explicit rule list of
the timm architecture in :mod:`kdbench.models.torchvision_keys`), ``original`` (the names of the
network's original release, converted by the timm model's own ``checkpoint_filter_fn``) or, as
the last resort, ``positional`` (another library's names for the same tensors in the same order,
every shape agreeing: torchvision's MNASNet).
"""

from __future__ import annotations

import argparse
import pickle
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ..store import sha256_file
from . import torchvision_keys


def _numpy_globals() -> list[Any]:
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy comes with torch here
        return []
    core = getattr(np, "_core", None) or np.core
    dtypes = [type(np.dtype(t)) for t in ("float64", "float32", "int64", "int32", "bool")]
    return [core.multiarray.scalar, np.dtype, *dtypes]


#: the only non-container types a weights file may hold: plain records without behaviour
SAFE_GLOBALS: list[Any] = [argparse.Namespace, *_numpy_globals()]

#: RepDistiller's ``model_dict`` names -> kdbench's zoo names (the 22 architectures both share)
REPDISTILLER_NAMES = {
    "resnet8": "resnet8", "resnet14": "resnet14", "resnet20": "resnet20",
    "resnet32": "resnet32", "resnet44": "resnet44", "resnet56": "resnet56",
    "resnet110": "resnet110", "resnet8x4": "resnet8x4", "resnet32x4": "resnet32x4",
    "ResNet50": "resnet50", "wrn_16_1": "wrn_16_1", "wrn_16_2": "wrn_16_2",
    "wrn_40_1": "wrn_40_1", "wrn_40_2": "wrn_40_2", "vgg8": "vgg8", "vgg11": "vgg11",
    "vgg13": "vgg13", "vgg16": "vgg16", "vgg19": "vgg19", "MobileNetV2": "mobilenetv2",
    "ShuffleV1": "shufflev1", "ShuffleV2": "shufflev2",
}

_L = r"layer(\d+)\.(\d+)\."  # RepDistiller's `layer<i>.<j>.`: stage i (from 1), block j


def _stage(m: re.Match) -> str:
    return f"layers.{int(m.group(1)) - 1}.{m.group(2)}."


#: RepDistiller's (and mdistiller's) parameter names -> kdbench's, per model class: ordered
#: (pattern, replacement) rules, the first matching one applies; names no rule matches (stems,
#: classifiers named alike) are the same in both zoos.
KEY_MAPS: dict[str, list[tuple[str, Any]]] = {
    # resnet8..110, resnet8x4/32x4: layer<i>.<j>.{conv,bn}<k>, .downsample.<0|1>
    "CifarResNet": [(_L, _stage)],
    # RepDistiller's resnetv2.ResNet50: .shortcut.<0|1> for our .downsample, `linear` for `fc`
    "ResNet": [(_L + r"shortcut\.", lambda m: _stage(m) + "downsample."), (_L, _stage),
               (r"linear\.", "fc.")],
    # wrn_d_k: block<i>.layer.<j>.*, convShortcut for our shortcut; stem conv1, final bn1, fc
    "WideResNet": [(r"block(\d+)\.layer\.(\d+)\.convShortcut\.",
                    lambda m: f"layers.{int(m.group(1)) - 1}.{m.group(2)}.shortcut."),
                   (r"block(\d+)\.layer\.(\d+)\.",
                    lambda m: f"layers.{int(m.group(1)) - 1}.{m.group(2)}.")],
    # vgg: block<i>.<k> (conv, bn, relu, ... as one Sequential), `classifier` alike
    "VGG": [(r"block(\d+)\.", lambda m: f"blocks.{m.group(1)}.")],
    # mobile_half: conv1.<k>, blocks.<i>.<j>.conv.<k>, conv2.<k> alike; classifier.0 for ours
    "MobileNetV2": [(r"classifier\.0\.", "classifier.")],
    # ShuffleV1: per unit conv<k>/bn<k> for our conv<k>.0/conv<k>.1
    "ShuffleNetV1": [(_L + r"conv(\d)\.", lambda m: _stage(m) + f"conv{m.group(3)}.0."),
                     (_L + r"bn(\d)\.", lambda m: _stage(m) + f"conv{m.group(3)}.1.")],
    # ShuffleV2: unit 0 of a stage is the DownBlock (conv1..5/bn1..5: left 0, 1; right 0, 2, 3),
    # the others BasicBlocks (conv1..3/bn1..3: branch 0, 2, 3)
    "ShuffleNetV2": [
        (r"layer(\d+)\.0\.(conv|bn)(\d)\.", lambda m: "layers.{}.0.{}.{}.".format(
            int(m.group(1)) - 1,
            ("left.0", "left.1", "right.0", "right.2", "right.3")[int(m.group(3)) - 1],
            0 if m.group(2) == "conv" else 1)),
        (_L + r"(conv|bn)(\d)\.", lambda m: _stage(m) + "branch.{}.{}.".format(
            (0, 2, 3)[int(m.group(4)) - 1], 0 if m.group(3) == "conv" else 1)),
    ],
}


def map_key(rules: list[tuple[str, Any]], key: str) -> str:
    """One parameter name through a family's rules (unchanged when no rule matches)."""
    for pattern, replacement in rules:
        m = re.match(pattern, key)
        if m:
            new = replacement(m) if callable(replacement) else m.expand(replacement)
            return new + key[m.end():]
    return key


@dataclass
class Checkpoint:
    """The tensors of a weights file, the format they came in and what else it said."""

    state: dict[str, torch.Tensor]
    format: str
    meta: dict[str, Any] = field(default_factory=dict)


def read(path: str | Path) -> Checkpoint:
    """Read a weights file without running any code from it; ``ConfigError`` (one line) for a
    missing file, a file that is not a checkpoint, or one holding objects beyond the allow-list.
    """
    p = resolve_path(path)
    if p.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return Checkpoint(load_file(str(p)), "safetensors")
        except (SafetensorError, OSError, ValueError) as exc:
            raise ConfigError(f"weights file {str(p)!r} is not a readable .safetensors file "
                              f"({_first_line(exc)})") from None
    try:
        with warnings.catch_warnings():  # torch's pickle-protocol notes: not ours to show
            warnings.simplefilter("ignore", UserWarning)
            with torch.serialization.safe_globals(SAFE_GLOBALS):
                obj = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" in str(exc):  # a pickle torch's safe unpickler refused
            raise ConfigError(f"cannot load weights {str(p)!r}: it holds Python objects beyond "
                              f"tensors, which kdbench never unpickles (torch.load "
                              f"weights_only=True; allowed besides tensors and containers: "
                              f"{', '.join(_name(g) for g in SAFE_GLOBALS[:1])}, numpy "
                              f"scalars); save a plain state dict or .safetensors") from None
        raise ConfigError(f"weights file {str(p)!r} is not a PyTorch checkpoint "
                          f"({_first_line(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - any other failure: bytes torch cannot parse
        raise ConfigError(f"weights file {str(p)!r} is not a PyTorch checkpoint "
                          f"({_first_line(exc)})") from None
    return _unpack(obj, p)


#: weight files in a Hugging Face hub snapshot (where timm keeps what it downloads), by preference
HUB_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")


def resolve_path(path: str | Path) -> Path:
    """The weights file ``path`` names: the file itself, or in a folder of timm's hub cache
    layout (``models--timm--<name>/`` with ``refs/main`` and ``snapshots/<hash>/``, or one
    snapshot folder) its ``model.safetensors`` (else ``pytorch_model.bin``)."""
    p = Path(path)
    if p.is_file():
        return p
    if not p.is_dir():
        raise ConfigError(f"weights file {str(p)!r} does not exist")
    folder = p
    snapshots = p / "snapshots"
    if snapshots.is_dir():
        ref = p / "refs" / "main"
        revision = ref.read_text().strip() if ref.is_file() else ""
        found = sorted(d for d in snapshots.iterdir() if d.is_dir())
        chosen = [d for d in found if d.name == revision] or found[-1:]
        if not chosen:
            raise ConfigError(f"weights folder {str(p)!r} has no snapshot in snapshots/")
        folder = chosen[0]
    for name in HUB_FILES:
        if (folder / name).is_file():
            return folder / name
    raise ConfigError(f"weights folder {str(p)!r} holds none of {', '.join(HUB_FILES)} (a "
                      f"timm hub cache folder is models--timm--<name>/ with "
                      f"snapshots/<hash>/model.safetensors)")


def _unpack(obj: Any, p: Path) -> Checkpoint:
    if not isinstance(obj, dict):
        raise ConfigError(f"weights file {str(p)!r} holds a {type(obj).__name__}, not a state "
                          f"dict or a checkpoint dict")
    meta: dict[str, Any] = {}
    if isinstance(obj.get("model"), dict):
        state, fmt = obj["model"], "repdistiller"
        opt = obj.get("opt")
        if isinstance(opt, argparse.Namespace):
            name = getattr(opt, "model_s", None) or getattr(opt, "model", None)
            if isinstance(name, str):
                meta["model"] = name
        for key in ("epoch", "accuracy", "best_acc"):
            if key in obj:
                meta[key] = _plain(obj[key])
        students = {k.split("student.", 1)[1]: v for k, v in state.items()
                    if k.startswith(("module.student.", "student."))}
        if students:  # an mdistiller distiller checkpoint: its student
            state, fmt = students, "mdistiller"
        elif set(obj) == {"model"}:
            fmt = "mdistiller"
    elif isinstance(obj.get("state_dict"), dict):
        state = obj["state_dict"]
        fmt = "timm" if "arch" in obj or "state_dict_ema" in obj else "state_dict"
        if isinstance(obj.get("arch"), str):
            meta["model"] = obj["arch"]
        if "epoch" in obj:
            meta["epoch"] = _plain(obj["epoch"])
    else:
        state, fmt = obj, "state_dict"
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors or not all(isinstance(k, str) for k in state):
        raise ConfigError(f"weights file {str(p)!r} is not a checkpoint: no tensors by name "
                          f"(top-level keys: {', '.join(map(str, list(obj)[:8])) or 'none'})")
    tensors = {k.removeprefix("module."): v for k, v in tensors.items()}
    return Checkpoint(tensors, fmt, meta)


def _plain(value: Any) -> Any:
    """A JSON-friendly copy of what a checkpoint says about itself (a 1-element tensor: its
    number)."""
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    try:
        return value.item()
    except Exception:  # noqa: BLE001 - anything else is shown, not interpreted
        return str(value)


def _name(obj: Any) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:160] if text else type(exc).__name__


# ---- fitting a state dict to a model -----------------------------------------------------------

def _mismatch(state: dict[str, torch.Tensor], own: dict[str, torch.Tensor]
              ) -> tuple[str, str] | None:
    """The first disagreement between a state dict and a model's: (key, description)."""
    for k, v in own.items():
        if k not in state:
            return k, f"{k} {list(v.shape)} is missing from the file"
        if state[k].shape != v.shape:
            return k, (f"{k} is {list(state[k].shape)} in the file, {list(v.shape)} in the "
                       f"model")
    for k, v in state.items():
        if k not in own:
            return k, f"the file has {k} {list(v.shape)}, which the model does not"
    return None


def classifier_keys(model: nn.Module) -> list[str]:
    """The state-dict names of a model's classifier (its last ``nn.Linear``, or timm's
    ``get_classifier()``)."""
    inner = getattr(model, "model", None)
    if inner is not None and hasattr(inner, "get_classifier"):
        head = inner.get_classifier()
        prefix = "model."
        root: nn.Module = inner
    else:
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        head, prefix, root = (linears[-1] if linears else None), "", model
    if not isinstance(head, nn.Module):
        return []
    ids = {id(t) for t in list(head.parameters()) + list(head.buffers())}
    return [prefix + k for k, t in root.state_dict(keep_vars=True).items() if id(t) in ids]


def candidates(model: nn.Module, state: dict[str, torch.Tensor], head: set[str] | None = None
               ) -> list[tuple[str, dict[str, torch.Tensor]]]:
    """The ways a file's names may map onto ``model``: (layout, mapped state), in order.
    ``head``: classifier keys whose shape may differ (a fresh head)."""
    out = [("kdbench", state)]
    rules = KEY_MAPS.get(type(model).__name__)
    if rules is not None:
        out.append(("repdistiller", {map_key(rules, k): v for k, v in state.items()}))
    inner = getattr(model, "model", None)
    if inner is not None and hasattr(model, "timm_name"):
        if not any(k.startswith("model.") for k in state):
            out.append(("timm", {f"model.{k}": v for k, v in state.items()}))
            converted = torchvision_keys.convert(inner, state)
            if converted is not None:
                out.append(("torchvision", {f"model.{k}": v for k, v in converted.items()}))
            import sys

            module = sys.modules.get(type(inner).__module__)
            filter_fn = getattr(module, "checkpoint_filter_fn", None) or getattr(
                module, "_filter_fn", None)
            if filter_fn is not None:
                try:
                    converted = filter_fn(dict(state), inner)
                except Exception:  # noqa: BLE001 - a converter for another layout
                    converted = None
                if isinstance(converted, dict):
                    out.append(("original", {f"model.{k}": v for k, v in converted.items()}))
    own = model.state_dict()
    if len(own) == len(state) and all(a.shape == b.shape or k in (head or ()) for (k, a), b in zip(
            own.items(), state.values())):
        # another library's names for the same network, tensor for tensor in the same order
        # (torchvision's MobileNetV2 for timm's): every shape must agree, in order
        out.append(("positional", dict(zip(own, state.values()))))
    return out


@dataclass
class Loaded:
    """What :func:`load_weights` did: the file's format and layout, its SHA-256, what it said
    about itself, and the classifier keys left fresh because the file's head had another shape.
    """

    format: str
    layout: str
    sha256: str
    meta: dict[str, Any]
    fresh_head: list[str]

    def provenance(self) -> dict[str, Any]:
        out = {"weights_format": self.format, "weights_layout": self.layout,
               "weights_sha256": self.sha256}
        if self.meta:
            out["weights_meta"] = self.meta
        if self.fresh_head:
            out["weights_fresh_head"] = self.fresh_head
        return out


def load_weights(model: nn.Module, path: str | Path, *, arch: str | None = None,
                 keep_fresh_head: bool | None = None, warn: bool = True) -> Loaded:
    """Load a weights file into ``model`` (any format :func:`read` knows, any layout
    :func:`candidates` maps). ``keep_fresh_head``: a classifier of another shape (ImageNet's
    1000 classes on a 10-class task) is left as the model built it (with a warning unless not
    ``warn``), for fine-tuning or a teacher stage to adapt; otherwise every tensor must fit.
    By default only ``timm/<name>`` models keep a fresh head, as timm does. A file that fits
    in no layout is a one-line ``ConfigError`` naming the first mismatched key and shapes and,
    when it can tell, the architecture the file holds."""
    p = resolve_path(path)
    ckpt = read(p)
    own = model.state_dict()
    if keep_fresh_head is None:
        keep_fresh_head = hasattr(model, "timm_name")
    head = set(classifier_keys(model)) if keep_fresh_head else set()
    best: tuple[int, str, dict[str, torch.Tensor], tuple[str, str]] | None = None
    for layout, state in candidates(model, ckpt.state, head):
        state, adapted = _adapt_input_conv(model, state, own)
        # files from before torch 0.4.1 lack BatchNorm's counters, which no forward reads
        state = {**{k: v for k, v in own.items()
                    if k.endswith("num_batches_tracked") and k not in state}, **state}
        meta = {**ckpt.meta, "input_conv": adapted} if adapted else ckpt.meta
        if layout == "torchvision":
            eps = torchvision_keys.bn_eps_mismatch(model.model)
            if eps:
                meta = {**meta, "bn_eps": eps}
        bad = _mismatch(state, own)
        if bad is None:
            model.load_state_dict(state)
            _warn_eps(model, arch, meta, warn)
            return Loaded(ckpt.format, layout, sha256_file(p), meta, [])
        fresh = [k for k in head if k in state and k in own and state[k].shape != own[k].shape]
        if fresh:
            merged = {**state, **{k: own[k] for k in fresh}}
            if _mismatch(merged, own) is None:
                model.load_state_dict(merged)
                if warn:
                    k = sorted(fresh)[0]
                    warnings.warn(f"kdbench: {_label(model, arch)}: keeping a fresh classifier, "
                                  f"the weights' {', '.join(sorted(fresh))} have another shape "
                                  f"({tuple(state[k].shape)} vs {tuple(own[k].shape)})",
                                  RuntimeWarning, stacklevel=2)
                _warn_eps(model, arch, meta, warn)
                return Loaded(ckpt.format, layout, sha256_file(p), meta, sorted(fresh))
        score = len(set(state) & set(own))
        if best is None or score > best[0]:
            best = (score, layout, state, bad)
    assert best is not None
    _, layout, _, (_, why) = best
    name = _label(model, arch)
    held = guess_architecture(ckpt)
    seems = f"; the file seems to hold {held}" if held and held != arch else ""
    raise ConfigError(f"cannot load weights {str(p)!r} ({ckpt.format} file, {layout} names) "
                      f"into {name}: {why}{seems}")


def _warn_eps(model: nn.Module, arch: str | None, meta: dict[str, Any], warn: bool) -> None:
    if warn and "bn_eps" in meta:
        warnings.warn(f"kdbench: {_label(model, arch)}: {meta['bn_eps']}", RuntimeWarning,
                      stacklevel=3)


def _adapt_input_conv(model: nn.Module, state: dict[str, torch.Tensor],
                      own: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    """RGB weights for a timm model of other input channels (grayscale digits): its first
    convolution converted as timm does for pretrained weights (``adapt_input_conv``: summed to
    one channel, or repeated and rescaled); says what it did ("" when nothing)."""
    if not hasattr(model, "timm_name"):
        return state, ""
    first = next((k for k, v in own.items() if v.dim() == 4), None)
    if first is None or first not in state:
        return state, ""
    w, mine = state[first], own[first]
    if w.dim() != 4 or w.shape[1] != 3 or mine.shape[1] == 3 or \
            (w.shape[0], *w.shape[2:]) != (mine.shape[0], *mine.shape[2:]):
        return state, ""
    from timm.models import adapt_input_conv

    converted = adapt_input_conv(mine.shape[1], w.float()).to(w.dtype)
    return {**state, first: converted}, f"{first}: 3 -> {mine.shape[1]} channels"


def _label(model: nn.Module, arch: str | None) -> str:
    timm_name = getattr(model, "timm_name", None)
    return arch or (f"timm/{timm_name}" if timm_name else type(model).__name__)


def guess_architecture(ckpt: Checkpoint) -> str | None:
    """The zoo architecture a checkpoint holds: the name it records (RepDistiller's ``opt``,
    timm's ``arch``), else the first zoo model whose every tensor it fits."""
    named = ckpt.meta.get("model")
    if isinstance(named, str):
        return REPDISTILLER_NAMES.get(named, named)
    from .registry import ZOO

    num_classes = _classes(ckpt.state)
    if num_classes is None:
        return None
    for name, (factory, _) in ZOO.items():
        try:
            with torch.device("meta"):
                model = factory(num_classes)
        except Exception:  # noqa: BLE001 - a factory that needs other arguments
            continue
        own = model.state_dict()
        for _, state in candidates(model, ckpt.state):
            if state.keys() == own.keys() and all(state[k].shape == own[k].shape for k in own):
                return name
    return None


def _classes(state: dict[str, torch.Tensor]) -> int | None:
    """The class count of a CIFAR-zoo state dict: the rows of its last 2-d tensor."""
    mats = [v for v in state.values() if v.dim() == 2]
    return int(mats[-1].shape[0]) if mats else None
