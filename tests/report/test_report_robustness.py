"""The report's robustness curves from real runs under label noise: one panel per kind of
corruption, one line per method, each point the mean over seeds of the records at that rate.
Tests :mod:`kdbench.report.robustness` on runs with the ``label_noise`` transform."""

from __future__ import annotations

import re

import pytest

from conftest import tiny_overrides
from kdbench.config import build_config
from kdbench.runner import run

pytestmark = pytest.mark.usefixtures("single_thread")


def test_robustness_curves_of_noisy_runs(results, tmp_path):
    from kdbench.report.page import write_report
    from kdbench.report.robustness import robustness_figures
    from kdbench.report.study import load_studies

    records = {}
    for loss in ("ce", "kd"):
        for rate in (0.0, 0.3):
            records[loss, rate] = run(build_config(tiny_overrides(results, **{
                "loss.name": loss, "data.transforms": [{"name": "label_noise",
                                                         "rate": rate}]})), progress=False)
    [study] = load_studies(results)
    [figure] = robustness_figures(study)
    assert figure.title == "Robustness: resnet8 on synthetic: symmetric"
    # one line per method, CE in black; a point per rate whose hover text is that run's top-1
    assert re.findall(r'data-label="([^"]+)" style="color:([^"]+)"', figure.body) == \
        [("ce", "#000000"), ("kd ← resnet8", "#E69F00")]
    for (loss, rate), record in records.items():
        label = "ce" if loss == "ce" else "kd ← resnet8"
        severity = "clean" if rate == 0 else f"symmetric {rate:g}"
        assert f"{label}, {severity}: {record['metrics']['top1_last']:.2f} ± 0.00 (n=1)" \
            in figure.body
    summary = write_report(results, tmp_path / "r.html")
    assert ("results", "robustness", figure.title) in summary.figures
