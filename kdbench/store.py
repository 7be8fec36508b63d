"""Result records and teacher artefacts on disk. Every write goes to a temporary file in the same
folder and is renamed over the target, so a reader never sees half a file."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import DamagedStoreError, StoreError

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


def refuse_link(path: Path, what: str = "file") -> None:
    """A store path that is a symbolic link is refused: kdbench never writes through (nor
    replaces) a link someone put in a shared store."""
    if os.path.islink(path):
        raise DamagedStoreError(f"{what} {str(path)!r} is a symbolic link; kdbench does not "
                                f"write through links in its store (remove the link, or use "
                                f"the real path)")


def _open_nofollow(path: Path, flags: int, what: str, mode: int = 0o666) -> int:
    """``os.open`` that does not follow a symbolic link at ``path`` and does not block on a
    pipe; the file must be a regular one (a device, pipe or folder is refused)."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    except OSError as exc:
        if os.path.islink(path):
            raise DamagedStoreError(f"{what} {str(path)!r} is a symbolic link; kdbench does not "
                                    f"follow links in its store (remove the link)") from None
        if isinstance(exc, (FileNotFoundError, PermissionError)):
            raise
        raise StoreError(f"cannot open {what} {str(path)!r}: {exc.strerror or exc}") from None
    return _regular(fd, path, what)


def _regular(fd: int, path: Path, what: str) -> int:
    """``fd`` made blocking again if it is a regular file; else closed, and a one-line error
    (a folder, pipe or device where the store keeps a file)."""
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise DamagedStoreError(f"{what} {str(path)!r} is not a regular file (a folder, pipe or "
                                f"device); remove it")
    os.set_blocking(fd, True)
    return fd


def open_append(path: Path, what: str = "log") -> Any:
    """A text file opened for appending, never through a symbolic link (a log)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _open_nofollow(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, what, _file_mode())
    return os.fdopen(fd, "a", newline="")


def open_lock(path: Path) -> int:
    """The descriptor of a lock file, opened without following a symbolic link and never
    truncated; a lock that is a link, not a regular file, or a file with other names (a hard
    link to someone's file) is refused."""
    fd = _open_nofollow(Path(path), os.O_RDWR | os.O_CREAT, "lock file", _file_mode())
    if os.fstat(fd).st_nlink != 1:
        os.close(fd)
        raise DamagedStoreError(f"lock file {str(path)!r} has other names (a hard link); kdbench "
                                f"does not write to it (remove it)")
    return fd


#: the holder's line in a lock file, written over the first bytes (the file is never truncated)
LOCK_NOTE = 32


def write_holder(fd: int) -> None:
    """Say who holds the lock, over the file's first bytes: this also sets the lock file's
    modification time to the moment it was taken (:func:`held_since`)."""
    os.pwrite(fd, f"pid {os.getpid()}".ljust(LOCK_NOTE).encode(), 0)


def held_since(lock: Path) -> float | None:
    """When the live process holding ``lock`` took it (the lock file's modification time,
    which :func:`write_holder` sets), or None when no process holds it. Probed with a shared
    non-blocking lock, released at once; a link or anything but a regular file is skipped."""
    import fcntl

    try:
        fd = os.open(lock, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return st.st_mtime
        except OSError:
            return None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def read_holder(fd: int) -> str:
    text = os.pread(fd, LOCK_NOTE, 0).decode("ascii", "replace").strip()
    return text if text.startswith("pid ") and text[4:].isdigit() else ""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it over ``path``: a reader
    sees the old file or the new one, never half of one. The file gets the umask's mode. A
    ``path`` that is a symbolic link is refused (:func:`refuse_link`). A read-only process (a
    distributed run's ranks other than 0) writes nothing."""
    if _read_only:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    refuse_link(path)
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
    if is_regular(Path(path)) and is_regular(sidecar):
        with contextlib.suppress(OSError, ValueError, StoreError, AttributeError):
            old = read_json(sidecar, "checksum", follow=False).get("sha256", [])
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
    if not os.path.lexists(path):
        return None
    sidecar = Path(str(path) + ".sha256")
    why = None
    try:
        expected = read_json(sidecar, "checksum", follow=False)["sha256"] \
            if os.path.lexists(sidecar) else None
    except (StoreError, KeyError, TypeError):
        expected = None
    if not is_regular(path):
        why = "it is not a regular file"
    elif not isinstance(expected, list):
        why = "it has no valid checksum file"
    elif hashlib.sha256(data := _read_bytes(path)).hexdigest() not in expected:
        why = "its SHA-256 does not match its checksum file"
    else:
        import io

        try:  # the bytes that were checked, not the file again
            with warnings.catch_warnings():  # torch's pickle-protocol notes: not ours to show
                warnings.simplefilter("ignore", UserWarning)
                return torch.load(io.BytesIO(data), map_location=device, weights_only=True)
        except Exception as exc:  # noqa: BLE001 - unreadable or not plain tensors and values
            why = f"it cannot be read as plain tensors ({type(exc).__name__})"
    reject_resume(path, why)
    return None


def reject_resume(path: Path, why: str) -> None:
    """Set a resume file aside (``*.corrupt-<time>``, with a warning naming it and ``why``)
    and drop its checksum: training starts afresh."""
    path = Path(path)
    set_aside(path, f"is not a trusted resume file ({why}); training starts afresh",
              stacklevel=4)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(str(path) + ".sha256")


def sha256_file(path: Path, *, follow: bool = True) -> str:
    """The SHA-256 of a regular file (a pipe or folder is a StoreError, never a hang); without
    ``follow``, a symbolic link is refused too (a file of the store)."""
    h = hashlib.sha256()
    with open(_read_fd(Path(path), "file", follow), "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_fd(path: Path, what: str, follow: bool) -> int:
    if not follow:
        return _open_nofollow(path, os.O_RDONLY, what)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    return _regular(fd, path, what)


def _read_bytes(path: Path, what: str = "file") -> bytes:
    with open(_read_fd(Path(path), what, follow=False), "rb") as f:
        return f.read()


def is_regular(path: Path) -> bool:
    """``path`` is a regular file itself (not a link to one)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def read_json(path: Path, what: str = "file", *, follow: bool = True) -> Any:
    """A JSON file's content. Only a regular file is read (a pipe named like one is an error,
    not a hang); without ``follow`` (the store's own files) a symbolic link is refused too."""
    try:
        with open(_read_fd(Path(path), what, follow), "rb") as f:
            return json.loads(f.read().decode())
    except FileNotFoundError:
        raise
    except PermissionError:
        raise StoreError(f"cannot read {what} {str(path)!r}: permission denied") from None
    except IsADirectoryError:
        raise DamagedStoreError(f"{what} {str(path)!r} is a folder, not a file; remove it"
                                ) from None
    except OSError as exc:
        raise StoreError(f"cannot read {what} {str(path)!r}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise DamagedStoreError(f"corrupt {what} {str(path)!r}: {exc}") from None


def set_aside(path: Path, why: str, stacklevel: int = 3) -> Path:
    """Rename a damaged file to ``<name>.corrupt-<time>`` (kept for inspection, out of the way)
    and warn, naming it; returns the new path."""
    import time

    path = Path(path)
    aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
    os.replace(path, aside)
    warnings.warn(f"kdbench: {str(path)!r} {why}; set aside as {aside.name}", RuntimeWarning,
                  stacklevel=stacklevel)
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
        except OSError as exc:
            raise StoreError(f"results dir {str(self.root)!r} is not writable: "
                             f"{exc.strerror or exc}") from None
        for folder in (self.runs, self.teachers):  # a teacher is written as a record is
            try:
                fd, tmp = tempfile.mkstemp(dir=folder, prefix=".probe.")
                os.close(fd)
                os.unlink(tmp)
            except OSError as exc:
                raise StoreError(f"results dir {str(self.root)!r} is not writable: "
                                 f"{str(folder)!r}: {exc.strerror or exc}") from None
        self.clean_leftovers()

    def live_since(self) -> float | None:
        """The earliest time a live process took one of this store's locks (a run's
        ``.locks/<run>.lock`` or a trajectory's ``.lock``); None when no process holds any."""
        locks = list(self.root.joinpath(".locks").glob("*.lock"))
        if self.teachers.is_dir():
            locks += [f / ".lock" for f in self.teachers.iterdir() if not f.is_symlink()]
        times = [t for t in map(held_since, locks) if t is not None]
        return min(times) if times else None

    def clean_leftovers(self) -> list[Path]:
        """Remove what a crash leaves behind (the store is about to be written): temporary
        files of an atomic write older than any live lock holder (every file of the store is
        written by a process holding the run's or the trajectory's lock, so a temporary file
        from before the oldest live holder took its lock has no writer left; with no holder,
        none has), and the resume state of a run whose record is ``done`` while no process
        holds the run (a forced rerun in progress keeps its state). Returns what was removed."""
        removed: list[Path] = []
        folders = [self.runs] + ([f for f in self.teachers.iterdir() if f.is_dir()
                                  and not f.is_symlink()] if self.teachers.is_dir() else [])
        since = self.live_since()
        for folder in folders:
            for tmp in folder.glob(".*.tmp"):
                with contextlib.suppress(OSError):
                    if is_regular(tmp) and (since is None or tmp.lstat().st_mtime < since):
                        tmp.unlink()
                        removed.append(tmp)
        for state in self.runs.glob("*.state.pt"):
            run_id = state.name[:-len(".state.pt")]
            try:
                record = self.load_record(run_id)
            except StoreError:
                continue
            if record is None or record["status"] != "done":
                continue
            with self.run_lock(run_id, wait=False) as holder:
                if not holder:
                    remove_resume(state)
                    removed.append(state)
        return removed

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
        if not os.path.lexists(path):
            return None
        try:
            return validate_record(read_json(path, "record", follow=False), path)
        except NewerRecordError:
            raise  # not damaged: left alone
        except StoreError as exc:
            if not set_aside_corrupt or not os.path.lexists(path):
                raise
            set_aside(path, f"is unreadable ({exc}); the run is made again")
            return None

    @contextlib.contextmanager
    def run_lock(self, run_id: str, *, say: Any = None, wait: bool = True) -> Iterator[str]:
        """Hold ``.locks/<run_id>.lock`` (one process per run). When another process holds it,
        ``say`` (a one-line message callable) is told, then this process waits its turn; with
        ``wait=False`` it does not wait and yields who holds the lock instead ("" once it is
        held here)."""
        import fcntl

        if _read_only:  # a distributed run's other ranks: rank 0 holds the lock for them
            yield
            return
        locks = self.root / ".locks"
        locks.mkdir(parents=True, exist_ok=True)
        refuse_link(locks, "lock folder")
        fd = open_lock(locks / f"{run_id}.lock")
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = read_holder(fd) or "another process"
                if not wait:
                    yield holder
                    return
                if say is not None:
                    say(f"kdbench: run {run_id} is being trained by {holder}; waiting for it "
                        f"to finish")
                fcntl.flock(fd, fcntl.LOCK_EX)
            write_holder(fd)
            try:
                yield ""
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

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
                yield path, validate_record(read_json(path, "record", follow=False), path)
            except StoreError as exc:
                yield path, exc


class NewerRecordError(StoreError):
    """A record of a schema newer than this kdbench reads: left alone, never set aside."""


#: the statuses a record can have
STATUSES = ("running", "done", "failed", "interrupted")


def validate_record(record: Any, path: Path) -> dict[str, Any]:
    """``record`` if it has the shape of a record filed at ``path``: the keys every record has,
    a readable schema, the run id it is filed under, a config with the fields a table and a run
    read, metrics as a mapping. A StoreError says what is wrong; a record of a newer schema is
    a :class:`NewerRecordError`."""
    path = Path(path)
    if not isinstance(record, dict) or any(k not in record for k in RECORD_KEYS):
        missing = [k for k in RECORD_KEYS if not isinstance(record, dict) or k not in record]
        raise DamagedStoreError(f"corrupt record {str(path)!r}: missing {missing}")
    schema = record["schema"]
    if isinstance(schema, int) and not isinstance(schema, bool) and schema > SCHEMA_VERSION:
        raise NewerRecordError(f"record {str(path)!r} was made by a newer kdbench (schema "
                               f"{schema}; this one reads schemas "
                               f"{', '.join(map(str, READABLE_SCHEMAS))}); it is left as it is: "
                               f"upgrade kdbench to use it, or give another --results-dir")
    if schema not in READABLE_SCHEMAS:
        raise DamagedStoreError(f"record {str(path)!r} has schema {schema!r}; this kdbench "
                                f"reads schemas {', '.join(map(str, READABLE_SCHEMAS))}")
    if path.suffix == ".json" and record["run_id"] != path.stem:
        raise DamagedStoreError(f"corrupt record {str(path)!r}: it is filed under {path.stem} "
                                f"but says it is run {record['run_id']!r}")
    problem = _shape_problem(record)
    if problem:
        raise DamagedStoreError(f"corrupt record {str(path)!r}: {problem}")
    return record


def _shape_problem(record: dict[str, Any]) -> str | None:
    """What a table, a run or the report would trip over in a record, or None."""
    if record["status"] not in STATUSES:
        return f"status {record['status']!r} is not one of {', '.join(STATUSES)}"
    cfg = record["config"]
    if not isinstance(cfg, dict):
        return "its config is not a mapping"
    for key, kind in (("student", str), ("seed", int), ("loss", dict), ("data", dict)):
        if not isinstance(cfg.get(key), kind):
            return f"its config has no {key} ({kind.__name__})"
    for section in ("loss", "data"):
        if not isinstance(cfg[section].get("name"), str):
            return f"its config's {section} has no name"
    for key in ("metrics", "cost", "env", "extra", "data", "teacher", "code"):
        if record.get(key) is not None and not isinstance(record[key], dict):
            return f"its {key} is a {type(record[key]).__name__}, not a mapping"
    return None
