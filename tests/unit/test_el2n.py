"""EL2N and the training dynamics of the proxy: known answers on planted label noise."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from tests.helpers.proxy_data import SMALL_PROXY, auc, batch_of, noisy_topics, shared_context
from thresher.scorers import make_scorer
from thresher.scorers.el2n import default_epoch, forgetting_events, margins


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> tuple[pa.Table, dict[str, np.ndarray]]:
    table = noisy_topics()
    scorer = make_scorer(
        "el2n",
        {"proxy": SMALL_PROXY, "epoch": 2, "per_epoch": True, "aum": True, "forgetting": True},
    )
    scorer.fit(shared_context(tmp_path_factory, table, "el2n"))
    scorer.setup()
    result = scorer.score(batch_of(table, scorer.input_columns))
    names = [f.name for f in scorer.output_fields("el2n")]
    return table, {name: result.field(i).to_numpy() for i, name in enumerate(names)}


def test_outputs_are_named_after_the_column() -> None:
    scorer = make_scorer("el2n", {"proxy": SMALL_PROXY, "per_epoch": True, "aum": True})
    assert [f.name for f in scorer.output_fields("hard")] == [
        "hard",
        "hard_epoch_1",
        "hard_epoch_2",
        "hard_epoch_3",
        "hard_epoch_4",
        "hard_aum",
    ]
    assert [f.name for f in make_scorer("el2n").output_fields("el2n")] == ["el2n"]


def test_el2n_ranks_mislabelled_rows_above_clean_ones(
    scored: tuple[pa.Table, dict[str, np.ndarray]],
) -> None:
    table, outputs = scored
    flipped = table.column("flipped").to_numpy()
    assert auc(outputs["el2n"], flipped) > 0.95
    assert np.all((outputs["el2n"] >= 0) & (outputs["el2n"] <= np.sqrt(2)))
    np.testing.assert_array_equal(outputs["el2n"], outputs["el2n_epoch_2"])


def test_aum_is_lower_and_forgetting_higher_for_flipped_labels(
    scored: tuple[pa.Table, dict[str, np.ndarray]],
) -> None:
    table, outputs = scored
    flipped = table.column("flipped").to_numpy()
    assert auc(-outputs["el2n_aum"], flipped) > 0.95
    assert outputs["el2n_aum"][flipped].mean() < 0 < outputs["el2n_aum"][~flipped].mean()
    assert auc(outputs["el2n_forgetting"], flipped) > 0.9
    assert outputs["el2n_forgetting"].max() <= SMALL_PROXY["epochs"]


def test_unseen_labels_score_nan(tmp_path_factory: pytest.TempPathFactory) -> None:
    table = noisy_topics()
    scorer = make_scorer("el2n", {"proxy": SMALL_PROXY, "epoch": 2, "aum": True})
    scorer.fit(shared_context(tmp_path_factory, table, "el2n"))
    batch = batch_of(table.slice(0, 3), scorer.input_columns)
    labels = pa.array([batch.column(1)[0].as_py(), "knitting", None])
    result = scorer.score(pa.RecordBatch.from_arrays([batch.column(0), labels], ["text", "label"]))
    for i in range(2):
        values = result.field(i).to_numpy(zero_copy_only=False)
        assert np.isfinite(values[0]) and np.isnan(values[1:]).all()


def test_margins_and_forgetting_known_answers() -> None:
    logits = np.array([[[2.0, 0.5, 1.0]], [[0.0, 3.0, -1.0]]])  # (n=2, K=1, C=3)
    np.testing.assert_allclose(margins(logits, np.array([0, 2])), [[1.0], [-4.0]])
    correct = np.array(
        [
            [True, False, True, False],  # learnt, forgotten twice
            [False, True, True, True],  # learnt once, never forgotten
            [False, False, False, False],  # never learnt: counts as E = 4
            [True, True, True, True],
        ]
    )
    np.testing.assert_array_equal(forgetting_events(correct), [2.0, 0.0, 4.0, 0.0])


def test_epoch_defaults_to_the_first_quarter_and_is_checked() -> None:
    assert [default_epoch(e) for e in (1, 4, 8, 10, 200)] == [1, 1, 2, 3, 50]
    with pytest.raises(ValueError, match=r"el2n\.epoch"):
        make_scorer("el2n", {"proxy": SMALL_PROXY, "epoch": 9})


def test_scorers_run_on_the_cpu_in_float64_with_device_auto(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("checks the CPU path")
    scorer = make_scorer("el2n", {"proxy": SMALL_PROXY, "epoch": 2, "device": "auto"})
    scorer.fit(shared_context(tmp_path_factory, noisy_topics(), "el2n"))
    scorer.setup()
    assert scorer.model_.device == "cpu"
    assert scorer.model_.weights["out.weight"].dtype == torch.float64


@pytest.mark.gpu
def test_proxy_scorers_agree_on_gpu_and_cpu(tmp_path_factory: pytest.TempPathFactory) -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    table = noisy_topics()
    context = shared_context(tmp_path_factory, table, "gpu")
    for name, params in (
        ("el2n", {"epoch": 2, "aum": True, "forgetting": True}),
        ("grand", {"epoch": 2}),
        ("influence", {"projection_dim": 16}),
        ("vog", {}),
        ("embedding", {"source": "proxy"}),
    ):
        results = []
        for device in ("cpu", "cuda"):
            scorer = make_scorer(name, {"proxy": SMALL_PROXY, "device": device, **params})
            scorer.fit(context)
            scorer.setup()
            result = scorer.score(batch_of(table, scorer.input_columns))
            if isinstance(result, pa.StructArray):
                result = result.field(0)
            if pa.types.is_list(result.type):
                result = result.flatten()
            results.append(result.to_numpy())
        # float32 on the GPU against float64 on the CPU
        np.testing.assert_allclose(results[1], results[0], rtol=2e-3, atol=1e-4, err_msg=name)
