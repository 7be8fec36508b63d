"""A run's kept student: its last and best weights beside its record, and what a user does with
them (:func:`load_kept`, :func:`evaluate_kept`, :func:`export_kept`).

``runs/<run_id>.last.safetensors`` and ``runs/<run_id>.best.safetensors`` hold the student's
state dict (BatchNorm statistics included) and, in the safetensors header, what rebuilds it: the
architecture, the classes and input shape, the epoch and the run's full config. The best
weights are written when an epoch becomes the best one (to a hidden pending file, so a resumed
run keeps them and a forced rerun never replaces a finished run's files before it is done);
both files are in place before the record that names them. ``keep: false`` (``--no-keep``)
keeps none.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import ConfigError, KDBenchError
from ..store import Store, atomic_write_bytes, sha256_file

WHICH = ("last", "best")
FORMATS = {"safetensors": ".safetensors", "torchscript": ".pt", "onnx": ".onnx"}
#: the header key that marks a kdbench student file
MARK = "kdbench_student"


def weights_path(store: Store, run_id: str, which: str) -> Path:
    return store.runs / f"{run_id}.{which}.safetensors"


def pending_best_path(store: Store, run_id: str) -> Path:
    return store.runs / f".{run_id}.best.pending.safetensors"


def _encode(model: Any, meta: dict[str, Any]) -> bytes:
    from safetensors.torch import save

    state = {k: v.detach().to("cpu").contiguous().clone()
             for k, v in model.state_dict().items()}
    header = {MARK: "1", **{k: v if isinstance(v, str) else json.dumps(v)
                            for k, v in meta.items()}}
    return save(state, metadata=header)


def _meta(cfg: Any, run_id: str, which: str, epoch: int, dataset: Any) -> dict[str, Any]:
    return {"run_id": run_id, "which": which, "epoch": epoch, "arch": cfg.student,
            "num_classes": dataset.num_classes, "in_chans": dataset.in_chans,
            "input_shape": list(dataset.input_shape), "config": cfg.to_dict()}


def save_best_if_new(store: Store, cfg: Any, run_id: str, trainee: Any, best_metric: str,
                     lower_is_better: set[str], dataset: Any) -> None:
    """After an epoch: when it is the run's best one so far (as the record will pick it, the
    earliest on a tie), write the student's weights to the pending best file."""
    from ..evaluators import summarize

    if not cfg.keep or not trainee.history:
        return
    epoch = trainee.history[-1]["epoch"]
    if best_metric not in trainee.history[-1]:
        return
    best = summarize(trainee.history, [], best_metric, lower_is_better)["best_epoch"]
    if best == epoch:
        atomic_write_bytes(pending_best_path(store, run_id),
                           _encode(trainee.model, _meta(cfg, run_id, "best", epoch, dataset)))


def keep_student(store: Store, cfg: Any, record: dict[str, Any], trainee: Any,
                 dataset: Any) -> None:
    """At the end of a run: write the last weights, move the pending best ones into place and
    say in ``record["weights"]`` which files hold what (``keep: false``: none kept)."""
    rid = record["run_id"]
    pending = pending_best_path(store, rid)
    if not cfg.keep:
        pending.unlink(missing_ok=True)
        record["weights"] = None
        return
    metrics = record["metrics"]
    last_epoch, best_epoch = metrics["epochs"], metrics["best_epoch"]
    last = weights_path(store, rid, "last")
    atomic_write_bytes(last, _encode(trainee.model, _meta(cfg, rid, "last", last_epoch,
                                                          dataset)))
    best = weights_path(store, rid, "best")
    if best_epoch == last_epoch:
        atomic_write_bytes(best, _encode(trainee.model, _meta(cfg, rid, "best", last_epoch,
                                                              dataset)))
        pending.unlink(missing_ok=True)
    elif pending.is_file() and read_header(pending).get("epoch") == best_epoch:
        os.replace(pending, best)
    else:  # the best epoch was trained by a kdbench that kept nothing (a resumed old attempt)
        pending.unlink(missing_ok=True)
        best.unlink(missing_ok=True)
    record["weights"] = {
        which: {"file": p.name, "epoch": epoch, "sha256": sha256_file(p)}
        for which, p, epoch in (("last", last, last_epoch), ("best", best, best_epoch))
        if p.is_file()}


# ============================== reading kept weights ==========================================


def read_header(path: Path) -> dict[str, Any]:
    """The kdbench header of a student file (empty: not one of ours)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except Exception as exc:  # noqa: BLE001 - not a safetensors file at all
        raise ConfigError(f"{str(path)!r} is not a safetensors file ({type(exc).__name__})"
                          ) from None
    if MARK not in raw:
        return {}
    out: dict[str, Any] = {}
    for k, v in raw.items():
        try:
            out[k] = json.loads(v)
        except ValueError:
            out[k] = v
    return out


def find_weights(source: str, results_dir: str, which: str = "last") -> Path:
    """The student file of ``source``: a ``.safetensors`` file, or a run id (or a unique
    prefix of one) in ``results_dir`` whose record kept weights."""
    if which not in WHICH:
        raise ConfigError(f"unknown weights {which!r} (valid: {', '.join(WHICH)})")
    p = Path(source)
    if p.suffix == ".safetensors" or p.is_file():
        if not p.is_file():
            raise ConfigError(f"weights file {source!r} does not exist")
        return p
    store = Store(results_dir)
    rid = source
    if not store.record_path(rid).is_file():
        ids = sorted(q.stem for q in store.runs.glob(f"{source}*.json")) \
            if store.runs.is_dir() else []
        if len(ids) != 1:
            what = f"matches {len(ids)} runs" if ids else "is no run id or file"
            raise ConfigError(f"{source!r} {what} in {str(store.runs)!r}")
        rid = ids[0]
    record = store.load_record(rid)
    kept = (record or {}).get("weights") or {}
    path = weights_path(store, rid, which)
    if which not in kept or not path.is_file():
        why = ("it ran with keep: false" if record is not None and "weights" in record
               else "it finished before kdbench kept students" if (record or {}).get(
                   "status") == "done" else f"its status is {(record or {}).get('status')}")
        raise ConfigError(f"run {rid} has no kept {which} weights ({why}); rerun it with "
                          f"--force to keep them")
    return path


def load_kept(path: Path, device: Any = "cpu") -> tuple[Any, dict[str, Any]]:
    """The student a kept file holds, rebuilt from its header and in eval mode, and the
    header."""
    from safetensors.torch import load_file

    from ..models import create_model

    meta = read_header(path)
    if not meta:
        raise ConfigError(f"{str(path)!r} is not a kdbench student file (its header names no "
                          f"architecture); load it with --student-weights into a run instead")
    model = create_model(meta["arch"], meta["num_classes"], meta["in_chans"])
    state = load_file(str(path))
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = next((line.strip() for line in first[1:] if line.strip()), first[0])
        raise ConfigError(f"{str(path)!r} holds weights of another architecture than its "
                          f"header's {meta['arch']!r}: {detail}") from None
    return model.to(device).eval(), meta


# ============================== eval ==========================================================


def evaluate_kept(source: str, *, results_dir: str = "results", which: str = "last",
                  evaluators: list[str] | None = None, dataset: str | None = None,
                  data_dir: str | None = None, device: str = "cpu") -> dict[str, Any]:
    """Evaluate kept weights with the run's evaluators (or ``evaluators``) on the run's data
    (or ``dataset``'s test split), as the run evaluated its last epoch: same data, precision
    and memory layout, so a run's ``<metric>_last`` comes back exactly."""
    from .. import device as dev
    from ..config import RunConfig, parse_plugin_item, resolve
    from ..data import load_data
    from ..engine.speed import prepared
    from ..evaluators import EvalContext, build_suite

    path = find_weights(source, results_dir, which)
    meta = read_header(path)
    if not meta:
        raise ConfigError(f"{str(path)!r} is not a kdbench student file (its header names no "
                          f"architecture)")
    cfg = resolve(RunConfig.from_dict(meta["config"]))
    if dataset is not None and dataset != cfg.data.name:
        cfg.data = type(cfg.data)(name=dataset)
    if data_dir is not None:
        cfg.data.dir = data_dir
    torch_device = dev.resolve_device(device)
    data = load_data(cfg.data, torch_device)
    if data.num_classes != meta["num_classes"] or tuple(data.input_shape) != tuple(
            meta["input_shape"]):
        raise ConfigError(f"dataset {cfg.data.name!r} has {data.num_classes} classes of shape "
                          f"{tuple(data.input_shape)}; the student was trained on "
                          f"{meta['num_classes']} of {tuple(meta['input_shape'])}")
    items = ([parse_plugin_item(e, "--eval") for e in evaluators] if evaluators
             else cfg.eval.evaluators)
    model, _ = load_kept(path, torch_device)
    precision = cfg.resolved_precision
    channels_last = (dev.default_channels_last(torch_device) if cfg.engine.channels_last is None
                     else cfg.engine.channels_last)
    suite = build_suite(items, EvalContext(data), epochs=1, precision=precision,
                        channels_last=channels_last, best_metric=cfg.eval.best_metric)
    try:
        with prepared([model], channels_last=channels_last):
            metrics = suite.evaluate(model, 1)
    except KDBenchError:
        raise
    except (KeyError, ValueError, RuntimeError) as exc:  # an evaluator the data cannot serve
        raise ConfigError(f"evaluators {', '.join(spec.name for spec, _, _ in suite.items)} "
                          f"cannot evaluate on {cfg.data.name!r}: {type(exc).__name__}: {exc}"
                          ) from None
    return {"file": str(path), "run_id": meta.get("run_id"), "which": meta.get("which"),
            "epoch": meta.get("epoch"), "arch": meta["arch"], "dataset": cfg.data.name,
            "metrics": metrics}


# ============================== export ========================================================


def export_kept(source: str, fmt: str, out: str | None = None, *,
                results_dir: str = "results", which: str = "last") -> Path:
    """Write kept weights as a model a user can deploy: ``safetensors`` (the state dict and
    its header), ``torchscript`` (traced) or ``onnx`` (torch's exporter). Returns the path."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r} (valid: {', '.join(FORMATS)})")
    path = find_weights(source, results_dir, which)
    meta = read_header(path)
    name = f"{meta.get('run_id') or path.stem}.{which}" if meta else path.stem
    target = Path(out) if out else Path(f"{name}.{meta.get('arch', 'student')}"
                                        f"{FORMATS[fmt]}")
    if not target.parent.is_dir():
        raise ConfigError(f"output folder {str(target.parent)!r} does not exist")
    model, meta = load_kept(path)
    if fmt == "safetensors":
        atomic_write_bytes(target, path.read_bytes())
        return target
    import io

    import torch

    example = torch.zeros(1, *meta["input_shape"])
    buf = io.BytesIO()
    if fmt == "torchscript":
        import warnings

        with torch.no_grad(), warnings.catch_warnings():  # "deprecated": still what deploys
            warnings.simplefilter("ignore", FutureWarning)
            traced = torch.jit.trace(model, example)
            torch.jit.save(traced, buf)
    else:
        try:
            import onnx  # noqa: F401 - torch's exporter needs it
        except ImportError:
            raise ConfigError("export --format onnx needs the onnx package (pip install onnx)"
                              ) from None
        torch.onnx.export(model, (example,), buf, input_names=["images"],
                          output_names=["logits"], dynamic_axes={"images": {0: "batch"},
                                                                 "logits": {0: "batch"}},
                          dynamo=False)
    atomic_write_bytes(target, buf.getvalue())
    return target
