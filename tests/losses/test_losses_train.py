"""Every loss plugin in the engine on tiny synthetic data: the loss goes down, gradients reach the
connectors, the teacher gets none and stays in eval mode; init stages, CRD's memory bank and
sampling, DKD's warm-up, composites and option resolution."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from conftest import one_thread
from kdbench import device, engine
from kdbench.config import Recipe
from kdbench.data import BatchLoader, load_dataset
from kdbench.errors import ConfigError, UnknownNameError
from kdbench.losses import DistillContext, build, entry, resolve
from kdbench.losses.ce import CE
from kdbench.losses.dkd import dkd as dkd_term
from kdbench.models import create_model
from kdbench.models.resnet import CifarResNet

CPU = torch.device("cpu")
#: small settings that keep every loss a fraction of a second on a shared 2-core CPU
SMALL = {"crd": {"nce_k": 16}, "ab": {"init_epochs": 2}, "ft": {"init_epochs": 2},
         "fsp": {"init_epochs": 2}, "fitnet": {}}


def small_options(name: str) -> dict:
    out: dict = {}
    for part in name.split("+"):
        out.update(SMALL.get(part, {}))
    return out


@pytest.fixture(scope="module", autouse=True)
def single_thread_module():
    """Tiny models: one thread for the whole module (the teacher fixture included)."""
    with one_thread():
        yield


@pytest.fixture(scope="module")
def data():
    return load_dataset("synthetic", None, train_size=64, test_size=16)


@pytest.fixture(scope="module")
def trained_teacher(data):
    """A resnet8 trained 5 epochs with CE (better than chance, so distillation has a target)."""
    device.seed_everything(0)
    model = create_model("resnet8", data.num_classes, data.in_chans)
    ctx = DistillContext(model, None, data.num_classes, data.input_shape, len(data.train))
    trainee = engine.Trainee("teacher", model, CE(ctx), Recipe(epochs=5, batch_size=32, lr=0.05))
    engine.fit([trainee], data, engine.FitOptions(batch_size=32, seed=0, device=CPU,
                                                 progress=False))
    return model


@pytest.fixture
def teacher(trained_teacher):
    """A fresh copy per test, left trainable (requires_grad): the engine must not train it."""
    return copy.deepcopy(trained_teacher)


def make(name: str, data, teacher, seed: int = 1, lr: float = 0.01, student=None, **options):
    device.seed_everything(seed)
    student = student or create_model("resnet8", data.num_classes, data.in_chans)
    w, o = resolve(name, options={**small_options(name), **options}, student="resnet8",
                   teacher="resnet8")
    ctx = DistillContext(student, teacher, data.num_classes, data.input_shape, len(data.train),
                         w, o, data.train.labels)
    distiller = build(name, ctx)
    recipe = Recipe(epochs=5, batch_size=64, lr=lr, milestones=[])
    return engine.Trainee("student", student, distiller, recipe)


def fit(trainee, data, teacher, epochs=5, **kw):
    trainee.stages[-1].epochs = epochs  # the main stage (0: the loss's own stage alone)
    return engine.fit([trainee], data, engine.FitOptions(
        batch_size=64, seed=0, device=CPU, teacher=teacher, progress=False, augment=False, **kw))


def init_rows(trainee) -> list[dict]:
    """The epochs of the loss's own (init) stage."""
    [stage] = trainee.extra
    return trainee.stage_history.get(stage.name, [])


def snapshot(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


#: RepDistiller's benchmark set with DKD and DML (the methods of the first built-in plugin)
REPDISTILLER_SET = ["kd", "dkd", "dml", "fitnet", "at", "sp", "cc", "vid", "rkd", "pkt", "ab", "ft",
                    "fsp", "nst", "crd"]
DISTILLATION = REPDISTILLER_SET + ["crd+kd", "at+kd"]


# ============================== every loss: it trains, the teacher does not ====================


@pytest.mark.parametrize("name", DISTILLATION)
def test_loss_decreases_and_teacher_is_untouched(name, data, teacher):
    before = snapshot(teacher)
    trainee = make(name, data, teacher)
    fit(trainee, data, teacher)  # one full batch per epoch, no augmentation: a clean descent
    losses = [h["train_loss"] for h in trainee.history]
    assert losses[-1] < losses[0], losses
    assert all(p.grad is None for p in teacher.parameters())
    assert not teacher.training
    after = snapshot(teacher)
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN statistics too
    if trainee.extra:
        assert len(init_rows(trainee)) == trainee.extra[0].epochs


@pytest.mark.parametrize("name", [n for n in DISTILLATION
                                  if n in ("fitnet", "cc", "vid", "ft", "crd", "crd+kd")])
def test_gradients_reach_connectors_and_they_are_optimised(name, data, teacher):
    trainee = make(name, data, teacher)
    connectors = trainee.distiller.main_parameters()
    assert connectors and trainee.distiller.connector_parameters() > 0
    main = trainee.optimizer(trainee.stages[-1])
    in_optimizer = {id(p) for g in main.param_groups for p in g["params"]}
    assert all(id(p) in in_optimizer for p in connectors)
    x, y, idx = next(iter(BatchLoader(data, "train", 32, train=True, augment=False)))
    terms = trainee.distiller(trainee.model.features(x),
                              engine.teacher_features(teacher, x, True), y, idx, 0)
    sum(terms.values()).backward()
    for p in connectors:
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())


def test_connectors_are_not_part_of_the_student(data, teacher):
    trainee = make("fitnet", data, teacher)
    student_keys = set(trainee.model.state_dict())
    assert not any(k.startswith("regressor") for k in student_keys)
    assert set(trainee.distiller.state_dict()) >= {"regressor.conv.weight"}


# ============================== init stages =====================================================


def _changed(before, after, prefix=""):
    return {k for k in before if k.startswith(prefix) and not torch.equal(before[k], after[k])}


def test_ft_init_trains_the_paraphraser_only_then_freezes_it(data, teacher):
    trainee = make("ft", data, teacher, init_epochs=1)
    s0, d0 = snapshot(trainee.model), snapshot(trainee.distiller)
    fit(trainee, data, teacher, epochs=0)  # the init stage alone
    s1, d1 = snapshot(trainee.model), snapshot(trainee.distiller)
    assert not _changed(s0, s1)  # the student is not trained (nor its BN statistics moved)
    assert _changed(d0, d1, "paraphraser") and not _changed(d0, d1, "translator")
    assert init_rows(trainee)[0]["lr"] == 0.01  # RepDistiller's init lr for ResNet students
    fit(trainee, data, teacher, epochs=2)
    d2 = snapshot(trainee.distiller)
    assert not _changed(d1, d2, "paraphraser") and _changed(d1, d2, "translator")


def test_ab_init_trains_student_features_and_connectors_not_classifier(data):
    wide = CifarResNet(8, (16, 32, 64, 128), data.num_classes, data.in_chans)  # needs regressors
    trainee = make("ab", data, wide, init_epochs=1)
    s0, d0 = snapshot(trainee.model), snapshot(trainee.distiller)
    assert d0, "unequal widths need connectors"
    fit(trainee, data, wide, epochs=0)
    s1, d1 = snapshot(trainee.model), snapshot(trainee.distiller)
    assert _changed(d0, d1) and _changed(s0, s1, "layers") and not _changed(s0, s1, "fc")
    fit(trainee, data, wide, epochs=1)  # main stage: CE only, connectors left alone
    assert not _changed(d1, snapshot(trainee.distiller), "connectors.0.conv")
    assert "train_ab" not in trainee.history[0]


def test_fitnet_two_stage_trains_up_to_the_hint_then_drops_it(data, teacher):
    trainee = make("fitnet", data, teacher, two_stage=True, init_epochs=1)
    s0 = snapshot(trainee.model)
    fit(trainee, data, teacher, epochs=0)
    s1 = snapshot(trainee.model)
    assert _changed(s0, s1, "layers.1") and _changed(s0, s1, "conv1")
    assert not _changed(s0, s1, "layers.2.0.conv") and not _changed(s0, s1, "fc")
    fit(trainee, data, teacher, epochs=1)
    assert "train_hint" not in trainee.history[0] and "train_hint" in init_rows(trainee)[0]


def test_init_stage_resumes_and_is_not_repeated(data, teacher, tmp_path):
    ref = make("fsp", data, teacher, init_epochs=2)
    fit(ref, data, teacher, epochs=2)
    state = tmp_path / "state.pt"
    first = make("fsp", data, teacher, init_epochs=2)
    fit(first, data, teacher, epochs=1, state_path=state)  # "interrupted" after main epoch 1
    again = make("fsp", data, teacher, init_epochs=2)
    fit(again, data, teacher, epochs=2, state_path=state)
    assert len(init_rows(again)) == 2 and len(again.history) == 2
    assert init_rows(again) == init_rows(ref)
    end, want = snapshot(again.model), snapshot(ref.model)
    assert all(torch.equal(end[k], want[k]) for k in want)


def test_nan_in_the_init_stage_names_term_and_init_epoch(data, teacher):
    trainee = make("fsp", data, teacher, init_epochs=1)
    trainee.extra[0].loss = lambda *a, **k: {"fsp": torch.tensor(float("nan"))}
    with pytest.raises(Exception, match=r"term 'fsp'.*stage 'fsp:init' epoch 1, step 1"):
        fit(trainee, data, teacher, epochs=0)


# ============================== bad input at build time ========================================


def test_fsp_refuses_unequal_channels(data, teacher):
    wide = CifarResNet(8, (16, 32, 64, 128), data.num_classes, data.in_chans)
    with pytest.raises(ConfigError, match="equal channels.*16, 32, 64, 128"):
        make("fsp", data, wide)


def test_fitnet_hint_stage_out_of_range(data, teacher):
    with pytest.raises(ConfigError, match=r"hint_stage=4.*1\.\.3"):
        make("fitnet", data, teacher, hint_stage=4)


def test_bad_option_values_are_config_errors(data, teacher):
    with pytest.raises(ConfigError, match="option T must be > 0"):
        make("kd", data, teacher, T=0)
    with pytest.raises(ConfigError, match="init_lr must be a number > 0"):
        make("fsp", data, teacher, init_lr="fast")
    with pytest.raises(ConfigError, match="negatives='nearby'"):
        make("crd", data, teacher, negatives="nearby")
    with pytest.raises(ConfigError, match=r"has no option 'tau' \(valid: T, ctkd"):
        resolve("kd", options={"tau": 2})
    with pytest.raises(ConfigError, match="option T must be a number"):
        resolve("kd", options={"T": "hot"})
    assert resolve("fitnet", options={"two_stage": "true"})[1]["two_stage"] is True


# ============================== CRD =============================================================


def test_crd_negatives_come_from_other_classes_without_replacement(data, teacher):
    crd = make("crd", data, teacher, nce_k=40).distiller  # 64 samples, 16 per class: pool 48
    assert not crd.replace
    index = torch.arange(10)
    idx = crd.sample(index)
    assert idx.shape == (10, 41) and torch.equal(idx[:, 0], index)
    labels = data.train.labels
    for row in idx:
        neg = row[1:]
        assert (labels[neg] != labels[row[0]]).all()
        assert len(set(neg.tolist())) == 40
    crd_r = make("crd", data, teacher, nce_k=200).distiller
    assert crd_r.replace and crd_r.sample(index).shape == (10, 201)
    rnd = make("crd", data, teacher, nce_k=63, negatives="random").distiller
    row = rnd.sample(torch.tensor([5]))[0]
    assert 5 not in row[1:].tolist() and len(set(row[1:].tolist())) == 63


def test_crd_memory_momentum_update_and_fixed_z(data, teacher):
    crd = make("crd", data, teacher).distiller
    x, y, idx = next(iter(BatchLoader(data, "train", 16, train=True, augment=False)))
    s_feats = create_model("resnet8", data.num_classes, data.in_chans).features(x)
    t_feats = engine.teacher_features(teacher, x, True)
    old = crd.memory_s[idx].clone()
    crd(s_feats, t_feats, y, idx)
    vs = crd.embed_s(s_feats.embedding)
    assert torch.allclose(crd.memory_s[idx], F.normalize(0.5 * old + 0.5 * vs.detach(), dim=1),
                          atol=1e-6)
    z = crd.z.clone()
    assert (z > 0).all()
    crd(s_feats, t_feats, y, idx)
    assert torch.equal(crd.z, z)  # fixed after the first batch
    with pytest.raises(ConfigError, match="sample indices"):
        crd(s_feats, t_feats, y, None)


def test_crd_sampling_state_is_saved_with_the_distiller(data, teacher):
    a = make("crd", data, teacher).distiller
    a.sample(torch.arange(4))
    b = make("crd", data, teacher, seed=7).distiller
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.sample(torch.arange(4)), b.sample(torch.arange(4)))


# ============================== DKD =============================================================


def test_dkd_linear_warmup_from_epoch_one(data, teacher):
    dkd = make("dkd", data, teacher).distiller
    assert dkd.warmup_factor(0) == pytest.approx(1 / 20) and dkd.warmup_factor(19) == 1.0
    logits_s, logits_t = torch.randn(4, 4), torch.randn(4, 4)
    y = torch.tensor([0, 1, 2, 3])
    from kdbench.models import Features
    got = dkd(Features(logits_s), Features(logits_t), y, None, epoch=4)["dkd"]
    assert got.item() == pytest.approx(dkd_term(logits_s, logits_t, y, 1.0, 8.0, 4.0).item() / 4,
                                       rel=1e-5)


def test_dkd_beta_table_per_pair():
    def beta(student, teacher):
        return resolve("dkd", options={"beta_table": True}, student=student,
                       teacher=teacher)[1]["beta"]
    assert beta("resnet20", "resnet56") == 2.0
    assert beta("vgg8", "vgg13") == 6.0
    assert beta("wrn_16_2", "wrn_40_2") == 6.0
    assert beta("resnet8x4", "resnet32x4") == 8.0
    assert beta("resnet8", "resnet20") == 8.0  # not in the table: the default
    assert resolve("dkd", student="resnet20", teacher="resnet56")[1]["beta"] == 8.0  # opt-in


def test_ft_init_lr_follows_repdistiller_per_student():
    def lr(student, **options):
        return resolve("ft", options=options, student=student, teacher="resnet56")[1]["init_lr"]
    assert lr("resnet20") == 0.01 and lr("wrn_16_2") == 0.01 and lr("resnet8x4") == 0.01
    assert lr("vgg8") is None and lr("resnet50") is None  # the base lr
    assert lr("resnet20", init_lr=0.02) == 0.02


# ============================== composites ======================================================


def test_crd_plus_kd_uses_repdistillers_plus_kd_weights():
    w, o = resolve("crd+kd")
    assert w == {"w_ce": 1.0, "w_crd": 0.8, "w_kd": 1.0}  # -r 1 -a 1 -b 0.8
    assert o["T"] == 4.0 and o["nce_k"] == 16384
    assert set(entry("crd+kd").metadata["taps"]) == {"logits", "embedding", "index"}
    w, _ = resolve("crd+kd", weights={"w_kd": 0.5})
    assert w["w_kd"] == 0.5


def test_composite_terms_and_errors(data, teacher):
    trainee = make("at+kd", data, teacher)
    fit(trainee, data, teacher, epochs=1)
    assert {"train_at", "train_kd"} <= set(trainee.history[0])
    with pytest.raises(ConfigError, match="names kd twice"):
        resolve("kd+kd")
    with pytest.raises(UnknownNameError, match="did you mean crd"):
        resolve("crdd+kd")
    chained = make("ab+fsp", data, teacher, init_epochs=1)  # each part's own stage, in order
    assert [s.name for s in chained.extra] == ["ab:init", "fsp:init"]
    fit(chained, data, teacher, epochs=1)
    assert [len(chained.stage_history[n]) for n in ("ab:init", "fsp:init")] == [1, 1]
