"""The contract every registered item meets, walked over the registry itself (as timm tests
every model it lists): a new loss, evaluator, data transform, teacher source, MI estimator,
table layout, figure, stage, optimiser, schedule, augmentation, logger, executor or model is
tested the moment it registers, with no list here to keep up to date.

Every item: a one-line description, a typed spec that rebuilds from its own fields, defaults
that pass the value coercer and resolve through the config layer (or fail there with one line
naming the setting it needs). Then, per kind, the smallest real use: a loss builds on a tiny
resnet8 pair on digits-shaped input and its every stage returns finite terms named after its
``w_*`` weights; an evaluator runs on a tiny dataset; a transform applies to a tiny split,
seeded, and reports what it did; and so on. Each item's own test checks that its numbers are
right; this one checks that it keeps the contract the rest of kdbench relies on.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path

import pytest
import torch

from conftest import REPO, tiny_overrides
from kdbench import plugins
from kdbench.config import build_config, resolve, run_id
from kdbench.data import load_dataset
from kdbench.errors import ConfigError, KDBenchError
from kdbench.spec import SPECS, coerce_options

pytestmark = pytest.mark.usefixtures("single_thread")


def _registered() -> dict[str, list[str]]:
    """Every built-in item by kind, read from the registry as each test sees it (no installed
    third-party plugin, no plugins folder: what the autouse ``hermetic`` fixture sets)."""
    saved = {k: os.environ.pop(k, None) for k in (plugins.ENV_LOAD, plugins.ENV_DIR)}
    os.environ[plugins.ENV_LOAD] = ""
    plugins.reset()
    try:
        return {kind: plugins.names(kind) for kind in plugins.KINDS}
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        plugins.reset()


REGISTERED = _registered()
ITEMS = [(kind, name) for kind, names in REGISTERED.items() for name in names]


def items(kind: str) -> list[str]:
    """The concrete items of a kind (a namespace ``prefix/*`` stands for items elsewhere)."""
    return [n for n in REGISTERED[kind] if not n.endswith("/*")]


def one_line_error(exc: BaseException, *words: str) -> None:
    message = str(exc)
    assert message and "\n" not in message, f"not a one-line error: {message!r}"
    for word in words:
        assert word in message, f"{word!r} not named in {message!r}"


# -- shared tiny things --------------------------------------------------------------------------

CLASSES, CHANNELS, SIZE = 10, 1, 8  # the embedded digits' shape
#: 50 images a class: the least that every built-in accepts at its defaults (retrieval's
#: precision@100 needs 100 training images, imbalance's ratio 10 needs 10 in the largest class)
TRAIN, TEST = 500, 100


def tiny_data(**options):
    return load_dataset("synthetic", None, num_classes=CLASSES, channels=CHANNELS, size=SIZE,
                        train_size=TRAIN, test_size=TEST, **options)


@pytest.fixture(scope="module")
def data():
    return tiny_data()


def digits_config(**overrides):
    """A config of a tiny run on digits-shaped synthetic data (resnet8 from resnet8)."""
    base = tiny_overrides(Path("unused-results"), **{
        "data.options": {"num_classes": CLASSES, "channels": CHANNELS, "size": SIZE,
                         "train_size": TRAIN, "test_size": TEST}})
    return build_config({**base, **overrides})


def resolves(kind: str, name: str, **overrides) -> object | None:
    """The config resolved with the item in it, or None when resolution refused it with a
    one-line ConfigError naming the item (a setting it needs and has no default for)."""
    try:
        config = resolve(digits_config(**overrides))
    except ConfigError as exc:
        one_line_error(exc, name)
        return None
    assert len(run_id(config)) == 16
    return config


def models(seed: int = 0):
    from kdbench.models import create_model

    torch.manual_seed(seed)
    return (create_model("resnet8", CLASSES, CHANNELS), create_model("resnet8", CLASSES, CHANNELS))


def batch_of(data, n: int = 32, views: tuple[str, ...] = ()):
    """One training batch as a stage sees it, with the extra augmented ``views`` asked for."""
    from kdbench.data import BatchLoader
    from kdbench.data.augment import make_augment
    from kdbench.stages import Batch

    loader = BatchLoader(data, "train", n, train=True, augment=False,
                         extra_views=tuple(make_augment(data, v) for v in views))
    x, y, index, *extra = next(iter(loader))
    return Batch(x, y, index, views=extra[0] if extra else [])


# -- every item of every kind --------------------------------------------------------------------


def test_every_kind_has_registered_items():
    empty = sorted(kind for kind, names in REGISTERED.items() if not names)
    assert not empty, f"kinds with nothing registered: {empty}"


@pytest.mark.parametrize("kind,name", ITEMS, ids=[f"{k}:{n}" for k, n in ITEMS])
def test_registration_is_described_typed_and_its_defaults_coerce(kind, name):
    spec = plugins.get(kind, name)
    assert isinstance(spec, SPECS[kind][2]) and spec.kind == kind
    assert spec.source.startswith("builtin (")
    assert spec.description.strip() and "\n" not in spec.description, \
        f"{kind} {name!r} has no one-line description (register(..., description=) or a " \
        f"docstring)"
    # the typed fields are consistent: the spec rebuilds from its own fields and checks
    rebuilt = type(spec).build(spec.name, spec.factory, spec.source, spec.description,
                               spec.metadata)
    assert rebuilt.metadata == spec.metadata
    defaults, types = spec.metadata.get("defaults"), spec.metadata.get("types")
    if defaults is not None:
        stray = sorted(set(types or {}) - set(defaults))
        assert not stray, f"{kind} {name!r} types options it has no default for: {stray}"
        coerced = coerce_options({}, defaults, f"{kind} {name!r}", types)
        assert coerced.keys() == defaults.keys()


def test_a_file_that_registers_one_item_is_named_after_it():
    """``losses/dkd.py`` registers ``dkd``: a module that defines exactly one registered item
    (of any kind) carries the item's name, so ``--loss dkd`` is found in ``dkd.py``."""
    defined: dict[str, list[str]] = {}
    for kind, name in ITEMS:
        if not name.endswith("/*"):  # a namespace stands for items defined elsewhere
            module = plugins.get(kind, name).factory.__module__
            defined.setdefault(module, []).append(f"{kind} {name}")
    misnamed = sorted(f"{module} defines only {found[0]}" for module, found in defined.items()
                      if len(found) == 1 and module.rpartition(".")[2] != found[0].split()[1])
    assert not misnamed, misnamed


# -- losses ----------------------------------------------------------------------------------------


def _tapped(features, taps):
    """Only what a loss declares it taps (the engine gives a logits-only loss no more)."""
    from kdbench.models import Features

    if features is None:
        return None
    return Features(logits=features.logits,
                    embedding=features.embedding if "embedding" in taps else None,
                    stages=list(features.stages) if "stages" in taps else [],
                    preact=list(features.preact) if "preact" in taps else [],
                    stem=features.stem if "stages" in taps else None)


def _forward(model, x, how, taps):
    from kdbench.models import Features

    if how == "none":
        return None
    return _tapped(model.features(x), taps) if how == "features" else \
        Features(logits=model(x))


@pytest.mark.parametrize("name", items("loss"))
def test_loss_builds_on_a_tiny_pair_and_every_stage_gives_finite_named_terms(name, data):
    from kdbench.config import Recipe
    from kdbench.losses import DistillContext, build, entry
    from kdbench.losses import resolve as resolve_loss
    from kdbench.stages import loss_stages, main_stage

    spec = entry(name)
    assert spec.family, f"loss {name!r} registers no family"
    if spec.family != "baseline":
        assert spec.paper not in ("", "-") and isinstance(spec.year, int) and \
            spec.repo.startswith("https://"), f"loss {name!r}: paper, year and official repo"
    weights, options = resolve_loss(name, student="resnet8", teacher="resnet8")
    assert all(k.startswith("w_") for k in weights) and "w_ce" in weights
    config = resolves("loss", name, **{"loss.name": name})
    assert config is not None and config.loss.weights == weights

    student, teacher = models()
    teacher.eval()
    ctx = DistillContext(student, teacher, CLASSES, data.input_shape, len(data.train), weights,
                         options, data.train.labels, epochs=2)
    distiller = build(name, ctx)
    assert set(distiller.taps) == set(spec.taps)
    recipe = Recipe(epochs=2, batch_size=32, lr=0.01, milestones=[])
    stages = [*loss_stages(student, distiller, recipe), main_stage(student, distiller, recipe)]
    batch = batch_of(data, views=tuple(distiller.views))  # MLKD's strong view, ...
    named: set[str] = set()
    for stage in stages:
        with torch.no_grad():
            t_feats = _forward(teacher, batch.x, stage.teacher, spec.taps)
            views = [(_forward(student, v, stage.student, spec.taps),
                      _forward(teacher, v, stage.teacher, spec.taps)) for v in batch.views] \
                if stage.views else None
        s_feats = _forward(student, batch.x, stage.student, spec.taps)
        terms = stage.loss(s_feats, t_feats, batch, 0, stage.name, views=views)
        assert isinstance(terms, dict), f"{name} stage {stage.name} returned {type(terms)}"
        for term, value in terms.items():
            assert value.numel() == 1 and bool(torch.isfinite(value)), \
                f"{name} stage {stage.name}: term {term} = {value}"
        if stage.weights is not None:  # the main stage: terms are weighted by w_<term>
            unweighted = sorted(set(terms) - {k[2:] for k in stage.weights})
            assert not unweighted, f"{name} returns {unweighted} with no w_<term> weight"
        named |= set(terms)
        total = sum((stage.weights or {}).get(f"w_{t}", 1.0) * v for t, v in terms.items())
        if terms and total.requires_grad:
            total.backward()
            grads = [p.grad for p in stage.parameters if p.grad is not None]
            assert grads and all(bool(torch.isfinite(g).all()) for g in grads), \
                f"{name} stage {stage.name}: non-finite gradients"
            for p in stage.parameters:
                p.grad = None
    idle = sorted(k for k in weights if k != "w_ce" and k[2:] not in named)
    assert not idle, f"{name} has weights {idle} that no stage's term uses"


# -- evaluators ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", items("evaluator"))
def test_evaluator_runs_on_a_tiny_dataset(name, data):
    from kdbench.evaluators import EvalContext, build_suite

    spec = plugins.get("evaluator", name)
    config = resolves("evaluator", name, **{"eval.evaluators": [{"name": name}],
                                             "eval.best_metric": spec.metrics[0]})
    assert config is not None
    [item] = config.eval.evaluators
    student, teacher = models()
    # an evaluator that compares with the teacher gets one (the runner gives the run's)
    with_teacher = "teacher_test_logits" in spec.needs
    suite = build_suite([item], EvalContext(data, teacher=teacher if with_teacher else None),
                        epochs=1)
    metrics = suite.evaluate(student, 1)  # epoch 1 of 1: every evaluator is due
    missing = sorted(set(spec.metrics) - set(metrics))
    assert not missing, f"evaluator {name!r} returned no {missing}"
    assert all(isinstance(v, float) for v in metrics.values())


# -- data transforms -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", items("data_transform"))
def test_transform_applies_to_a_tiny_split_seeded_and_reports_what_it_did(name, data):
    spec = plugins.get("data_transform", name)
    config = resolves("data_transform", name, **{"data.transforms": [{"name": name}]})
    assert config is not None
    [item] = config.data.transforms
    once, again = tiny_data(transforms=[item]), tiny_data(transforms=[item])
    reports = once.info["transforms"]
    assert [r["split"] for r in reports] == list(spec.splits)
    for r in reports:
        assert r["name"] == name and isinstance(r["report"], dict) and r["report"], \
            f"transform {name!r} reports nothing about the {r['split']} split"
        json.dumps(r["report"])  # it goes into the JSON record as it is
    assert again.info["transforms"] == reports
    for split in ("train", "test"):
        new, old, repeat = getattr(once, split), getattr(data, split), getattr(again, split)
        assert torch.equal(new.images, repeat.images) and torch.equal(new.labels, repeat.labels)
        assert int(new.labels.min()) >= 0 and int(new.labels.max()) < CLASSES
        if split not in spec.splits:
            assert torch.equal(new.images, old.images) and torch.equal(new.labels, old.labels)


# -- teacher sources -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", items("teacher_source"))
def test_teacher_source_resolves_and_names_its_seeds(name):
    spec = plugins.get("teacher_source", name)
    config = resolves("teacher_source", name, **{"teacher.source": name})
    if config is None:
        return  # it needs a setting it cannot default, and said so in one line
    assert config.teacher.source == name
    if spec.seeds is not None:
        seeds = spec.seeds(config)
        assert isinstance(seeds, list) and all(isinstance(s, int) for s in seeds)


# -- MI estimators ---------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::FutureWarning")  # aliases say what they stand for
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # regime warnings have their own tests
@pytest.mark.parametrize("name", items("mi_estimator"))
def test_mi_estimator_contract_settings_and_bad_input(name):
    from kdbench.errors import DataError
    from kdbench.mi.base import UNITS, Estimate

    spec = plugins.get("mi_estimator", name)
    assert spec.unit in UNITS and spec.paper
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    t = 0.8 * x + 0.6 * torch.randn(64, 4, generator=g)
    y = (t[:, 0] > 0).long() + 2 * (t[:, 1] > 0).long()
    fast = {k: v for k, v in {"epochs": 2, "patience": 1}.items() if k in spec.defaults}
    est = spec.create(**fast)
    out = est.estimate(t, x, y, seed=3)
    assert isinstance(out, Estimate) and out.unit in UNITS
    assert math.isfinite(out.i_xt) and math.isfinite(out.i_ty)
    assert out.settings["seed"] == 3
    assert set(est.defaults) <= set(out.settings)  # every setting that shaped it is reported
    with pytest.raises(ConfigError, match="needs at least"):
        est.estimate(t[:est.min_samples - 1], x[:est.min_samples - 1], y[:est.min_samples - 1])
    bad = t.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(DataError, match="NaN"):
        est.estimate(bad, x, y)
    with pytest.raises(DataError, match="same samples"):
        est.estimate(t, x[:-1], y)
    with pytest.raises(ConfigError, match="no setting 'bogus'.*valid"):
        spec.create(bogus=1)


# -- stages, optimisers, schedules, augmentations --------------------------------------------------


@pytest.mark.parametrize("name", items("stage"))
def test_warmup_stage_builds_and_its_loss_gives_finite_terms(name, data):
    from kdbench.config import Recipe
    from kdbench.losses import DistillContext, build
    from kdbench.losses import resolve as resolve_loss
    from kdbench.stages import Stage, StageContext, build_warmups

    config = resolves("stage", name, **{"warmup": [{"name": name}], "recipe.epochs": 4})
    if config is None:
        return
    student, teacher = models()
    teacher.eval()
    w, o = resolve_loss("kd")
    distiller = build("kd", DistillContext(student, teacher, CLASSES, data.input_shape,
                                           len(data.train), w, o))
    ctx = StageContext(student, teacher, distiller, Recipe(epochs=4, batch_size=32, lr=0.01),
                       CLASSES, data.input_shape)
    stages = build_warmups(config.warmup, ctx)
    assert stages and all(isinstance(s, Stage) for s in stages)
    batch = batch_of(data)
    for stage in stages:
        with torch.no_grad():
            t_feats = _forward(teacher, batch.x, stage.teacher, {"stages", "preact",
                                                                  "embedding"})
            if t_feats is not None and stage.teacher_view is not None:
                t_feats = stage.teacher_view(t_feats, batch)
        s_feats = _forward(student, batch.x, stage.student, {"stages", "preact", "embedding"})
        terms = stage.loss(s_feats, t_feats, batch, 0, stage.name)
        assert terms and all(v.numel() == 1 and bool(torch.isfinite(v))
                             for v in terms.values()), terms


@pytest.mark.parametrize("name", items("optimizer"))
def test_optimizer_takes_a_step(name):
    from kdbench.stages.optim import make_optimizer

    config = resolves("optimizer", name, **{"recipe.optimizer": name})
    assert config is not None
    r = config.recipe
    layer = torch.nn.Linear(4, 2)
    before = [p.detach().clone() for p in layer.parameters()]
    opt = make_optimizer(name, layer.parameters(), lr=0.1, momentum=r.momentum,
                         nesterov=r.nesterov, weight_decay=r.weight_decay,
                         options=r.optimizer_options)
    layer(torch.ones(3, 4)).square().sum().backward()
    opt.step()
    after = list(layer.parameters())
    assert all(bool(torch.isfinite(p).all()) for p in after)
    assert any(not torch.equal(a, b) for a, b in zip(after, before))


@pytest.mark.parametrize("name", items("schedule"))
def test_schedule_gives_a_finite_factor_every_epoch(name):
    from kdbench.stages.optim import make_schedule

    config = resolves("schedule", name, **{"recipe.schedule": name, "recipe.epochs": 6,
                                           "recipe.milestones": [2, 4], "recipe.step_size": 2})
    assert config is not None
    factor = make_schedule(config.recipe)
    values = [factor(e) for e in range(6)]
    assert all(isinstance(v, (int, float)) and math.isfinite(v) and v >= 0 for v in values)


@pytest.mark.parametrize("name", items("augmentation"))
def test_augmentation_keeps_the_batch_shape_and_follows_its_generator(name, data):
    from kdbench.data.augment import make_augment

    config = resolves("augmentation", name, **{"data.augmentation": name})
    assert config is not None
    augment = make_augment(data, name, config.data.augmentation_options)
    images = data.train.images[:8]
    out = augment(images, torch.Generator().manual_seed(1))
    again = augment(images, torch.Generator().manual_seed(1))
    assert out.shape == images.shape and out.dtype == torch.uint8
    assert torch.equal(out, again)


# -- loggers and executors -------------------------------------------------------------------------


def test_every_logger_watches_a_run_without_a_warning(results):
    from kdbench.runner import run

    names = items("logger")
    config = build_config(tiny_overrides(results, **{
        "loss.name": "ce", "recipe.epochs": 1,
        "log": [{"name": n} for n in names]}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        record = run(config, progress=False)
    assert record["status"] == "done"
    complaints = [str(w.message) for w in caught if "logger" in str(w.message)]
    assert not complaints, complaints


@pytest.mark.parametrize("name", items("executor"))
def test_executor_is_made_and_runs_an_empty_sweep(name, tmp_path):
    from kdbench.sweep import make_executor

    try:
        executor = make_executor(name)
    except KDBenchError as exc:  # it needs something this machine lacks, and says what
        one_line_error(exc, name)
        return
    with executor:
        executor.run([], tmp_path, lambda job, outcome: pytest.fail("no job to report"))


# -- models ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", items("model"))
def test_model_gives_the_feature_view_it_declares(name):
    from kdbench.models import create_model

    assert plugins.get("model", name).family, f"model {name!r} registers no family"
    model = create_model(name, CLASSES, CHANNELS).eval()
    size = max(SIZE, model.min_input_size)
    with torch.no_grad():
        f = model.features(torch.zeros(2, CHANNELS, size, size))
        logits = model(torch.zeros(2, CHANNELS, size, size))
    assert tuple(f.logits.shape) == tuple(logits.shape) == (2, CLASSES)
    assert model.num_classes == CLASSES and model.in_chans == CHANNELS
    if f.embedding is not None:
        assert tuple(f.embedding.shape) == (2, model.embedding_dim)
    if model.has_features:
        shapes = model.stage_shapes((size, size))
        assert [tuple(s.shape[1:]) for s in f.stages] == shapes
        if model.has_preact:
            assert [tuple(s.shape[1:]) for s in f.preact] == shapes
        if model.stem_info is not None:
            assert tuple(f.stem.shape[1:]) == model.stem_info.shape((size, size))


# -- presentation: layouts and figures on the committed studies ------------------------------------


@pytest.fixture(scope="module")
def studies():
    """The committed studies of ``results/`` (those with a study.yaml), each loaded once."""
    from kdbench.report.study import load_studies

    folders = sorted(p.parent for p in (REPO / "results").glob("*/study.yaml"))
    assert folders, "no committed study under results/"
    return [s for folder in folders for s in load_studies(folder)]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # cells that mix configurations, no MI
@pytest.mark.parametrize("name", items("table_layout"))
def test_table_layout_renders_or_says_why_not(name, studies):
    layout = plugins.get("table_layout", name)
    for study in studies:
        try:
            text = layout.create(study.df, fmt="github")
        except KDBenchError as exc:
            one_line_error(exc)
            continue
        assert isinstance(text, str) and text.strip(), f"{name} on {study.name}: empty"


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("name", items("report_figure"))
def test_report_figure_draws_a_list_of_figures(name, studies):
    figure = plugins.get("report_figure", name)
    for study in studies:
        drawn = figure.create(study)
        assert isinstance(drawn, list), f"{name} on {study.name}: {type(drawn)}"
        for fig in drawn:
            assert fig.title and "<svg" in fig.body, f"{name} on {study.name}: {fig.title!r}"


def test_every_kind_is_walked_here():
    """A new plugin kind gets a contract test here too (or says why it needs none)."""
    covered = {"loss", "evaluator", "data_transform", "teacher_source", "mi_estimator", "stage",
               "optimizer", "schedule", "augmentation", "logger", "executor", "model",
               "table_layout", "report_figure",
               "dataset"}  # datasets: the registration test; loading needs their files
    assert set(plugins.KINDS) == covered, sorted(set(plugins.KINDS) ^ covered)
