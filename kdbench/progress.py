"""Progress of long work that reads well in a terminal and in a log file.

Each step is one plain line that stays — ``desc: 12/100 epochs, top1=71.3 loss=0.512
lr=0.05, 12.4 s/epoch, about 18 min left`` — so a run leaves its per-epoch history on screen and
in a log. In a terminal a tqdm bar runs below those lines (and vanishes at the end); when the
output is not a terminal (``nohup``, a sweep's log, a Slurm job) there is no bar, so no carriage
returns pile up in the file.
"""

from __future__ import annotations

import sys
import time
from typing import Any


class Progress:
    """``update(postfix)`` after each unit of work, ``close()`` at the end."""

    def __init__(self, total: int, desc: str, *, initial: int = 0, unit: str = "epoch",
                 enabled: bool = True, stream: Any = None):
        self.total, self.desc, self.unit, self.done = total, desc, unit, initial
        self.stream = stream or sys.stderr
        self.enabled = enabled and total > initial
        self.bar = None
        self.start, self.started_at = time.perf_counter(), initial
        if not self.enabled:
            return
        if self.stream.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit[:2],
                            leave=False, dynamic_ncols=True, file=self.stream)

    def update(self, postfix: str = "") -> None:
        self.done += 1
        if not self.enabled:
            return
        per = (time.perf_counter() - self.start) / max(1, self.done - self.started_at)
        left = per * (self.total - self.done)
        eta = f"{left / 60:.0f} min" if left >= 90 else f"{left:.0f} s"
        extra = f", {postfix}" if postfix else ""
        line = (f"{self.desc}: {self.done}/{self.total} {self.unit}s{extra}, {per:.1f} s/"
                f"{self.unit}" + (f", about {eta} left" if self.done < self.total else ""))
        if self.bar is not None:
            self.bar.write(line, file=self.stream)  # above the bar, where it stays
            if postfix:
                self.bar.set_postfix_str(postfix)
            self.bar.update(1)
            return
        print(line, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
