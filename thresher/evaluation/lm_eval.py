"""The language-model task of ``thresher eval``: tokens of the splits, one model per job.

With ``eval.task: language_model`` each (selector, pruning rate, seed)
trains a small decoder-only language model from scratch on its subset
(:mod:`thresher.evaluation.lm_train`) for ``eval.lm.train_tokens`` tokens,
the same for every subset: a subset with fewer tokens is repeated epoch
after epoch (``epochs`` in its result row), as in the pruning papers'
equal-compute protocol. Each model is measured by its mean per-token loss
(nats) on the held-out split of the corpus and on every target set.

The tokenizer is a byte-level BPE (:class:`thresher.models.tokenizer.BPETokenizer`)
trained once per eval on a seeded sample of the training pool; every split
and target set is tokenized once and stored under ``RUN_DIR/run/eval/_lm/``
(one ``.npz`` per split), keyed by the splits and the tokenizer settings.
The training pool is read in the scoring run's input order, the order of
its score table, so a selection's row positions index its documents.

Budgets are token budgets: at pruning rate ``r`` every selector keeps at
most ``(1 - r)`` of the pool's tokens (``{tokens: N}`` on the
``token_count`` column); ``fraction_kept`` in the results is the fraction
of the pool's tokens (under the eval's tokenizer) the subset holds.

References
----------
Marion et al., "When Less is More: Investigating Data Pruning for
Pretraining LLMs at Scale", 2023. Ankner et al., "Perplexed by Perplexity:
Perplexity-Based Data Pruning With Small Reference Models", 2024.
"""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from thresher.errors import RunStateError
from thresher.evaluation.config import EvalConfig, LMEvalConfig
from thresher.evaluation.features import pool_table
from thresher.evaluation.jobs import Job, Seeds, score_table, select_rows
from thresher.evaluation.lm_train import LMTrainSettings, TokenDocs, heldout_loss, train_lm
from thresher.evaluation.splits import SplitPaths, read_split
from thresher.io import schema as S
from thresher.io.files import read_json, write_json_atomic
from thresher.keys import row_key
from thresher.run_dir import RunDir

TOKENIZER_FILE = "tokenizer.json"
TOKENS_RECORD = "tokens.json"
_LOADED: dict[tuple[str, int], TokenDocs] = {}
_LOCK = threading.Lock()


def lm_dir(config: EvalConfig) -> Path:
    """Where the eval's tokenizer and tokenized splits are kept."""
    return RunDir(config.root / "run").eval.as_path() / "_lm"


def measured_sets(config: EvalConfig) -> list[str]:
    """The held-out sets every tested model is measured on: ``test``, then the targets."""
    return ["test", *sorted(config.eval.targets)]


def loss_column(name: str) -> str:
    """The result column holding a set's loss: ``loss`` (test split) or ``loss_<target>``."""
    return "loss" if name == "test" else f"loss_{name}"


def build_tokens(config: EvalConfig, splits_key: dict[str, Any]) -> dict[str, Any]:
    """Train (or reuse) the eval's tokenizer and tokenize every split; return the record."""
    from thresher.evaluation.lm_train import tokenize_documents
    from thresher.models.tokenizer import BPETokenizer

    lm = config.eval.lm
    out = lm_dir(config)
    key = config.digest(
        splits_key, lm.vocab_size, lm.tokenizer_documents, config.run.seed, "tokens-1"
    )
    record_path = out / TOKENS_RECORD
    if record_path.is_file() and read_json(record_path).get("key") == key:
        return dict(read_json(record_path))
    started = time.perf_counter()
    pool = pool_table(RunDir(config.root / "run"), [S.ID, S.TEXT, S.SHARD, S.ROW])
    texts = pool.column(S.TEXT).to_pylist()
    usable = np.flatnonzero([isinstance(t, str) and bool(t.strip()) for t in texts])
    if usable.size == 0:
        raise RunStateError("the language-model eval's training pool holds no text")
    rng = np.random.default_rng(np.random.SeedSequence([config.run.seed, 0x746F6B]))  # "tok"
    sample = np.sort(
        rng.choice(usable, size=min(usable.size, lm.tokenizer_documents), replace=False)
    )
    tokenizer = BPETokenizer.train([texts[i] for i in sample], lm.vocab_size)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save(out / TOKENIZER_FILE)
    paths = SplitPaths(config.root / "splits")
    tables = {
        "train": pool,
        "validation": read_split(paths.validation, [S.TEXT]),
        "test": read_split(paths.test, [S.TEXT]),
        **{
            f"target-{name}": read_split(paths.root / "targets" / f"{name}.parquet", [S.TEXT])
            for name in sorted(config.eval.targets)
        },
    }
    documents, tokens = {}, {}
    for name, table in tables.items():
        docs = tokenize_documents(table.column(S.TEXT).to_pylist(), tokenizer)
        docs.save(out / f"{name}.npz")
        documents[name], tokens[name] = docs.n_docs, docs.n_tokens
    positions = row_key(pool.column(S.SHARD).to_numpy(), pool.column(S.ROW).to_numpy())
    np.save(out / "train_positions.npy", positions)
    record = {
        "key": key,
        "vocab_size": tokenizer.vocab_size,
        "tokenizer_documents": int(sample.size),
        "documents": documents,
        "tokens": tokens,
        "seconds": round(time.perf_counter() - started, 2),
    }
    write_json_atomic(record, record_path)
    return record


def load_docs(config: EvalConfig, name: str) -> TokenDocs:
    """A split's tokenized documents (``train``, ``validation``, ``test``, ``target-<name>``)."""
    path = lm_dir(config) / f"{name}.npz"
    if not path.is_file():
        raise RunStateError(f"{path} is missing: tokenize the eval's splits first")
    cache_key = (str(path), path.stat().st_mtime_ns)
    with _LOCK:
        if cache_key not in _LOADED:
            if len(_LOADED) >= 8:  # an earlier eval's splits: free them
                _LOADED.clear()
            _LOADED[cache_key] = TokenDocs.load(path)
        return _LOADED[cache_key]


def train_settings(
    lm: LMEvalConfig,
    vocab_size: int,
    lr: float,
    base_dir: str | Path = ".",
    warmup: float | None = None,
) -> LMTrainSettings:
    """The training loop's settings for the configured model, learning rate and warm-up.

    ``warmup`` left out is the configured one (else the first of its grid).
    A relative ``hf_config`` is resolved against ``base_dir`` (the config
    file's directory).
    """
    if warmup is None:
        warmup = lm.warmup if lm.warmup is not None else lm.warmup_grid[0]
    hf_config = None if lm.hf_config is None else str(Path(base_dir) / lm.hf_config)
    return LMTrainSettings(
        vocab_size=vocab_size,
        d_model=lm.d_model,
        n_layers=lm.n_layers,
        n_heads=lm.n_heads,
        context_length=lm.context_length,
        train_tokens=lm.train_tokens,
        batch_size=lm.batch_size,
        lr=lr,
        warmup=warmup,
        weight_decay=lm.weight_decay,
        device=lm.device,
        hf_config=hf_config,
    )


def run_lm_job(config: EvalConfig, job: Job) -> dict[str, Any]:
    """Select, train and measure one language model; return its result row."""
    started = time.perf_counter()
    kept, _, step = select_rows(config, job)
    selected = time.perf_counter()
    scores = score_table(config)
    positions = row_key(scores.column(S.SHARD).to_numpy(), scores.column(S.ROW).to_numpy())
    stored = np.load(lm_dir(config) / "train_positions.npy")
    if not np.array_equal(stored, positions):
        raise RunStateError(
            f"{config.root / 'run'}: the eval's tokens do not match the score table; "
            "rerun thresher eval (it tokenizes again)"
        )
    if kept.size == 0:
        raise RunStateError(f"{job.selector} kept no row at pruning rate {job.prune_rate}")
    train = load_docs(config, "train")
    subset = train.take(kept)
    lm = config.eval.lm
    chosen = job.model or {}
    lr = float(chosen.get("lr") or lm.lr or lm.lr_grid[0])
    vocab = int(read_json(lm_dir(config) / TOKENS_RECORD)["vocab_size"])
    seeds = Seeds.of(config.run.seed, job.split, job.seed)
    settings = train_settings(lm, vocab, lr, config.run.base_dir, chosen.get("warmup"))
    trained = train_lm(subset, settings, seeds.model)
    done_training = time.perf_counter()
    sets = ["validation"] if job.split == "validation" else measured_sets(config)
    row: dict[str, Any] = {
        "selector": job.selector,
        "prune_rate": float(job.prune_rate),
        "fraction_kept": subset.n_tokens / max(1, train.n_tokens),
        "seed": int(job.seed),
        "label_noise": 0.0,
    }
    for name in sets:
        docs = load_docs(config, "test" if name == "test" else _split_file(name))
        loss, n_tokens = heldout_loss(trained.model, docs, lm.context_length)
        column = "loss" if name in ("test", "validation") else loss_column(name)
        row[column] = float(loss)
        row[column.replace("loss", "perplexity", 1)] = _perplexity(loss)
        row[column.replace("loss", "tokens", 1) + "_scored"] = int(n_tokens)
    record = trained.record
    row.update(
        {
            "split": job.split,
            "fraction_rows_kept": kept.size / scores.num_rows,
            "n_kept": int(kept.size),
            "n_pool": int(scores.num_rows),
            "tokens_kept": int(subset.n_tokens),
            "pool_tokens": int(train.n_tokens),
            "train_tokens": int(record["tokens_trained"]),
            "epochs": float(record["epochs"]),
            "steps": int(record["steps"]),
            "tokens_per_second": float(record["tokens_per_second"]),
            "final_train_loss": float(record["final_loss"]),
            "diverged": bool(record["diverged"]),
            "device": str(record["device"]),
            "lr": lr,
            "warmup": settings.warmup,
            "params": _params_text(job.params),
            "select_seconds": round(selected - started, 4),
            "train_seconds": round(done_training - selected, 4),
            "eval_seconds": round(time.perf_counter() - done_training, 4),
            "step_kept": int(step["kept"]),
        }
    )
    return row


def _split_file(name: str) -> str:
    return "validation" if name == "validation" else f"target-{name}"


def _perplexity(loss: float) -> float:
    return math.exp(loss) if math.isfinite(loss) and loss < 700 else math.inf


def _params_text(params: dict[str, Any]) -> str:
    import json

    return json.dumps(params, sort_keys=True, default=str)
