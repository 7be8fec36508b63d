"""The line a run opens with: its id, where its record goes and the settings a reader checks
first, so a log says what it is before the first epoch ends."""

from __future__ import annotations

from typing import Any


def opening_line(record: dict[str, Any], record_path: Any) -> str:
    """``kdbench run <id>: <student> ← <teacher> (<source>, epoch E) <loss> on <data> seed S:
    N epochs, batch B, lr L (<schedule>), <optimizer>, <precision> on <device>; record →
    <path> (student weights kept beside it)``."""
    cfg, t = record["config"], record.get("teacher")
    teacher = ""
    if t:
        where = (f", epoch {','.join(map(str, t['epochs']))}" if t.get("epochs")
                 else f", cohort of {t['peers']}" if "peers" in t else "")
        teacher = f" ← {t.get('arch', '?')} ({t.get('source', '?')}{where})"
    r = cfg["recipe"]
    sched = r["schedule"] + (f" at {','.join(map(str, r['milestones']))}"
                             if r["schedule"] == "multistep" and r["milestones"] else "")
    transforms = "".join(f" + {x['name'] if isinstance(x, dict) else x}"
                         for x in cfg["data"].get("transforms") or [])
    env = record.get("env") or {}
    kept = " (student weights kept beside it)" if cfg.get("keep", True) else ""
    return (f"kdbench run {record['run_id']}: {cfg['student']}{teacher} {cfg['loss']['name']} "
            f"on {cfg['data']['name']}{transforms} seed {cfg['seed']}: {r['epochs']} epochs, "
            f"batch {r['batch_size']}, lr {r['lr']:g} ({sched}), {r['optimizer']}, "
            f"{env.get('precision', cfg['precision'])} on {env.get('device', cfg['device'])}; "
            f"record → {record_path}{kept}")
