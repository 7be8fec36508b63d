"""Built-in MI-estimator plugin: the estimators, registered as third parties would."""

from __future__ import annotations

from ..hookspecs import hookimpl
from .binning import Binning
from .cka import CKA, HSICAlias
from .infonce import InfoNCE
from .kde import KDE
from .nhsic import NHSIC
from .recon import Recon

PAPERS = {
    "recon": "Wang et al., Efficient KD from Model Checkpoints (NeurIPS 2022), after InfoPro "
             "(Wang et al., ICLR 2021)",
    "binning": "Shwartz-Ziv & Tishby, Opening the Black Box of DNNs via Information (2017)",
    "kde": "Kolchinsky & Tracey, Entropy 2017; as used by Saxe et al. (ICLR 2018)",
    "infonce": "van den Oord et al. 2018; Poole et al., On Variational Bounds of MI (ICML 2019)",
    "cka": "Kornblith et al., Similarity of Neural Network Representations Revisited (ICML 2019); "
           "unbiased HSIC: Song et al. (JMLR 2012)",
    "nhsic": "Ma, Lewis & Kleijn, The HSIC Bottleneck (AAAI 2020); NOCCO: Fukumizu et al. "
             "(NIPS 2007)",
}
PAPERS["hsic"] = "deprecated alias of cka: " + PAPERS["cka"]


@hookimpl
def register_mi_estimators(register):
    for cls in (Recon, Binning, KDE, InfoNCE, CKA, NHSIC, HSICAlias):
        register(cls.name, cls, unit=cls.unit, bound=cls.kind, defaults=dict(cls.defaults),
                 paper=PAPERS[cls.name])
