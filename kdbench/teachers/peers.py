"""Online distillation: the ``peers`` teacher source, a cohort trained together with the student.

Deep mutual learning (Zhang et al., CVPR 2018) has no pre-trained teacher: K networks learn
together, each from the labels and from the others' predictions. Here the student is cohort
member 0 and the source adds ``peers − 1`` networks of ``--teacher-arch`` (``--peers`` is the
cohort size K, default 2), trained with the student's recipe on the same batches, each with its
own instance of the run's loss. Each member k minimises
``w_ce·CE + Σ_i w_i·mean_{l≠k} term_i(k, l)`` with the others' outputs as constants; with
``--loss dml`` that is the paper's ``CE + 1/(K−1) Σ_l KL(p_l ‖ p_k)``. Any other loss composes
(``--loss kd`` distils from the peer at temperature T); feature losses need K = 2, init-stage
losses a fixed teacher.

Updates follow the paper's Algorithm 1 by default (``update=alternate``): on each mini-batch the
members are updated in turn, and member k is distilled from the predictions of the members
already updated on that batch (recomputed after their step). ``--set
teacher.options.update=simultaneous`` updates everyone from the start-of-batch predictions, as
many re-implementations do. Every member's accuracy goes into the record
(``metrics.cohort``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn

from ..errors import ConfigError, UnknownNameError
from . import options as opt
from .base import Teacher, TeacherContext

UPDATES = ("alternate", "simultaneous")
DEFAULTS = {"peers": 2, "update": "alternate"}


def check(config: Any) -> None:
    """The cohort size and the update order, checked when the config is resolved."""
    o = config.teacher.options
    k = o["peers"]
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ConfigError(f"--peers must be an integer >= 2 (the cohort size, student "
                          f"included), got {k!r}")
    if o["update"] not in UPDATES:
        raise UnknownNameError("cohort update", str(o["update"]), UPDATES)
    views = loss_views(config.loss.name)
    if views:
        # a cohort member is distilled from its peers' outputs on the one batch: no peer
        # computes the extra augmented views such a loss compares (MLKD's strong view)
        raise ConfigError(f"loss {config.loss.name!r} needs a second augmented view of each "
                          f"batch ({', '.join(views)}), which an online cohort (--teacher "
                          f"peers) does not compute; use a fixed teacher, or mlkd_noaug")


def loss_views(name: str) -> tuple[str, ...]:
    """The extra augmented views a loss (or any part of a composite) asks the engine for."""
    from ..losses import entry
    from ..plugins import get

    spec = entry(name)
    parts = spec.parts or (spec.name,)
    return tuple(dict.fromkeys(v for part in parts
                               for v in getattr(get("loss", part).factory, "views", ()) or ()))


#: the source's settings: teacher.options ``peers`` and ``update`` (see :mod:`.options`)
resolve = opt.settings(DEFAULTS, check=check)


@dataclass
class Cohort(Teacher):
    """The peers of an online cohort. Unlike a fixed teacher they train: nothing is frozen."""

    online: ClassVar[bool] = True
    update: str = "alternate"

    def __post_init__(self) -> None:
        pass  # the peers are trainees, in training mode with gradients

    @property
    def peers(self) -> list[nn.Module]:
        return list(self.module)

    def trainees(self, cfg: Any, student_ctx: Any, student_distiller: Any) -> list[Any]:
        """One trainee per peer, each with its own distiller of the run's loss (built from a
        context whose teacher is the student), after checking the loss suits a cohort."""
        from ..engine import Trainee
        from ..losses import build

        loss = cfg.loss.name
        if student_distiller.stages():
            raise ConfigError(f"loss {loss!r} has an init stage, which needs a fixed teacher; "
                              f"it cannot run with --teacher peers")
        if len(self.peers) > 1 and student_distiller.taps - {"logits"}:
            raise ConfigError(f"loss {loss!r} taps {', '.join(sorted(student_distiller.taps))}; "
                              f"with more than 2 peers only logit losses average over the "
                              f"cohort (use --peers 2, or e.g. --loss dml)")
        out = []
        for i, peer in enumerate(self.peers, 1):
            ctx = type(student_ctx)(**{**vars(student_ctx), "student": peer,
                                       "teacher": student_ctx.student})
            distiller = build(loss, ctx).to(next(peer.parameters()).device)
            out.append(Trainee(f"peer{i}", peer, distiller, cfg.recipe, online=True))
        return out

    def record(self, record: dict[str, Any], trainees: list[Any], suite: Any) -> None:
        """Every member's accuracy (``metrics.cohort``); the peers' mean as the teacher's."""
        from ..evaluators import summarize

        cohort = []
        for t in trainees:
            s = summarize(t.history, suite.metrics, suite.best_metric, suite.lower_is_better)
            cohort.append({"name": t.name, "arch": self.provenance["arch"] if t.name != "student"
                           else record["config"]["student"],
                           **{k: v for k, v in s.items() if k != "curve"},
                           "curve": [{k: h[k] for k in ("epoch", *suite.metrics) if k in h}
                                     for h in t.history]})
        record["metrics"]["cohort"] = cohort
        # the peers are the teacher: their accuracy is its accuracy, as for a fixed teacher
        peers = [c["top1_last"] for c in cohort[1:]]
        record["teacher"].update(teacher_top1=sum(peers) / len(peers), peer_top1=peers)


def peers(ctx: TeacherContext) -> Cohort:
    """Online peers for deep mutual learning: --peers K members in all (the student included)."""
    from ..device import seed_everything
    from ..models import create_model

    t = ctx.config.teacher
    assert t is not None
    options = {**DEFAULTS, **t.options}
    k = options["peers"]
    members = []
    for i in range(1, k):
        # a seed per member, never the student's (seed_everything(cfg.seed) comes later)
        seed_everything(ctx.config.seed * 1000 + i)
        members.append(create_model(t.arch, ctx.dataset.num_classes, ctx.dataset.in_chans,
                                     **t.model_options).to(ctx.device))
    provenance = {"source": "peers", "arch": t.arch, "peers": k, "update": options["update"],
                  "epochs": []}
    return Cohort(nn.ModuleList(members), provenance, update=options["update"])
