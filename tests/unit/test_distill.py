"""Knowledge distillation of the eval's subset models: the loss, its limits, config, rankings."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from thresher.errors import ConfigError
from thresher.evaluation.config import DistillConfig, DownstreamConfig, parse_eval_config
from thresher.evaluation.model import train_classifier
from thresher.evaluation.summary import RANKING_COLUMNS, distill_rankings, distill_winners
from thresher.models.classifier import SGDSettings, SoftTargets, distillation_loss
from thresher.models.classifier import train_classifier as train_sgd


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Steps of a few hundred multiply-adds: torch's thread pool only costs time here."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _blobs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Three well-separated Gaussian classes in 6 dimensions."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4.0, size=(3, 6))
    classes = rng.integers(0, 3, n)
    return (centres[classes] + rng.normal(size=(n, 6))).astype(np.float32), classes


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_the_loss_is_the_hinton_formula_row_by_row() -> None:
    student = np.array([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
    teacher = np.array([[1.0, 3.0, 0.0], [-2.0, 0.0, 2.0]])
    labels = np.array([0, 2])
    alpha, t = 0.3, 2.5
    ce = -np.log(_softmax(student)[np.arange(2), labels])
    p, q = _softmax(teacher / t), _softmax(student / t)
    kl = (p * np.log(p / q)).sum(axis=1)
    expected = (1 - alpha) * ce + alpha * t**2 * kl
    got = distillation_loss(
        torch.tensor(student), torch.tensor(labels), torch.tensor(teacher), alpha, t
    )
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)
    # a teacher that agrees with the student adds nothing: the KL term is 0
    same = distillation_loss(
        torch.tensor(student), torch.tensor(labels), torch.tensor(student), 1.0, t
    )
    np.testing.assert_allclose(same.numpy(), 0.0, atol=1e-12)


@pytest.mark.parametrize("hidden", [0, 8])
def test_alpha_zero_trains_the_plain_model_bit_for_bit(hidden: int) -> None:
    x, y = _blobs(200, 0)
    teacher = np.random.default_rng(1).normal(size=(200, 3)).astype(np.float32)
    settings = SGDSettings(steps=40, batch_size=16, lr=0.1, weight_decay=1e-4)
    weights = np.random.default_rng(2).uniform(0.5, 2.0, 200)
    plain = train_sgd(x, y, 3, hidden, settings, seed=4, weights=weights)
    soft = SoftTargets(teacher, alpha=0.0, temperature=4.0)
    student = train_sgd(x, y, 3, hidden, settings, seed=4, weights=weights, soft_targets=soft)
    for name, tensor in plain.weights.items():
        assert torch.equal(tensor, student.weights[name]), name
    # a soft loss that is used changes the model
    used = SoftTargets(teacher, alpha=0.5, temperature=4.0)
    other = train_sgd(x, y, 3, hidden, settings, seed=4, weights=weights, soft_targets=used)
    assert not torch.equal(plain.weights["out.weight"], other.weights["out.weight"])


def test_alpha_one_follows_the_teacher_against_wrong_labels() -> None:
    """Every hard label is wrong; a teacher sure of the true classes still teaches them."""
    x, truth = _blobs(300, 3)
    wrong = (truth + 1) % 3
    teacher = (10.0 * np.eye(3)[truth]).astype(np.float32)
    config = DownstreamConfig(
        hidden=0, steps=150, batch_size=32, lr=0.1, weight_decay=0.0, distill=DistillConfig()
    )
    student = train_classifier(
        x,
        wrong,
        3,
        config.model_copy(update={"distill": DistillConfig(alpha=1.0)}),
        seed=0,
        teacher_logits=teacher,
    )
    assert student.accuracy(x, truth) > 0.95
    plain = train_classifier(x, wrong, 3, config, seed=0)  # no teacher: the wrong labels win
    assert plain.accuracy(x, truth) < 0.05
    with pytest.raises(ValueError, match="distill is not configured"):
        train_classifier(
            x, wrong, 3, config.model_copy(update={"distill": None}), 0, teacher_logits=teacher
        )
    with pytest.raises(ValueError, match="teacher logits"):
        train_sgd(
            x,
            wrong,
            3,
            0,
            SGDSettings(5, 8, 0.1),
            0,
            soft_targets=SoftTargets(teacher[:10], 0.5, 4.0),
        )


# -- configuration -------------------------------------------------------------------


def _eval_config(tmp_path: Path, **section: Any) -> dict[str, Any]:
    return {
        "run_dir": "out",
        "input": {"paths": ["data/*.jsonl"]},
        "schema": {"id": "id", "text": "text", "label": "topic"},
        "scorers": [{"name": "word_count"}],
        "eval": {
            "test": {"fraction": 0.2},
            "rates": [0.5],
            "selectors": [{"name": "topk", "params": {"score": "word_count"}}],
            **section,
        },
    }


def test_distill_is_off_unless_configured_and_defaults_to_hinton_settings(tmp_path: Path) -> None:
    assert parse_eval_config(_eval_config(tmp_path), tmp_path).eval.model.distill is None
    off = _eval_config(tmp_path, model={"distill": None})
    assert parse_eval_config(off, tmp_path).eval.model.distill is None
    on = parse_eval_config(_eval_config(tmp_path, model={"distill": {}}), tmp_path)
    assert on.eval.model.distill == DistillConfig(alpha=0.5, temperature=4.0)


@pytest.mark.parametrize(
    ("distill", "message"),
    [
        ({"alpha": 1.5}, "alpha"),
        ({"alpha": -0.1}, "alpha"),
        ({"alpha": True}, "alpha"),
        ({"temperature": 0.0}, "temperature"),
        ({"temp": 2.0}, "temp"),
    ],
)
def test_bad_distill_settings_name_the_field(
    tmp_path: Path, distill: dict[str, Any], message: str
) -> None:
    data = _eval_config(tmp_path, model={"distill": distill})
    with pytest.raises(ConfigError, match=rf"eval\.model\.distill.*{message}"):
        parse_eval_config(data, tmp_path)


def test_the_language_model_task_refuses_distillation(tmp_path: Path) -> None:
    data = _eval_config(tmp_path, task="language_model", model={"distill": {"alpha": 0.5}})
    data["eval"]["selectors"] = [{"name": "random"}]
    with pytest.raises(ConfigError, match="distillation is for the classifier task"):
        parse_eval_config(data, tmp_path)


# -- does distillation change which selector wins? -----------------------------------------


def _results(means: dict[str, tuple[float, float]], rate: float = 0.5) -> pd.DataFrame:
    """Two seeds per selector at ``rate`` (mean ± 0.01), and a full-data model."""
    rows = [
        {"selector": s, "prune_rate": rate, "seed": seed, "accuracy": m + d}
        for s, pair in means.items()
        for seed, (m, d) in enumerate([(pair[0], -0.01), (pair[1], 0.01)])
    ]
    rows += [{"selector": "full", "prune_rate": 0.0, "seed": s, "accuracy": 0.99} for s in (0, 1)]
    frame = pd.DataFrame(rows).assign(label_noise=0.0)
    return frame.assign(fraction_kept=1.0 - frame["prune_rate"])


def test_rankings_without_and_with_distillation_side_by_side() -> None:
    without = _results({"random": (0.70, 0.70), "ccs": (0.80, 0.78), "topk": (0.75, 0.75)})
    distilled = _results({"random": (0.90, 0.90), "ccs": (0.86, 0.88), "topk": (0.91, 0.93)})
    table = distill_rankings(without, distilled)
    assert list(table.columns) == RANKING_COLUMNS
    assert set(table["prune_rate"]) == {0.5} and "full" not in set(table["selector"])
    assert table["selector"].tolist() == ["ccs", "topk", "random"]  # the order without
    assert table["rank_without"].tolist() == [1, 2, 3]
    assert table["rank_with"].tolist() == [3, 1, 2]
    by = table.set_index("selector")
    assert by.loc["ccs", "mean_without"] == pytest.approx(0.79)
    assert by.loc["ccs", "margin_without"] == pytest.approx(0.09)  # paired over the two seeds
    assert by.loc["ccs", "margin_with"] == pytest.approx(-0.03)
    assert by.loc["topk", "margin_with"] == pytest.approx(0.02)
    assert by.loc["random", "margin_with"] == 0.0
    winners = distill_winners(table)
    assert winners[["prune_rate", "best_without", "best_with", "changed"]].values.tolist() == [
        [0.5, "ccs", "topk", True]
    ]
