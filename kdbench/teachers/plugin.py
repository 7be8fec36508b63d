"""Built-in teacher-source plugin."""

from __future__ import annotations

from ..hookspecs import hookimpl
from . import options as opt
from . import peers, sources

_ENSEMBLE = {"ensemble_mode": "logit"}


def _check_intermediate(config):
    from ..mi.selection import check_select  # --select ESTIMATOR: Algorithm 1 (kdbench.mi)

    opt.check_intermediate(config)
    check_select(config)


@hookimpl
def register_teacher_sources(register):
    register("full", sources.full, resolve=opt.settings(weights=True))
    register("intermediate", sources.intermediate,
             resolve=opt.settings({"epoch_frac": None, "select": None, "select_options": None},
                                  epoch=True, check=_check_intermediate))
    register("snapshot", sources.snapshot, features=False,
             resolve=opt.settings({"members": None, "members_count": None, **_ENSEMBLE},
                                  check=opt.check_snapshot))
    register("independent", sources.independent, features=False, seeds=sources.independent_seeds,
             resolve=opt.settings({"members_count": opt.ENSEMBLE_SIZE, **_ENSEMBLE},
                                  check=opt.check_independent))
    # the peers train with the student: no trajectory to train first (kdbench sweep asks)
    register("peers", peers.peers, resolve=peers.resolve, seeds=lambda config: [])
