"""Built-in MI-estimator plugin: the five estimators, registered as third parties would."""

from __future__ import annotations

from ..hookspecs import hookimpl
from .binning import Binning
from .hsic import HSIC
from .infonce import InfoNCE
from .kde import KDE
from .recon import Recon

PAPERS = {
    "recon": "Wang et al., Efficient KD from Model Checkpoints (NeurIPS 2022), after InfoPro "
             "(Wang et al., ICLR 2021)",
    "binning": "Shwartz-Ziv & Tishby, Opening the Black Box of DNNs via Information (2017)",
    "kde": "Kolchinsky & Tracey, Entropy 2017; as used by Saxe et al. (ICLR 2018)",
    "infonce": "van den Oord et al. 2018; Poole et al., On Variational Bounds of MI (ICML 2019)",
    "hsic": "Gretton et al. (ALT 2005); normalised as in Ma et al., HSIC Bottleneck (AAAI 2020)",
}


@hookimpl
def register_mi_estimators(register):
    for cls in (Recon, Binning, KDE, InfoNCE, HSIC):
        register(cls.name, cls, unit=cls.unit, bound=cls.kind, defaults=dict(cls.defaults),
                 paper=PAPERS[cls.name])
