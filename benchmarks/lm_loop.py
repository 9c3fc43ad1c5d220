"""The language-model eval's training loop against a textbook loop and a bare torch loop.

Two measurements on real English text (the machine's licence texts in
``/usr/share/common-licenses`` and the docstrings of the Python standard
library, numpy and pandas), tokenized with a byte-level BPE of 4,096 ids
trained on it, 5% of the documents held out:

a) **Loss parity.** :func:`thresher.evaluation.lm_train.train_lm` with a
   given learning rate against a Hugging Face ``GPT2LMHeadModel`` of the
   same size (no dropout) trained by a textbook loop: ``torch.optim.AdamW``,
   the same learning rate, linear warm-up then cosine decay through
   ``LambdaLR``, the same steps, batch and windows. Both models are scored on
   the same held-out text (mean next-token loss, nats); the target is a gap
   within 2%.
b) **Speed.** Tokens per second of ``train_lm`` against a bare loop (the
   same :class:`~thresher.models._transformer.CausalTransformer`, the same
   windows, a plain AdamW step, nothing else), run interleaved A, B, A, B
   in this process; the median ratio is reported (target >= 0.8).

Writes ``benchmarks/results/lm_loop.json`` and prints a table. Needs
``thresher[bench-lm]`` (transformers). Full scale (d_model 128, 2 layers,
4 heads, context 128, about 1M training tokens; a few minutes on 2 cores)::

    python -m benchmarks.lm_loop

Development scale (seconds)::

    python -m benchmarks.lm_loop --quick
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import math
import platform
import statistics
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

import numpy as np

from thresher.evaluation.lm_train import (
    LMTrainSettings,
    TokenDocs,
    heldout_loss,
    tokenize_documents,
    train_lm,
    window_order,
    window_starts,
)
from thresher.models.tokenizer import DOCUMENT, BPETokenizer

RESULTS = Path(__file__).parent / "results" / "lm_loop.json"
LICENSES = Path("/usr/share/common-licenses")
HELDOUT_FRACTION = 0.05
SEED = 0


# -- corpus ---------------------------------------------------------------------------------
def _docstrings(root: Path, skip: tuple[str, ...]) -> list[str]:
    """Module, class and function docstrings of at least 100 characters under ``root``."""
    texts: list[str] = []
    for path in sorted(root.rglob("*.py")):
        if any(part in skip for part in path.relative_to(root).parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                doc = ast.get_docstring(node)
                if doc and len(doc) >= 100:
                    texts.append(doc)
    return texts


def corpus_texts(max_chars: int) -> list[str]:
    """Real English text on this machine, in a fixed order, up to ``max_chars`` characters."""
    seen: set[Path] = set()
    texts: list[str] = []
    for path in sorted(LICENSES.iterdir()) if LICENSES.is_dir() else []:
        real = path.resolve()
        if real.is_file() and real not in seen:
            seen.add(real)
            texts.append(real.read_text(encoding="utf-8", errors="replace"))
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    skip = ("site-packages", "test", "tests", "idlelib", "lib2to3")
    texts += _docstrings(stdlib, skip)
    purelib = Path(sysconfig.get_paths()["purelib"])
    for package in ("numpy", "pandas"):
        if (purelib / package).is_dir():
            texts += _docstrings(purelib / package, ("tests", "_vendored"))
    kept, total = [], 0
    for text in texts:
        if total >= max_chars:
            break
        kept.append(text)
        total += len(text)
    return kept


def prepare(
    max_chars: int, vocab_size: int
) -> tuple[BPETokenizer, TokenDocs, TokenDocs, dict[str, Any]]:
    """Tokenizer, training documents and held-out documents (5% of documents, seeded)."""
    started = time.perf_counter()
    texts = corpus_texts(max_chars)
    order = np.random.default_rng(SEED).permutation(len(texts))
    n_heldout = max(1, int(len(texts) * HELDOUT_FRACTION))
    train_positions, heldout_positions = np.sort(order[n_heldout:]), np.sort(order[:n_heldout])
    sample = [texts[i] for i in train_positions]
    # The tokenizer learns its merges from the first million characters of the training texts.
    budget, cut = 1_000_000, 0
    while cut < len(sample) and budget > 0:
        budget -= len(sample[cut])
        cut += 1
    tokenizer = BPETokenizer.train(sample[:cut], vocab_size=vocab_size)
    docs = tokenize_documents(texts, tokenizer)
    train, heldout = docs.take(train_positions), docs.take(heldout_positions)
    info = {
        "documents": len(texts),
        "characters": sum(map(len, texts)),
        "train_tokens_available": train.n_tokens,
        "heldout_tokens": heldout.n_tokens,
        "vocab_size": tokenizer.vocab_size,
        "prepare_seconds": round(time.perf_counter() - started, 1),
    }
    return tokenizer, train, heldout, info


# -- the reference loops ----------------------------------------------------------------------
def _batches(docs: TokenDocs, settings: LMTrainSettings, seed: int) -> Any:
    """The windows ``train_lm`` trains on, batch by batch: tensor (steps, batch, context + 1)."""
    import torch

    starts, window = window_starts(docs.n_tokens, settings.context_length)
    order = window_order(len(starts), settings.steps * settings.batch_size, seed)
    index = starts[order].reshape(settings.steps, settings.batch_size)[:, :, None] + np.arange(
        window
    )
    return torch.from_numpy(docs.ids[index].astype(np.int64))


def train_gpt2(docs: TokenDocs, settings: LMTrainSettings, seed: int) -> tuple[Any, float]:
    """A Hugging Face GPT-2 of the same size, trained by a textbook AdamW loop; (model, seconds)."""
    import torch
    import torch.nn.functional as F
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=settings.vocab_size,
        n_positions=settings.context_length,
        n_embd=settings.d_model,
        n_layer=settings.n_layers,
        n_head=settings.n_heads,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=DOCUMENT,
        eos_token_id=DOCUMENT,
    )
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config)
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=settings.lr,
        betas=(0.9, 0.95),
        weight_decay=settings.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(settings))
    batches = _batches(docs, settings, seed)
    model.train()
    started = time.perf_counter()
    for batch in batches:
        logits = model(input_ids=batch[:, :-1]).logits
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
        optimizer.step()
        scheduler.step()
    seconds = time.perf_counter() - started
    return model.eval(), seconds


def gpt2_heldout_loss(model: Any, docs: TokenDocs, context_length: int) -> tuple[float, int]:
    """Mean next-token loss of a Hugging Face model, each token predicted once (own code)."""
    import torch
    import torch.nn.functional as F

    ids = torch.from_numpy(docs.ids.astype(np.int64))
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(ids) - 1, context_length):
            window = ids[start : start + context_length + 1][None]
            logits = model(input_ids=window[:, :-1]).logits
            total += float(F.cross_entropy(logits[0].double(), window[0, 1:], reduction="sum"))
            count += window.shape[1] - 1
    return total / count, count


def bare_loop(docs: TokenDocs, settings: LMTrainSettings, seed: int) -> float:
    """Tokens per second of the plainest loop: same network and windows, AdamW, nothing else."""
    import torch
    import torch.nn.functional as F

    from thresher.models._transformer import CausalTransformer, TransformerConfig

    torch.manual_seed(seed)
    model = CausalTransformer(
        TransformerConfig(
            vocab_size=settings.vocab_size,
            d_model=settings.d_model,
            n_layers=settings.n_layers,
            n_heads=settings.n_heads,
            context_length=settings.context_length,
        )
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr)
    batches = _batches(docs, settings, seed)
    model.train()
    started = time.perf_counter()
    for batch in batches:
        logits, _ = model(batch[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    seconds = time.perf_counter() - started
    return batches[:, :, 1:].numel() / seconds


def our_model_textbook(docs: TokenDocs, settings: LMTrainSettings, seed: int) -> Any:
    """The eval's network (initialised as ``train_lm`` does) trained by the textbook loop."""
    import torch
    import torch.nn.functional as F

    from thresher.evaluation.lm_train import _build_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _build_model(settings)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=settings.lr, betas=(0.9, 0.95), weight_decay=settings.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(settings))
    model.train()
    for batch in _batches(docs, settings, seed):
        logits, _ = model(batch[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
        optimizer.step()
        scheduler.step()
    return model.eval()


def loss_parity(
    train: TokenDocs, heldout: TokenDocs, settings: LMTrainSettings, seeds: int
) -> dict[str, Any]:
    """Held-out loss of the eval's loop against GPT-2 in a textbook loop, over ``seeds`` seeds.

    Two cross runs split a gap into its causes: the eval's network in the
    textbook loop (the loop's share) and, through ``hf_config``, the same
    GPT-2 trained by the eval's loop.
    """
    import tempfile

    from transformers import GPT2Config

    rows = []
    for seed in range(SEED, SEED + seeds):
        trained = train_lm(train, settings, seed)
        ours, n_scored = heldout_loss(trained.model, heldout, settings.context_length)
        gpt2, gpt2_seconds = train_gpt2(train, settings, seed)
        theirs, n_theirs = gpt2_heldout_loss(gpt2, heldout, settings.context_length)
        assert n_theirs == n_scored
        rows.append(
            {
                "seed": seed,
                "train_lm": ours,
                "gpt2_textbook": theirs,
                "train_lm_seconds": trained.record["train_seconds"],
                "gpt2_seconds": round(gpt2_seconds, 1),
            }
        )
    ours_textbook = our_model_textbook(train, settings, SEED)
    cross_ours, _ = heldout_loss(ours_textbook, heldout, settings.context_length)
    with tempfile.TemporaryDirectory() as directory:
        config = Path(directory) / "config.json"
        GPT2Config(
            vocab_size=settings.vocab_size,
            n_positions=settings.context_length,
            n_embd=settings.d_model,
            n_layer=settings.n_layers,
            n_head=settings.n_heads,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
        ).to_json_file(str(config))
        hf = train_lm(train, dataclasses.replace(settings, hf_config=str(config)), SEED)
        cross_gpt2, _ = heldout_loss(hf.model, heldout, settings.context_length)
    ours_mean = statistics.mean(r["train_lm"] for r in rows)
    gpt2_mean = statistics.mean(r["gpt2_textbook"] for r in rows)
    first = rows[0]
    return {
        "seeds": rows,
        "train_lm_heldout_loss": ours_mean,
        "gpt2_heldout_loss": gpt2_mean,
        "train_lm_std": statistics.stdev(r["train_lm"] for r in rows) if seeds > 1 else 0.0,
        "gpt2_std": statistics.stdev(r["gpt2_textbook"] for r in rows) if seeds > 1 else 0.0,
        "relative_gap": (ours_mean - gpt2_mean) / gpt2_mean,
        "tokens_scored": n_scored,
        "train_lm_record": trained.record,
        # the same network in both loops: what the loop alone changes
        "eval_network_textbook_loop": cross_ours,
        "eval_network_eval_loop": first["train_lm"],
        "loop_gap_eval_network": (first["train_lm"] - cross_ours) / cross_ours,
        "gpt2_eval_loop": cross_gpt2,
        "gpt2_textbook_loop": first["gpt2_textbook"],
        "loop_gap_gpt2": (cross_gpt2 - first["gpt2_textbook"]) / first["gpt2_textbook"],
    }


def _schedule(settings: LMTrainSettings) -> Any:
    """The LambdaLR factor of the textbook loops: linear warm-up, cosine to ``min_lr``."""
    steps = settings.steps
    warmup = math.ceil(settings.warmup * steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        cosine = 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))
        return settings.min_lr + (1 - settings.min_lr) * cosine

    return factor


# -- main -------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small run (seconds)")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--train-tokens", type=int, default=None)
    parser.add_argument("--speed-tokens", type=int, default=None)
    parser.add_argument("--seeds", type=int, default=3, help="models per loop for the parity")
    parser.add_argument("--rounds", type=int, default=3, help="A, B rounds of the speed check")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    import torch
    import transformers

    quick = args.quick
    shape = (
        {"d_model": 64, "n_layers": 1, "n_heads": 4, "context_length": 64}
        if quick
        else {"d_model": 128, "n_layers": 2, "n_heads": 4, "context_length": 128}
    )
    train_tokens = args.train_tokens or (100_000 if quick else 1_000_000)
    speed_tokens = args.speed_tokens or (30_000 if quick else 100_000)
    tokenizer, train, heldout, info = prepare(
        max_chars=600_000 if quick else 3_000_000, vocab_size=1024 if quick else 4096
    )
    settings = LMTrainSettings(
        vocab_size=tokenizer.vocab_size,
        train_tokens=train_tokens,
        lr=args.lr,
        device="cpu",
        **shape,  # type: ignore[arg-type]
    )
    print(
        f"corpus: {info['documents']:,} documents, {info['train_tokens_available']:,} training "
        f"and {info['heldout_tokens']:,} held-out tokens (prepared in {info['prepare_seconds']} s)"
    )

    parity = loss_parity(train, heldout, settings, args.seeds)

    speed_settings = dataclasses.replace(settings, train_tokens=speed_tokens)
    rounds = []
    for _ in range(args.rounds):  # A, B, A, B, ...
        a = train_lm(train, speed_settings, SEED).record["tokens_per_second"]
        b = bare_loop(train, speed_settings, SEED)
        rounds.append(
            {"train_lm_tokens_per_second": a, "bare_tokens_per_second": b, "ratio": a / b}
        )
    speed = {
        "rounds": rounds,
        "median_ratio": statistics.median(r["ratio"] for r in rounds),
        "torch_threads": torch.get_num_threads(),
        "steps": speed_settings.steps,
    }

    result = {
        "scale": "quick" if quick else "default",
        "settings": {k: v for k, v in dataclasses.asdict(settings).items() if v is not None},
        "steps": settings.steps,
        "corpus": info,
        "parity": parity,
        "speed": speed,
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "cpu": platform.processor() or platform.machine(),
        },
    }
    print(render(result))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.output}")
    return result


def render(result: dict[str, Any]) -> str:
    parity, speed, s = result["parity"], result["speed"], result["settings"]
    record = parity["train_lm_record"]
    lines = [
        f"LM loop ({result['scale']}): d_model {s['d_model']}, {s['n_layers']} layers, "
        f"{s['n_heads']} heads, context {s['context_length']}, batch {s['batch_size']}, "
        f"{result['steps']} steps ({record['tokens_trained']:,} tokens, "
        f"{record['epochs']:.2f} epochs), lr {s['lr']}",
        "",
        f"| model, loop | held-out loss (nats), mean ± std over {len(parity['seeds'])} seeds |",
        "|---|---:|",
        f"| eval's network, eval's loop (train_lm) | {parity['train_lm_heldout_loss']:.4f} "
        f"± {parity['train_lm_std']:.4f} |",
        f"| GPT2LMHeadModel, textbook AdamW loop | {parity['gpt2_heldout_loss']:.4f} "
        f"± {parity['gpt2_std']:.4f} |",
        f"relative gap: {100 * parity['relative_gap']:+.2f}% (target within 2%) "
        f"on {parity['tokens_scored']:,} held-out tokens",
        "",
        "The loop alone (one seed, the same network in both loops):",
        "",
        "| network | eval's loop | textbook loop | gap |",
        "|---|---:|---:|---:|",
        f"| eval's CausalTransformer | {parity['eval_network_eval_loop']:.6f} | "
        f"{parity['eval_network_textbook_loop']:.6f} | {100 * parity['loop_gap_eval_network']:+.4f}% |",
        f"| GPT2LMHeadModel (hf_config) | {parity['gpt2_eval_loop']:.6f} | "
        f"{parity['gpt2_textbook_loop']:.6f} | {100 * parity['loop_gap_gpt2']:+.4f}% |",
        "",
        "| round | train_lm tokens/s | bare loop tokens/s | ratio |",
        "|---|---:|---:|---:|",
    ]
    for i, r in enumerate(speed["rounds"], 1):
        lines.append(
            f"| {i} | {r['train_lm_tokens_per_second']:,.0f} | {r['bare_tokens_per_second']:,.0f} "
            f"| {r['ratio']:.2f} |"
        )
    lines.append(
        f"median ratio: {speed['median_ratio']:.2f} (target >= 0.8; {speed['steps']} steps per run, "
        f"{speed['torch_threads']} torch threads)"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main(sys.argv[1:])
