"""The evaluators of the robustness settings: ``memorisation`` (label noise) and ``longtail``
(class imbalance), on the metric functions of :mod:`kdbench.evaluators.robustness`.

They serve the label-noise and class-imbalance settings of Sarfraz, Arani & Zonooz, "Knowledge
Distillation Beyond Model Compression" (ICPR 2020) as kdbench runs them (the ``label_noise`` and
``imbalance`` data transforms, :mod:`kdbench.data.robust`).
"""

from __future__ import annotations

from ..data.robust import CLEAN
from ..errors import ConfigError
from . import EvalContext, Outputs
from .robustness import long_tail_accuracy, memorisation

__all__ = ["LongTail", "Memorisation"]


class Memorisation:
    """How much of the noisy training subset the model fits to its noisy label vs its true one,
    after the last epoch (``every=0``: memorisation is a property of the trained model).

    Predictions on the un-augmented training split (eval mode) against the labels trained on
    and the clean labels the ``label_noise`` transform keeps in the split's meta; without such
    a transform every label is clean, so the noisy-subset metrics are NaN and ``clean_fit`` is
    the training accuracy. Metrics (%, :func:`~kdbench.evaluators.robustness.memorisation`):
    ``noisy_fit_noisy`` (memorised), ``noisy_fit_true`` (corrected), ``noisy_fit_other``,
    ``clean_fit``, and the subset sizes ``noisy_count``, ``clean_count``.
    """

    needs = ("train_logits",)
    metrics = ("noisy_fit_noisy", "noisy_fit_true", "noisy_fit_other", "clean_fit",
               "noisy_count", "clean_count")

    def __init__(self, ctx: EvalContext):
        self.ctx = ctx

    def __call__(self, out: Outputs) -> dict[str, float]:
        assert out.train_logits is not None and out.train_labels is not None
        clean = out.train_meta.get(CLEAN, out.train_labels)
        return memorisation(out.train_logits, out.train_labels, clean)


class LongTail:
    """Test accuracy by long-tail group, every epoch (it reuses the test logits the accuracy
    evaluator needs, so it costs no extra forward pass).

    Groups by the *training* count n_c of each class in the run's training split after its
    transforms (the ``imbalance`` transform's long tail; with label noise, counted by the labels
    trained on): ``many`` n_c > ``many_above`` (100), ``few`` n_c < ``few_below`` (20),
    ``medium`` the rest — OLTR's thresholds (Liu et al., CVPR 2019; see
    :func:`~kdbench.evaluators.robustness.shot_groups`). ``acc_many``, ``acc_medium``,
    ``acc_few``: the mean of the group's per-class test accuracies (%), NaN for a group with no
    class. After the last epoch the row also holds every class's accuracy as ``acc_class_<c>``
    (in the record's curve; its last row), not summarised into ``_last``/``_best``: their
    number depends on the dataset. Which class is in which group follows from the thresholds
    (in the config) and the training counts (the ``imbalance`` report in ``record["data"]``).
    """

    needs = ("test_logits",)
    metrics = ("acc_many", "acc_medium", "acc_few")

    def __init__(self, ctx: EvalContext, many_above: int = 100, few_below: int = 20):
        if few_below < 0 or many_above < 0 or few_below > many_above + 1:
            raise ConfigError(f"evaluator 'longtail' thresholds must satisfy 0 <= few_below <= "
                              f"many_above + 1, got few_below={few_below}, "
                              f"many_above={many_above}")
        self.ctx, self.many_above, self.few_below = ctx, int(many_above), int(few_below)
        self.train_counts = ctx.dataset.train.class_counts(ctx.num_classes)

    def __call__(self, out: Outputs) -> dict[str, float]:
        assert out.test_logits is not None
        acc = long_tail_accuracy(out.test_logits, out.test_labels, self.train_counts,
                                 self.many_above, self.few_below)
        values = {k: float(acc[k]) for k in self.metrics}  # type: ignore[arg-type]
        if out.last:
            per_class = acc["acc_per_class"]
            assert isinstance(per_class, list)
            values.update({f"acc_class_{c}": v for c, v in enumerate(per_class)})
        return values

