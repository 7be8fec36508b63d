"""Feature losses that pair stages choose the pairs: option ``stages``, so AT, NST, VID, KD-SVD,
FSP, AB, FT, FitNet, ReviewKD and SP work between a 3-stage CIFAR ResNet and a timm ResNet of 5
feature stages (or a 4-stage VGG, for the losses on pre-activations, which timm models do not
give); a pair that cannot be made is a one-line error, and a loss without the option says so."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kdbench import plugins
from kdbench.config import build_config
from kdbench.errors import ConfigError
from kdbench.losses import DistillContext, build, entry, resolve
from kdbench.losses.at import at
from kdbench.losses.base import stage_pairs
from kdbench.losses.kdsvd import kdsvd
from kdbench.losses.nst import nst
from kdbench.losses.reviewkd import hcl
from kdbench.models import create_model
from kdbench.store import Store

#: the losses with option ``stages``
STAGED = ["at", "nst", "vid", "kdsvd", "fsp", "ab", "ft", "fitnet", "reviewkd", "sp"]


def context(student, teacher, name="at", input_shape=(3, 32, 32), **options):
    weights, opts = resolve(name, {}, options)
    return DistillContext(student, teacher, 10, input_shape, 100, weights, opts)


@pytest.fixture(scope="module")
def models():
    """resnet8 (3 stages), timm/resnet10t (5 feature stages, no pre-activations), vgg8 (4),
    resnet20, in eval mode, and one batch of each's features."""
    torch.manual_seed(0)
    nets = {n: create_model(n, 10).eval() for n in ("resnet8", "timm/resnet10t", "vgg8",
                                                     "resnet20")}
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        feats = {n: m.features(x) for n, m in nets.items()}
    return nets, feats


def test_stage_pairs_are_read_and_checked():
    s, t = [torch.zeros(1)] * 3, [torch.zeros(1)] * 5
    assert stage_pairs("0:2, 1:3,2:4", s, t, "at") == [(0, 2), (1, 3), (2, 4)]
    assert stage_pairs([[2, 4]], s, t, "at") == [(2, 4)]
    assert stage_pairs(None, s, s, "at") == [(0, 0), (1, 1), (2, 2)]
    with pytest.raises(ConfigError, match=r"pairs stages one to one, but the student has 3 and "
                                          r"the teacher 5"):
        stage_pairs(None, s, t, "at")
    with pytest.raises(ConfigError, match=r"option stages pairs teacher stage 5, but the teacher "
                                          r"has stages 0..4"):
        stage_pairs("0:5", s, t, "at")
    with pytest.raises(ConfigError, match=r"must be pairs of stage indices.*got 'first'"):
        stage_pairs("first", s, t, "at")


def test_stage_pairs_counts_defaults_and_what_they_index():
    s, t = [torch.zeros(1)] * 3, [torch.zeros(1)] * 5
    assert stage_pairs(None, s, t, "ft", default=[(2, 4)], exactly_one=True) == [(2, 4)]
    assert stage_pairs("1:3", s, t, "ft", default=[(2, 4)], exactly_one=True) == [(1, 3)]
    with pytest.raises(ConfigError, match=r"^loss 'ft' option stages names 2 pairs, but takes "
                                          r"exactly one: one factor \(got '0:1,1:2'\)$"):
        stage_pairs("0:1,1:2", s, t, "ft", exactly_one=True, why="one factor")
    with pytest.raises(ConfigError, match=r"names 1 pair, but takes at least 2"):
        stage_pairs("0:1", s, t, "kdsvd", min_pairs=2)
    with pytest.raises(ConfigError, match=r"pairs student pre-activation stage 3, but the "
                                          r"student has pre-activation stages 0..2"):
        stage_pairs("3:0", s, t, "ab", what="pre-activation stages")
    with pytest.raises(ConfigError, match=r"pairs teacher pre-activation stage 0, but the "
                                          r"teacher has no pre-activation stages"):
        stage_pairs("0:0", s, [], "ab", what="pre-activation stages")
    # a YAML 1.1 reader turns an unquoted 2:4 into 124: the error says how to write it
    with pytest.raises(ConfigError, match=r"got 124 \(YAML 1.1 reads an unquoted 2:4 as the "
                                          r"base-60 number 124: write \"2:4\" in quotes, or "
                                          r"\[\[2, 4\]\]\)"):
        stage_pairs(124, s, t, "ft", exactly_one=True)


@pytest.mark.parametrize(("name", "term"), [("at", at), ("nst", nst)])
def test_at_between_a_cifar_resnet_and_a_timm_resnet_pairs_the_chosen_stages(name, term):
    torch.manual_seed(0)
    student, teacher = create_model("resnet8", 10).eval(), \
        create_model("timm/resnet10t", 10).eval()
    with pytest.raises(ConfigError, match=r"one to one, but the student has 3 and the teacher 5"):
        build(name, context(student, teacher))
    distiller = build(name, context(student, teacher, stages="0:2,1:3,2:4"))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        fs, ft = student.features(x), teacher.features(x)
        got = distiller(fs, ft, torch.zeros(2, dtype=torch.long))[name]
    want = sum(term(fs.stages[i], ft.stages[j]) for i, j in [(0, 2), (1, 3), (2, 4)])
    assert got.item() == pytest.approx(want.item(), rel=1e-6) and want.item() > 0


# ============================== each loss on its chosen stages ==================================


def pool(a, b):
    """RepDistiller's pooling, written out: the larger map to the smaller one's size."""
    if a.shape[2] > b.shape[2]:
        a = F.adaptive_avg_pool2d(a, b.shape[2:])
    elif a.shape[2] < b.shape[2]:
        b = F.adaptive_avg_pool2d(b, a.shape[2:])
    return a, b


def want_vid(d, fs, ft, pairs):
    total = 0.0
    for reg, (i, j) in zip(d.regressors, pairs):
        s, t = pool(fs.stages[i], ft.stages[j])
        mu, var = reg.regressor(s), reg.variance().view(1, -1, 1, 1)
        total += (0.5 * (t - mu) ** 2 / var + 0.5 * var.log()).mean().item()
    return total


def want_kdsvd(d, fs, ft, pairs):
    s = [fs.stages[i] for i, _ in pairs]
    if d.connectors is not None:
        s = [c(x) for c, x in zip(d.connectors, s)]
    return kdsvd(s, [ft.stages[j] for _, j in pairs]).item()


def want_fsp(d, fs, ft, pairs):
    def gram(a, b):
        a, b = pool(a, b)
        return torch.einsum("bchw,bdhw->bdc", a, b) / (a.shape[2] * a.shape[3])
    total = 0.0
    for (i, j), (k, m) in zip(pairs, pairs[1:]):
        gs, gt = gram(fs.stages[i], fs.stages[k]), gram(ft.stages[j], ft.stages[m])
        total += (gs - gt).pow(2).mean().item()
    return total


def want_ab(d, fs, ft, pairs):
    n, total = len(pairs), 0.0
    for k, (c, (i, j)) in enumerate(zip(d.connectors, pairs)):
        s, t = c(fs.preact[i]), ft.preact[j]
        off = (s + 1).pow(2) * ((s > -1) & (t <= 0))  # margin 1: the student must be off
        on = (s - 1).pow(2) * ((s <= 1) & (t > 0))
        total += 2.0 ** (k + 1 - n) * (off + on).sum().item() / s.shape[0]
    return total * 3 / 1000


def want_ft(d, fs, ft, pairs):
    [(i, j)] = pairs
    s, t = pool(d.translator(fs.stages[i]), d.paraphraser.encoder(ft.stages[j]))
    fa = F.normalize(s.pow(2).mean(1).flatten(1), dim=1)
    fb = F.normalize(t.pow(2).mean(1).flatten(1), dim=1)
    return (fa - fb).abs().mean().item()


def want_fitnet(d, fs, ft, pairs):
    [(i, j)] = pairs
    return (d.regressor(fs.stages[i]) - ft.stages[j]).pow(2).mean().item()


def want_reviewkd(d, fs, ft, pairs):
    emb = [fs.embedding[:, :, None, None]], [ft.embedding[:, :, None, None]]
    t_maps = [ft.preact[j] for _, j in pairs] + emb[1]
    fused = d.review([fs.stages[i] for i, _ in pairs] + emb[0],
                     [tuple(m.shape[-2:]) for m in t_maps])
    return hcl(fused, t_maps).item()


def want_sp(d, fs, ft, pairs):
    total = 0.0
    for i, j in pairs:
        a, b = fs.stages[i].flatten(1), ft.stages[j].flatten(1)
        ga, gb = F.normalize(a @ a.T, dim=1), F.normalize(b @ b.T, dim=1)
        total += (ga - gb).pow(2).sum().item() / 16
    return total


#: loss -> (teacher, stages, other stages, options, the term on the chosen stages written out,
#: whether the default (no stages) refuses the pair); the student is resnet8
CASES = {
    "vid": ("timm/resnet10t", "0:2,1:3,2:4", "0:1,1:2,2:3", {}, want_vid, True),
    "kdsvd": ("timm/resnet10t", "2:0,2:1", "2:1,2:1", {}, want_kdsvd, True),
    "kdsvd+connector": ("timm/resnet10t", "0:2,1:3,2:4", "0:1,1:2,2:3", {"connector": True},
                        want_kdsvd, True),
    "fsp": ("timm/resnet10t", "2:0,2:1", "2:1,2:1", {"main_term": True}, want_fsp, True),
    "ab": ("vgg8", "0:0,1:1,2:3", "0:0,1:1,2:2", {"main_term": True}, want_ab, True),
    "ft": ("timm/resnet10t", "2:3", "2:2", {}, want_ft, False),
    "fitnet": ("timm/resnet10t", "1:3", "1:2", {}, want_fitnet, False),
    "reviewkd": ("vgg8", "0:0,1:1,2:3", "0:0,1:1,2:2", {"warmup": 0}, want_reviewkd, True),
    "sp": ("timm/resnet10t", "0:2,2:4", "0:1,2:3", {}, want_sp, False),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_loss_computes_its_term_on_the_chosen_stages(case, models):
    name = case.split("+")[0]
    teacher_name, chosen, other, options, want, refused = CASES[case]
    nets, feats = models
    student, teacher = nets["resnet8"], nets[teacher_name]
    fs, ft = feats["resnet8"], feats[teacher_name]
    if refused:
        with pytest.raises(ConfigError, match=r"one to one, but the student has \d and the "
                                              r"teacher \d$"):
            build(name, context(student, teacher, name, **options))
    torch.manual_seed(0)
    d = build(name, context(student, teacher, name, stages=chosen, **options)).eval()
    pairs = [tuple(map(int, p.split(":"))) for p in chosen.split(",")]
    with torch.no_grad():
        got = d(fs, ft, torch.zeros(4, dtype=torch.long))
        value = want(d, fs, ft, pairs)
    [term] = got.values()
    assert term.item() == pytest.approx(value, rel=1e-5) and value > 0
    # another choice of pairs moves the term (the chosen maps are the ones used)
    torch.manual_seed(0)
    d2 = build(name, context(student, teacher, name, stages=other, **options)).eval()
    with torch.no_grad():
        [term2] = d2(fs, ft, torch.zeros(4, dtype=torch.long)).values()
    assert term2.item() != pytest.approx(term.item(), rel=1e-6)


def test_ft_pretrains_its_paraphraser_on_the_chosen_teacher_stage(models):
    nets, feats = models
    d = build("ft", context(nets["resnet8"], nets["timm/resnet10t"], "ft", stages="1:2"))
    assert (d.s_stage, d.t_stage) == (1, 2)
    [stage] = d.stages()
    t = feats["timm/resnet10t"].stages[2]
    with torch.no_grad():
        got = stage.loss(feats["resnet8"], feats["timm/resnet10t"], None)["paraphrase"]
        want = (d.paraphraser.decoder(d.paraphraser.encoder(t)) - t).pow(2).mean()
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    plain = build("ft", context(nets["resnet8"], nets["timm/resnet10t"], "ft"))
    assert (plain.s_stage, plain.t_stage) == (2, 4)  # the last stage of each, as before


def test_fsp_with_stages_leaves_the_stem_out(models):
    """Unset, FSP's maps are the stem and every stage (RepDistiller); with stages, the chosen
    stages only: every stage one to one is then the default without the stem's matrix."""
    nets, feats = models
    s, t = nets["resnet8"], nets["resnet20"]
    fs, ft = feats["resnet8"], feats["resnet20"]
    every = build("fsp", context(s, t, "fsp", stages="0:0,1:1,2:2", main_term=True))
    plain = build("fsp", context(s, t, "fsp", main_term=True))
    pairs = [(0, 0), (1, 1), (2, 2)]
    with torch.no_grad():
        got = every(fs, ft, None)["fsp"].item()
        assert got == pytest.approx(want_fsp(every, fs, ft, pairs), rel=1e-5)
        gs = torch.einsum("bchw,bdhw->bdc", fs.stem, fs.stages[0]) / 32 ** 2
        gt = torch.einsum("bchw,bdhw->bdc", ft.stem, ft.stages[0]) / 32 ** 2
        stem = (gs - gt).pow(2).mean().item()
        assert plain(fs, ft, None)["fsp"].item() == pytest.approx(got + stem, rel=1e-5)


@pytest.mark.parametrize(("name", "teacher", "chosen", "options", "match"), [
    ("vid", "timm/resnet10t", "0:2,1:5", {}, r"pairs teacher stage 5, but the teacher has "
                                              r"stages 0..4"),
    ("kdsvd", "timm/resnet10t", "3:0,2:1", {}, r"pairs student stage 3, but the student has "
                                               r"stages 0..2"),
    ("ab", "vgg8", "0:4", {}, r"pairs teacher pre-activation stage 4, but the teacher has "
                              r"pre-activation stages 0..3"),
    ("reviewkd", "vgg8", "0:0,1:7", {}, r"pairs teacher stage 7, but the teacher has stages "
                                        r"0..3"),
    ("sp", "timm/resnet10t", "0:-1", {}, r"pairs teacher stage -1, but the teacher has stages "
                                         r"0..4"),
    ("ft", "timm/resnet10t", "0:1,2:4", {}, r"names 2 pairs, but takes exactly one: FT "
                                            r"transfers one factor"),
    ("fitnet", "timm/resnet10t", "0:1,1:2", {}, r"names 2 pairs, but takes exactly one: the "
                                                r"hint pair \"s:t\" \(option hint_stage picks "
                                                r"the same stage in both models, 0 = the stem\)"),
    ("fitnet", "timm/resnet10t", "1:2", {"hint_stage": 3}, r"takes option hint_stage=3 \(the "
                                                           r"same stage in both models\) or "
                                                           r"stages='1:2' \(one pair\), not both"),
    ("kdsvd", "timm/resnet10t", "2:0", {}, r"names 1 pair, but takes at least 2: it correlates "
                                           r"consecutive stages"),
    ("kdsvd", "timm/resnet10t", "0:0,1:1", {}, r"equal channels in student and teacher at each "
                                               r"pair of option stages='0:0,1:1', but the "
                                               r"student has \[16, 32\] and the teacher "
                                               r"\[64, 64\] \(set option connector=true"),
    ("fsp", "timm/resnet10t", "2:0", {}, r"names 1 pair, but takes at least 2: an FSP matrix is "
                                         r"made of two consecutive maps"),
    ("fsp", "timm/resnet10t", "2:0,1:1", {}, r"option stages pairs student stage 1 "
                                             r"\(32, 16, 16\) with teacher stage 1 "
                                             r"\(64, 8, 8\), but FSP matrices need equal "
                                             r"channels in each pair"),
    ("ab", "timm/resnet10t", "0:0", {}, r"needs the teacher's pre-activation stages, but the "
                                        r"model gives none"),
    ("reviewkd", "timm/resnet10t", "0:0", {}, r"needs the teacher's pre-activation stages"),
])
def test_pairs_that_cannot_be_made_are_one_line_errors(name, teacher, chosen, options, match,
                                                       models):
    nets, _ = models
    with pytest.raises(ConfigError, match=match) as err:
        build(name, context(nets["resnet8"], nets[teacher], name, stages=chosen, **options))
    assert "\n" not in str(err.value) and str(err.value).startswith(f"loss '{name}'")


def test_fsp_maps_that_pool_to_different_sizes_are_one_line_errors():
    """RepDistiller pools the larger map of an FSP matrix to a square of the smaller height:
    non-square maps cannot meet (here 32×16 inputs)."""
    s, t = create_model("resnet8", 10), create_model("resnet20", 10)
    shape = (3, 32, 16)
    with pytest.raises(ConfigError, match=r"^loss 'fsp' cannot make an FSP matrix of the "
                                          r"student's stage 1 and stage 2: maps \(32, 16, 8\) "
                                          r"and \(64, 8, 4\) pool to \(8, 8\) and \(8, 4\), not "
                                          r"one size$"):
        build("fsp", context(s, t, "fsp", shape, stages="1:1,2:2"))
    with pytest.raises(ConfigError, match=r"^loss 'fsp' cannot make an FSP matrix of the "
                                          r"student's stage 0 and stage 1: "):
        build("fsp", context(s, t, "fsp", shape))  # (was an einsum error at the first step)


def test_a_regressor_that_cannot_map_the_chosen_pair_names_it():
    small, large = create_model("timm/resnet10t", 10), create_model("resnet8", 10)
    with pytest.raises(ConfigError, match=r"^loss 'fitnet' option stages pairs student stage 4 "
                                          r"with teacher stage 0, but there is no regressor "
                                          r"from a student map of 1×1 to a teacher map of "
                                          r"32×32 "):
        build("fitnet", context(small, large, "fitnet", stages="4:0"))


# ============================== the option's reach and the run ids ==============================


def test_every_loss_that_taps_stages_takes_the_option_and_the_others_refuse_it():
    staged = []
    for name in plugins.names("loss"):
        e = entry(name)
        if "stages" in e.defaults:
            staged.append(name)
            assert "stages" in e.later and e.defaults["stages"] is None, name
            continue
        assert "stages" not in e.taps, f"{name} taps stages but has no option stages"
        with pytest.raises(ConfigError, match=rf"^loss '{name}' has no option 'stages' "
                                              rf"\(valid: .*\)$"):
            resolve(name, {}, {"stages": "0:0"})
    assert sorted(staged) == sorted(STAGED)


#: the run ids of these configs before the option existed (computed on 509e750)
OLD_IDS = {"at": "3b412f54d32c605f", "nst": "0bf6a9f5a4ef6413", "vid": "c67df00ddc26d051",
           "kdsvd": "7298d92483e279fe", "fsp": "ba46a4c6eb4c52c6", "ab": "1815a6df9bdf546d",
           "ft": "433d9a49d5f808b7", "fitnet": "1e55d95644a5bcbf",
           "reviewkd": "84f80b400852fd06", "sp": "72dc38f3d9585fb2"}


@pytest.mark.parametrize("name", STAGED)
def test_the_stages_option_keeps_old_ids_and_enters_new_ones(name):
    base = {"loss.name": name, "student": "resnet8", "teacher.arch": "resnet20"}
    plain = build_config(base)
    assert plain.run_id == OLD_IDS[name]
    assert plain.run_id == build_config({**base, "loss.options.stages": None}).run_id
    chosen = build_config({**base, "loss.options.stages": "0:0,2:2"})
    assert chosen.run_id != plain.run_id


def test_a_run_on_digits_pairs_a_cifar_resnet_with_a_timm_teacher(cli_runner, tmp_path):
    results = tmp_path / "results"
    out = cli_runner("run", "--dataset", "digits", "--student", "resnet8", "--teacher-arch",
                     "timm/test_resnet", "--loss", "ft", "--set", "loss.options.stages=2:1",
                     "--set", "loss.options.init_epochs=1", "--epochs", "1",
                     "--set", "teacher.recipe.epochs=1", "--set", "recipe.milestones=[]",
                     "--device", "cpu", "--precision", "fp32", "--results-dir", results,
                     "--quiet")
    assert out.exit_code == 0, out.output
    [(_, record)] = list(Store(results).iter_records())
    assert record["status"] == "done"
    assert record["config"]["loss"]["options"]["stages"] == "2:1"  # a pair, not base-60 121
    assert [s["name"] for s in record["metrics"]["stages"]][0] == "ft:paraphraser"
