"""`conceal bench --quick` runs end to end on tiny models and writes every section; no timing is asserted."""

from __future__ import annotations

import re

import pytest

from conceal.bench import BenchConfig, find_models
from conceal.cli import main

SECTIONS = ("# conceal benchmarks", "## Headline ratios", "## Machine", "## Inference", "## End-to-end apply", "## Training", "## Memory")


@pytest.mark.slow
def test_quick_bench_writes_every_section(tiny_saved_models, tmp_path, capsys):
    out = tmp_path / "bench" / "RESULTS.md"
    dirs = [str(tiny_saved_models[name]) for name in sorted(tiny_saved_models)]
    assert main(["bench", "--quick", "--threads", "1", "--models", *dirs, "-o", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    report = out.read_text()
    for heading in SECTIONS:
        assert f"\n{heading}\n" in f"\n{report}", heading
    for name in tiny_saved_models:  # a row per model in the headline, inference, apply and training tables
        assert report.count(f"| {name} |") >= 3 and f"conceal apply {name}" in report
    for measured in ("fp32 matmul peak", "torch threads", "CPU", "onnxruntime / eager", "apply / blur", "data wait", "peak RSS (MiB)"):
        assert measured in report
    assert not re.search(r"\b(nan|inf)\b", report)


def test_without_models_each_method_is_a_fresh_default_model(tmp_path):
    models, note = find_models(BenchConfig(models_root=str(tmp_path / "models")), tmp_path / "work")
    assert sorted(m.method.name for m in models) == ["anonymizer", "concealer", "masker"]
    assert all(m.label.endswith("(fresh)") and (m.directory / "model.json").is_file() for m in models)
    assert "freshly initialised default-config" in note


def test_bench_bad_model_path_is_one_line_error(tmp_path, capsys):
    rc = main(["bench", "--quick", "--models", str(tmp_path / "nowhere"), "-o", str(tmp_path / "r.md")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "no model found" in err
    assert not (tmp_path / "r.md").exists()
