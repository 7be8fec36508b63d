"""Result records and teacher artefacts on disk. Every write goes to a temporary file in the same
folder and is renamed over the target, so a reader never sees half a file."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import StoreError

#: 2: metrics of every evaluator (``<metric>_last/_best``), ``stages``, ``data``; 1 still reads
SCHEMA_VERSION = 2
READABLE_SCHEMAS = (1, 2)
RECORD_KEYS = ("schema", "run_id", "status", "config")


#: a distributed run's ranks other than 0 write nothing (rank 0 writes for all of them)
_read_only = False


def set_read_only(flag: bool) -> None:
    """Make every write of this process a no-op (``True``: a distributed run's rank > 0)."""
    global _read_only
    _read_only = bool(flag)


def _file_mode() -> int:
    """The mode a new file gets from the process's umask (mkstemp's 0600 would lock others out
    of a shared store)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it over ``path``: a reader
    sees the old file or the new one, never half of one. The file gets the umask's mode."""
    if _read_only:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), _file_mode())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False, default=_json_default)
                              + "\n").encode())


def atomic_torch_save(obj: Any, path: Path) -> str:
    """Save with torch.save atomically; returns the file's SHA-256."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    data = buf.getvalue()
    atomic_write_bytes(Path(path), data)
    return hashlib.sha256(data).hexdigest()


def save_resume(obj: Any, path: Path) -> None:
    """Write a resume file (training state) with its checksum.

    The SHA-256 goes to ``<path>.sha256`` *before* the state file is replaced, and that sidecar
    keeps the previous digest too, so whichever of the two state files a crash leaves behind
    verifies.
    """
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    data = buf.getvalue()
    sidecar = Path(str(path) + ".sha256")
    digests = [hashlib.sha256(data).hexdigest()]
    if Path(path).is_file() and sidecar.is_file():
        with contextlib.suppress(OSError, ValueError, StoreError):
            old = read_json(sidecar, "checksum").get("sha256", [])
            digests += [d for d in old[:1] if d != digests[0]]
    atomic_write_json(sidecar, {"sha256": digests})
    atomic_write_bytes(Path(path), data)


def remove_resume(path: Path) -> None:
    """Delete a resume file and its checksum (a finished or restarted run's)."""
    if _read_only:
        return
    Path(path).unlink(missing_ok=True)
    Path(str(path) + ".sha256").unlink(missing_ok=True)


def load_resume(path: Path, device: Any = "cpu") -> dict[str, Any] | None:
    """The training state in a resume file, or None when there is none.

    Loaded with ``weights_only=True`` (no code runs from the store) after its checksum is
    verified. A file that fails either check is set aside (renamed ``*.corrupt-<time>``) with a
    warning naming it, and None is returned: the run starts afresh rather than resuming from
    a damaged or planted state.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        return None
    sidecar = Path(str(path) + ".sha256")
    why = None
    try:
        expected = read_json(sidecar, "checksum")["sha256"] if sidecar.is_file() else None
    except (StoreError, KeyError, TypeError):
        expected = None
    if expected is None:
        why = "it has no valid checksum file"
    elif sha256_file(path) not in expected:
        why = "its SHA-256 does not match its checksum file"
    else:
        try:
            with warnings.catch_warnings():  # torch's pickle-protocol notes: not ours to show
                warnings.simplefilter("ignore", UserWarning)
                return torch.load(path, map_location=device, weights_only=True)
        except Exception as exc:  # noqa: BLE001 - unreadable or not plain tensors and values
            why = f"it cannot be read as plain tensors ({type(exc).__name__})"
    set_aside(path, f"is not a trusted resume file ({why}); the run starts afresh")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(sidecar)
    return None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def read_json(path: Path, what: str = "file") -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise
    except PermissionError:
        raise StoreError(f"cannot read {what} {str(path)!r}: permission denied") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StoreError(f"corrupt {what} {str(path)!r}: {exc}") from None


def set_aside(path: Path, why: str) -> Path:
    """Rename a damaged file to ``<name>.corrupt-<time>`` (kept for inspection, out of the way)
    and warn, naming it; returns the new path."""
    import time

    path = Path(path)
    aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
    os.replace(path, aside)
    warnings.warn(f"kdbench: {str(path)!r} {why}; set aside as {aside.name}", RuntimeWarning,
                  stacklevel=3)
    return aside


class Store:
    """``<root>/runs/<run_id>.json`` records and ``<root>/teachers/<key>/`` trajectories."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)
        self.runs = self.root / "runs"
        self.teachers = self.root / "teachers"

    def check_writable(self) -> None:
        """Fail early, before any training, if records could not be written."""
        try:
            self.runs.mkdir(parents=True, exist_ok=True)
            self.teachers.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.runs, prefix=".probe.")
            os.close(fd)
            os.unlink(tmp)
        except OSError as exc:
            raise StoreError(f"results dir {str(self.root)!r} is not writable: "
                             f"{exc.strerror or exc}") from None

    # -- run records -----------------------------------------------------------------------------
    def record_path(self, run_id: str) -> Path:
        return self.runs / f"{run_id}.json"

    def state_path(self, run_id: str) -> Path:
        return self.runs / f"{run_id}.state.pt"

    def load_record(self, run_id: str, *, set_aside_corrupt: bool = False
                    ) -> dict[str, Any] | None:
        """The record of ``run_id`` (None without one). A corrupt record raises StoreError, or
        with ``set_aside_corrupt`` is set aside with a warning and counts as absent (the run
        that is about to replace it)."""
        path = self.record_path(run_id)
        if not path.exists():
            return None
        try:
            return validate_record(read_json(path, "record"), path)
        except StoreError as exc:
            if not set_aside_corrupt or not path.exists():
                raise
            set_aside(path, f"is unreadable ({exc}); the run is made again")
            return None

    @contextlib.contextmanager
    def run_lock(self, run_id: str, *, say: Any = None) -> Iterator[None]:
        """Hold ``.locks/<run_id>.lock`` (one process per run). When another process holds it,
        ``say`` (a one-line message callable) is told, then this process waits its turn."""
        import fcntl

        if _read_only:  # a distributed run's other ranks: rank 0 holds the lock for them
            yield
            return
        locks = self.root / ".locks"
        locks.mkdir(parents=True, exist_ok=True)
        with open(locks / f"{run_id}.lock", "a+") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.seek(0)
                holder = fh.read().strip() or "another process"
                if say is not None:
                    say(f"kdbench: run {run_id} is being trained by {holder}; waiting for it "
                        f"to finish")
                fcntl.flock(fh, fcntl.LOCK_EX)
            fh.seek(0)
            fh.truncate()
            fh.write(f"pid {os.getpid()}")
            fh.flush()
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def adopt(self, old_id: str, run_id: str) -> dict[str, Any] | None:
        """Move a record stored under an older id of the same run (``legacy_run_id``) to
        ``run_id``: the record says both ids, the old file goes once the new one is written."""
        if _read_only:
            return self.load_record(old_id) if old_id != run_id else None
        if old_id == run_id or self.record_path(run_id).exists():
            return None
        try:
            record = self.load_record(old_id)
        except StoreError:
            return None
        if record is None:
            return None
        record.update(run_id=run_id, legacy_run_id=old_id)
        self.write_record(record)
        self.record_path(old_id).unlink(missing_ok=True)
        old_state = self.state_path(old_id)
        if old_state.exists():
            os.replace(old_state, self.state_path(run_id))
            sidecar = Path(str(old_state) + ".sha256")
            if sidecar.exists():
                os.replace(sidecar, Path(str(self.state_path(run_id)) + ".sha256"))
        return record

    def write_record(self, record: dict[str, Any]) -> Path:
        validate_record(record, self.record_path(record.get("run_id", "?")))
        path = self.record_path(record["run_id"])
        atomic_write_json(path, record)
        return path

    def iter_records(self) -> Iterator[tuple[Path, dict[str, Any] | StoreError]]:
        """Every record file, parsed, or the error that says why it is unreadable."""
        if not self.runs.is_dir():
            return
        for path in sorted(self.runs.glob("*.json")):
            try:
                yield path, validate_record(read_json(path, "record"), path)
            except StoreError as exc:
                yield path, exc


def validate_record(record: Any, path: Path) -> dict[str, Any]:
    if not isinstance(record, dict) or any(k not in record for k in RECORD_KEYS):
        missing = [k for k in RECORD_KEYS if not isinstance(record, dict) or k not in record]
        raise StoreError(f"corrupt record {str(path)!r}: missing {missing}")
    if record["schema"] not in READABLE_SCHEMAS:
        raise StoreError(f"record {str(path)!r} has schema {record['schema']!r}; this kdbench "
                         f"reads schemas {', '.join(map(str, READABLE_SCHEMAS))}")
    return record
