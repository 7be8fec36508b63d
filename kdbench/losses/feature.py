"""Feature-map losses: FitNet, AT, SP, NST, VID, and the init-stage methods AB, FT and FSP.

Which maps each taps follows RepDistiller's CIFAR-100 benchmark: FitNet the 2nd stage, AT/NST/
VID every stage, SP and FT the last stage, AB every stage's pre-activation, FSP the stem and every
stage. Student and teacher stages are paired shallow to deep.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..models.base import Features
from . import functional as KF
from .base import DistillContext, Distiller, LossStage, option, paired, probe, require_teacher
from .connectors import ConvReg, Paraphraser, Translator, VIDRegressor


def _probe_pair(ctx: DistillContext, loss: str) -> tuple[Features, Features]:
    teacher = require_teacher(ctx, loss)
    return probe(ctx.student, ctx.input_shape), probe(teacher, ctx.input_shape)


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.shape[1:])


class _InitStage:
    """Options shared by the methods with an init stage (``init_epochs``, ``init_lr``)."""

    def _setup_init(self, loss: str, enabled: bool = True) -> None:
        o = self.options  # type: ignore[attr-defined]
        epochs = option(o, "init_epochs", loss, nonneg=True, integer=True)
        self.init_epochs = epochs if enabled else 0
        lr = o.get("init_lr")
        try:
            ok = lr is None or float(lr) > 0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ConfigError(f"loss {loss!r} option init_lr must be a number > 0, got {lr!r}")
        self.init_lr = None if lr is None else float(lr)

    def init_stage(self, name: str, loss, parameters, trains_student: bool = True
                   ) -> list[LossStage]:
        if self.init_epochs <= 0:
            return []
        return [LossStage(name, self.init_epochs, loss, list(parameters), trains_student,
                          self.init_lr)]


# ============================== FitNet ==========================================================


class FitNet(_InitStage, Distiller):
    """FitNet hints: MSE between a regressed student stage and the teacher's (RepDistiller: the
    2nd stage, trained jointly with CE). With ``two_stage`` the paper's recipe: an init stage
    trains the student up to the hint layer and the regressor on the hint alone, then the main
    stage has no hint term (combine with ``+kd`` for the paper's KD second stage)."""

    taps = frozenset({"logits", "stages"})

    def __init__(self, ctx: DistillContext):
        super().__init__(ctx)
        fs, ft = _probe_pair(ctx, "fitnet")
        self.stage = option(self.options, "hint_stage", "fitnet", nonneg=True, integer=True)
        valid = min(len(fs.stages), len(ft.stages))
        if self.stage > valid:
            raise ConfigError(f"loss 'fitnet' option hint_stage={self.stage} is out of range "
                              f"(valid: 0 = stem, 1..{valid})")
        self.regressor = ConvReg(_shape(self.pick(fs)), _shape(self.pick(ft)))
        self.two_stage = bool(self.options["two_stage"])
        self._setup_init("fitnet", enabled=self.two_stage)

    def pick(self, f: Features) -> torch.Tensor:
        return f.stem if self.stage == 0 else f.stages[self.stage - 1]

    def hint(self, student: Features, teacher: Features) -> dict[str, torch.Tensor]:
        return {"hint": KF.hint(self.regressor(self.pick(student)), self.pick(teacher))}

    def forward(self, student, teacher, target, index=None, epoch=0):
        return {} if self.two_stage else self.hint(student, teacher)

    def stages(self):
        def hint(student, teacher, target, index=None):
            return self.hint(student, teacher)
        return self.init_stage("fitnet:hint", hint, self.regressor.parameters())

    def main_parameters(self):
        return [] if self.two_stage else super().main_parameters()


# ============================== AT, SP, NST =====================================================


class _EveryStage(Distiller):
    """A term computed on each (student, teacher) stage pair, summed over the stages."""

    taps = frozenset({"logits", "stages"})
    name = ""

    def __init__(self, ctx: DistillContext):
        super().__init__(ctx)
        fs, ft = _probe_pair(ctx, self.name)
        paired(fs.stages, ft.stages, self.name)

    def pair(self, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError  # pragma: no cover

    def forward(self, student, teacher, target, index=None, epoch=0):
        return {self.name: sum(self.pair(s, t) for s, t in zip(student.stages, teacher.stages))}


class AT(_EveryStage):
    """Attention transfer on every stage, summed over stages."""

    name = "at"

    def __init__(self, ctx: DistillContext):
        super().__init__(ctx)
        self.p = option(self.options, "p", "at", positive=True)

    def pair(self, s, t):
        return KF.at(s, t, self.p)


class SP(Distiller):
    """Similarity-preserving KD on the last stage."""

    taps = frozenset({"logits", "stages"})

    def __init__(self, ctx: DistillContext):
        super().__init__(ctx)
        require_teacher(ctx, "sp")

    def forward(self, student, teacher, target, index=None, epoch=0):
        return {"sp": KF.sp(student.stages[-1], teacher.stages[-1])}


class NST(_EveryStage):
    """Neuron selectivity transfer (polynomial-kernel MMD) on every stage, summed."""

    name = "nst"

    def pair(self, s, t):
        return KF.nst(s, t)


# ============================== VID =============================================================


class VID(Distiller):
    """Variational information distillation: a 1×1-conv Gaussian regressor per stage."""

    taps = frozenset({"logits", "stages"})

    def __init__(self, ctx: DistillContext):
        super().__init__(ctx)
        fs, ft = _probe_pair(ctx, "vid")
        paired(fs.stages, ft.stages, "vid")
        init_var = option(self.options, "init_var", "vid", positive=True)
        eps = option(self.options, "eps", "vid", positive=True)
        self.regressors = nn.ModuleList(
            VIDRegressor(s.shape[1], t.shape[1], init_var, eps) for s, t in zip(fs.stages,
                                                                                ft.stages))

    def forward(self, student, teacher, target, index=None, epoch=0):
        total = 0.0
        for reg, s, t in zip(self.regressors, student.stages, teacher.stages):
            s, t = KF.pool_to_common(s, t)
            total = total + KF.vid(reg(s), t, reg.variance())
        return {"vid": total}


# ============================== AB ==============================================================


class AB(_InitStage, Distiller):
    """Activation-boundary transfer on pre-activations, in an init stage before CE training.

    Connectors (identity where shapes agree, else a regressor without ReLU) map the student's
    pre-activations to the teacher's. As in RepDistiller the main stage has no AB term unless
    ``main_term`` is set (then weighted by ``w_ab``, connectors trained too).
    """

    taps = frozenset({"logits", "preact"})

    def __init__(self, ctx: DistillContext):
        super().__init__(ctx)
        fs, ft = _probe_pair(ctx, "ab")
        paired(fs.preact, ft.preact, "ab", "pre-activation stages")
        self.connectors = nn.ModuleList(
            nn.Identity() if _shape(s) == _shape(t) else ConvReg(_shape(s), _shape(t), relu=False)
            for s, t in zip(fs.preact, ft.preact))
        self.margin = option(self.options, "margin", "ab", nonneg=True)
        self.main_term = bool(self.options["main_term"])
        self._setup_init("ab")

    def term(self, student: Features, teacher: Features) -> dict[str, torch.Tensor]:
        s = [c(x) for c, x in zip(self.connectors, student.preact)]
        return {"ab": KF.ab(s, teacher.preact, self.margin)}

    def forward(self, student, teacher, target, index=None, epoch=0):
        return self.term(student, teacher) if self.main_term else {}

    def stages(self):
        def init(student, teacher, target, index=None):
            return self.term(student, teacher)
        return self.init_stage("ab:init", init, self.connectors.parameters())

    def main_parameters(self):
        return super().main_parameters() if self.main_term else []


# ============================== FT ==============================================================


class FT(_InitStage, Distiller):
    """Factor transfer on the last stage: a paraphraser (teacher side) pre-trained in the init
    stage to reconstruct the teacher's map, then frozen (it has no BatchNorm or dropout, so its
    train/eval mode does not matter); the student's translator is trained to match its factor
    (L1 of normalised factors)."""

    taps = frozenset({"logits", "stages"})

    def __init__(self, ctx: DistillContext):
        super().__init__(ctx)
        fs, ft = _probe_pair(ctx, "ft")
        k = option(self.options, "k", "ft", positive=True)
        t_ch, s_ch = ft.stages[-1].shape[1], fs.stages[-1].shape[1]
        self.paraphraser = Paraphraser(t_ch, k)
        self.translator = Translator(s_ch, t_ch, k)
        self.p1 = option(self.options, "p1", "ft", positive=True)
        self.p2 = option(self.options, "p2", "ft", positive=True)
        self._setup_init("ft")

    def forward(self, student, teacher, target, index=None, epoch=0):
        with torch.no_grad():
            factor_t = self.paraphraser.encoder(teacher.stages[-1])
        factor_s = self.translator(student.stages[-1])
        return {"ft": KF.ft(factor_s, factor_t, self.p1, self.p2)}

    def stages(self):
        def paraphrase(student, teacher, target, index=None):
            t = teacher.stages[-1]
            _, rec = self.paraphraser(t)
            return {"paraphrase": F.mse_loss(rec, t.float())}
        return self.init_stage("ft:paraphraser", paraphrase, self.paraphraser.parameters(),
                               trains_student=False)

    def main_parameters(self):
        return list(self.translator.parameters())


# ============================== FSP =============================================================


class FSP(_InitStage, Distiller):
    """FSP matrices between the stem and consecutive stages, matched in an init stage; the main
    stage is CE training (RepDistiller) unless ``main_term`` adds ``w_fsp``·FSP."""

    taps = frozenset({"logits", "stages"})

    def __init__(self, ctx: DistillContext):
        super().__init__(ctx)
        fs, ft = _probe_pair(ctx, "fsp")
        s_maps, t_maps = self.maps(fs), self.maps(ft)
        paired(s_maps, t_maps, "fsp", "stem and stages")
        s_ch = [m.shape[1] for m in s_maps]
        t_ch = [m.shape[1] for m in t_maps]
        if s_ch != t_ch:
            raise ConfigError(f"loss 'fsp' needs equal channels in student and teacher at the "
                              f"stem and every stage, but the student has {s_ch} and the teacher "
                              f"{t_ch} (pick a pair from one family, e.g. resnet56 → resnet20)")
        self.main_term = bool(self.options["main_term"])
        self._setup_init("fsp")

    @staticmethod
    def maps(f: Features) -> list[torch.Tensor]:
        return ([f.stem] if f.stem is not None else []) + list(f.stages)

    def term(self, student: Features, teacher: Features) -> dict[str, torch.Tensor]:
        return {"fsp": KF.fsp(self.maps(student), self.maps(teacher))}

    def forward(self, student, teacher, target, index=None, epoch=0):
        return self.term(student, teacher) if self.main_term else {}

    def stages(self):
        def init(student, teacher, target, index=None):
            return self.term(student, teacher)
        # FSP has no parameters of its own: the init stage trains the student's layers
        return self.init_stage("fsp:init", init, [])
