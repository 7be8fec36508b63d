"""The built-in loss plugin: every method's distiller imported, the whole catalogue registered.

Each method file registers itself beside its code (:func:`~kdbench.losses.base.register_loss`:
paper, year, official code, taps, default weights and options); this module imports every
built-in distiller and hands their registrations to the ``register_losses`` hook, the same hook
a third-party plugin implements, so the built-ins take the path every plugin takes.
"""

from __future__ import annotations

from typing import Any

from ..hookspecs import hookimpl
from .ab import AB
from .at import AT
from .base import CATALOGUE
from .bss import BSS
from .cc import CC
from .ce import CE
from .crd import CRD
from .dist import DIST
from .dkd import DKD
from .dml import DML
from .fitnet import FitNet
from .fsp import FSP
from .ft import FT
from .kd import KD
from .kdsvd import KDSVD
from .mlkd import MLKD, MLKDNoAug
from .nkd import NKD
from .nst import NST
from .ofd import OFD
from .pkt import PKT
from .pkt_indistill import PKTInDistill
from .reviewkd import ReviewKD
from .rkd import RKD
from .rld import RLD
from .sp import SP
from .ttm import TTM, WTTM
from .vid import VID

__all__ = ["DISTILLERS", "LOSSES", "register_losses"]

#: every built-in distiller: one per registered loss, each in the module named as it is
#: registered (``mlkd.py`` also holds ``mlkd_noaug``, ``ttm.py`` also ``wttm``)
DISTILLERS = (AB, AT, BSS, CC, CE, CRD, DIST, DKD, DML, FitNet, FSP, FT, KD, KDSVD, MLKD,
              MLKDNoAug, NKD, NST, OFD, PKT, PKTInDistill, ReviewKD, RKD, RLD, SP, TTM, WTTM, VID)

#: name -> (factory, registration fields) of every built-in loss
LOSSES: dict[str, tuple[Any, dict[str, Any]]] = {
    name: entry for name, entry in CATALOGUE.items() if entry[0] in DISTILLERS}


@hookimpl
def register_losses(register):
    for name, (factory, fields) in LOSSES.items():
        register(name, factory, **fields)
