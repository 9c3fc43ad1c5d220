"""A deterministic, realistic sample corpus: something real for every stage to do.

Documents on five topics (the label column ``topic``), plus what real web
corpora carry: near-duplicates (edited copies of earlier documents, some in
other shards), exact copies, boilerplate spam with repeated lines,
gibberish, very short fragments, and a few unusable rows (invalid UTF-8,
broken JSON lines, empty or missing text, null ids). Shards are written as
Parquet, JSONL and JSONL.gz.

Alongside the shards (names starting with ``_``, so input globs skip them):

- ``_truth.parquet``: id, kind and, for copies, the id of the original;
- ``_reference_clean.txt``: clean documents that are not in the corpus, one
  per line (positive examples for a quality classifier).

Run ``python -m thresher.examples.sample_corpus OUT_DIR [--documents N --shards K --seed S]``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

TOPICS: dict[str, dict[str, list[str]]] = {
    "science": {
        "nouns": [
            "experiment",
            "hypothesis",
            "molecule",
            "galaxy",
            "protein",
            "telescope",
            "sample",
            "theory",
            "laboratory",
            "enzyme",
            "particle",
            "climate",
            "model",
            "cell",
            "genome",
            "orbit",
            "reaction",
            "fossil",
            "species",
            "instrument",
            "measurement",
            "signal",
            "detector",
            "crystal",
            "neuron",
            "planet",
            "isotope",
            "microscope",
            "dataset",
        ],
        "verbs": [
            "measured",
            "observed",
            "tested",
            "predicted",
            "confirmed",
            "analysed",
            "revealed",
            "detected",
            "modelled",
            "replicated",
            "isolated",
            "quantified",
            "simulated",
            "compared",
            "recorded",
        ],
        "adjectives": [
            "precise",
            "novel",
            "stable",
            "radioactive",
            "microscopic",
            "distant",
            "complex",
            "unexpected",
            "statistical",
            "molecular",
            "thermal",
            "genetic",
            "experimental",
            "faint",
            "robust",
        ],
        "people": [
            "researchers",
            "physicists",
            "the team",
            "biologists",
            "astronomers",
            "chemists",
            "the authors",
            "graduate students",
            "the lab",
        ],
    },
    "sports": {
        "nouns": [
            "match",
            "season",
            "striker",
            "goalkeeper",
            "tournament",
            "coach",
            "league",
            "final",
            "defence",
            "stadium",
            "penalty",
            "captain",
            "trophy",
            "injury",
            "squad",
            "transfer",
            "fixture",
            "champion",
            "marathon",
            "sprint",
            "referee",
            "midfield",
            "title",
            "record",
            "podium",
        ],
        "verbs": [
            "won",
            "lost",
            "defended",
            "scored",
            "trained",
            "celebrated",
            "dominated",
            "equalised",
            "qualified",
            "conceded",
            "signed",
            "injured",
            "coached",
            "secured",
            "clinched",
        ],
        "adjectives": [
            "decisive",
            "dramatic",
            "young",
            "experienced",
            "unbeaten",
            "tired",
            "brilliant",
            "late",
            "defensive",
            "attacking",
            "historic",
            "narrow",
            "crowded",
            "loyal",
            "fierce",
        ],
        "people": [
            "the fans",
            "the players",
            "the manager",
            "supporters",
            "the squad",
            "the coaching staff",
            "commentators",
            "the veterans",
            "the rookies",
        ],
    },
    "cooking": {
        "nouns": [
            "recipe",
            "dough",
            "sauce",
            "oven",
            "garlic",
            "butter",
            "broth",
            "onion",
            "skillet",
            "pastry",
            "spice",
            "flour",
            "dessert",
            "marinade",
            "salad",
            "noodle",
            "roast",
            "herb",
            "pepper",
            "lemon",
            "tomato",
            "vinegar",
            "crust",
            "stew",
            "casserole",
        ],
        "verbs": [
            "simmered",
            "baked",
            "whisked",
            "roasted",
            "seasoned",
            "chopped",
            "kneaded",
            "braised",
            "tasted",
            "stirred",
            "grilled",
            "sliced",
            "folded",
            "marinated",
            "reduced",
        ],
        "adjectives": [
            "crispy",
            "tender",
            "savory",
            "fragrant",
            "creamy",
            "golden",
            "rustic",
            "smoky",
            "tangy",
            "fresh",
            "homemade",
            "spicy",
            "delicate",
            "hearty",
            "buttery",
        ],
        "people": [
            "the chef",
            "home cooks",
            "bakers",
            "the kitchen staff",
            "grandmother",
            "the apprentice",
            "food writers",
            "the guests",
        ],
    },
    "finance": {
        "nouns": [
            "market",
            "portfolio",
            "bond",
            "dividend",
            "inflation",
            "currency",
            "index",
            "earnings",
            "investor",
            "budget",
            "loan",
            "mortgage",
            "rate",
            "equity",
            "fund",
            "asset",
            "revenue",
            "deficit",
            "forecast",
            "liquidity",
            "valuation",
            "pension",
            "tariff",
            "yield",
        ],
        "verbs": [
            "rallied",
            "declined",
            "reported",
            "hedged",
            "allocated",
            "borrowed",
            "invested",
            "forecast",
            "rebalanced",
            "audited",
            "raised",
            "cut",
            "diversified",
            "priced",
            "traded",
        ],
        "adjectives": [
            "volatile",
            "quarterly",
            "fiscal",
            "bearish",
            "bullish",
            "cautious",
            "annual",
            "diversified",
            "risky",
            "stable",
            "global",
            "domestic",
            "modest",
            "aggressive",
            "long-term",
        ],
        "people": [
            "analysts",
            "investors",
            "the central bank",
            "traders",
            "economists",
            "the board",
            "shareholders",
            "fund managers",
            "regulators",
        ],
    },
    "travel": {
        "nouns": [
            "journey",
            "itinerary",
            "village",
            "coastline",
            "museum",
            "train",
            "harbour",
            "hostel",
            "passport",
            "valley",
            "cathedral",
            "market",
            "island",
            "ferry",
            "trail",
            "airport",
            "guidebook",
            "border",
            "mountain",
            "lagoon",
            "temple",
            "bridge",
            "festival",
        ],
        "verbs": [
            "explored",
            "visited",
            "wandered",
            "booked",
            "crossed",
            "hiked",
            "discovered",
            "photographed",
            "toured",
            "sailed",
            "climbed",
            "reached",
            "recommended",
            "missed",
            "rented",
        ],
        "adjectives": [
            "scenic",
            "remote",
            "crowded",
            "ancient",
            "quiet",
            "colourful",
            "charming",
            "rugged",
            "sunny",
            "historic",
            "peaceful",
            "bustling",
            "hidden",
            "affordable",
            "breathtaking",
        ],
        "people": [
            "travellers",
            "the guide",
            "backpackers",
            "locals",
            "the tourists",
            "the family",
            "pilgrims",
            "the hikers",
            "our group",
        ],
    },
}

_CONNECTIVES = [
    "However,",
    "Meanwhile,",
    "As a result,",
    "In the end,",
    "Later,",
    "Surprisingly,",
    "At first,",
    "Even so,",
    "Afterwards,",
    "For now,",
]

_TEMPLATES = [
    "{People} {verb} the {adjective} {noun} after a long {noun2}.",
    "The {noun} was {verb} by {people} during the {adjective} {noun2}.",
    "{Connective} {people} {verb} a {adjective} {noun} near the {noun2}.",
    "Nobody expected the {noun} to be so {adjective}, yet {people} {verb} it twice.",
    "According to {people}, the {adjective} {noun} {verb} the {noun2} more than once.",
    "{People} said the {noun2} and the {noun} were both {adjective} this year.",
    "A {adjective} {noun} is what {people} {verb} when the {noun2} changed.",
    "{Connective} the {noun} {verb} the {adjective} {noun2} in a single afternoon.",
    "Few {noun}s are as {adjective} as the one {people} {verb} last week.",
    "The story of the {adjective} {noun} began when {people} {verb} the {noun2}.",
]

_SPAM_LINES = [
    "BUY NOW!!! LIMITED OFFER - 90% OFF ALL ITEMS",
    "Click here >>> http://cheap-deals.example/promo <<<",
    "Subscribe to our newsletter for exclusive coupons",
    "FREE SHIPPING on orders over $10 - today only!!!",
    "Best prices guaranteed. Call 1-800-555-0199 now",
    "Home | About | Contact | Privacy Policy | Terms of Use",
    "Copyright 2024 All rights reserved. Cookies help us deliver our services.",
]

KINDS = ("clean", "near_duplicate", "exact_duplicate", "spam", "gibberish", "short")


def _sentence(rng: random.Random, topic: str) -> str:
    vocab = TOPICS[topic]
    template = rng.choice(_TEMPLATES)
    people = rng.choice(vocab["people"])
    text = template.format(
        People=people[:1].upper() + people[1:],
        people=people,
        verb=rng.choice(vocab["verbs"]),
        adjective=rng.choice(vocab["adjectives"]),
        noun=rng.choice(vocab["nouns"]),
        noun2=rng.choice(vocab["nouns"]),
        Connective=rng.choice(_CONNECTIVES),
    )
    return text[:1].upper() + text[1:]


def clean_document(rng: random.Random, topic: str) -> str:
    """A few paragraphs of topical prose."""
    vocab = TOPICS[topic]
    title = f"The {rng.choice(vocab['adjectives'])} {rng.choice(vocab['nouns'])}".title()
    paragraphs = [
        " ".join(_sentence(rng, topic) for _ in range(rng.randint(3, 6)))
        for _ in range(rng.randint(2, 4))
    ]
    return title + "\n\n" + "\n\n".join(paragraphs)


def edit_document(rng: random.Random, text: str, fraction: float, topic: str) -> str:
    """Replace, delete or insert about ``fraction`` of the words (a near-duplicate)."""
    words = text.split(" ")
    vocab = TOPICS[topic]["nouns"] + TOPICS[topic]["adjectives"]
    for _ in range(max(1, round(fraction * len(words)))):
        position = rng.randrange(len(words))
        action = rng.random()
        if action < 0.6:
            words[position] = rng.choice(vocab)
        elif action < 0.8 and len(words) > 10:
            del words[position]
        else:
            words.insert(position, rng.choice(vocab))
    return " ".join(words)


def spam_document(rng: random.Random) -> str:
    lines = [rng.choice(_SPAM_LINES) for _ in range(rng.randint(6, 14))]
    return "\n".join(lines)


def gibberish_document(rng: random.Random) -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789#@$%&*+=<>/\\|~^"
    tokens = [
        "".join(rng.choice(alphabet) for _ in range(rng.randint(2, 14)))
        for _ in range(rng.randint(30, 120))
    ]
    return " ".join(tokens)


def short_document(rng: random.Random, topic: str) -> str:
    return " ".join(rng.choice(TOPICS[topic]["nouns"]) for _ in range(rng.randint(1, 3)))


def generate_records(n_documents: int, seed: int) -> list[dict[str, Any]]:
    """The documents (without bad rows), each with its ground-truth kind."""
    rng = random.Random(seed)
    topics = sorted(TOPICS)
    records: list[dict[str, Any]] = []
    clean_ids: list[int] = []
    for number in range(n_documents):
        topic = rng.choice(topics)
        draw = rng.random()
        source = None
        if draw < 0.06 and clean_ids:
            kind = "near_duplicate"
            source = rng.choice(clean_ids)
            topic = records[source]["topic"]
            text = edit_document(rng, records[source]["text"], rng.uniform(0.01, 0.06), topic)
        elif draw < 0.075 and clean_ids:
            kind = "exact_duplicate"
            source = rng.choice(clean_ids)
            topic = records[source]["topic"]
            text = records[source]["text"]
        elif draw < 0.125:
            kind, text = "spam", spam_document(rng)
        elif draw < 0.155:
            kind, text = "gibberish", gibberish_document(rng)
        elif draw < 0.175:
            kind, text = "short", short_document(rng, topic)
        else:
            kind, text = "clean", clean_document(rng, topic)
            clean_ids.append(number)
        records.append(
            {
                "id": f"doc-{number:06d}",
                "text": text,
                "topic": topic,
                "url": f"https://{topic}.example.org/articles/{number}",
                "kind": kind,
                "source_id": None if source is None else f"doc-{source:06d}",
            }
        )
    # Near-duplicates and copies usually sit far from their source: shuffle.
    rng.shuffle(records)
    return records


def write_sample_corpus(
    out_dir: str | Path, n_documents: int = 20_000, n_shards: int = 10, seed: int = 0
) -> dict[str, Any]:
    """Write the corpus shards and the ground truth; return a summary."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed + 1)
    records = generate_records(n_documents, seed)
    truth = pa.Table.from_pylist(
        [{k: r[k] for k in ("id", "kind", "source_id", "topic")} for r in records]
    )
    pq.write_table(truth, out / "_truth.parquet")
    reference = [
        clean_document(rng, rng.choice(sorted(TOPICS))).replace("\n", " ") for _ in range(1000)
    ]
    (out / "_reference_clean.txt").write_text("\n".join(reference) + "\n", encoding="utf-8")

    columns = ("id", "text", "topic", "url")
    n_shards = max(n_shards, 3)
    n_parquet = max(1, round(n_shards * 0.6))
    n_jsonl = max(1, (n_shards - n_parquet) // 2)
    bad_rows = 0
    for shard in range(n_shards):
        rows = [{k: r[k] for k in columns} for r in records[shard::n_shards]]
        if shard < n_parquet:
            rows += [
                {"id": f"bad-{shard}-empty", "text": "   ", "topic": "science", "url": None},
                {"id": f"bad-{shard}-null-text", "text": None, "topic": "travel", "url": None},
                {
                    "id": None,
                    "text": "A document that has no id at all.",
                    "topic": "sports",
                    "url": None,
                },
            ]
            bad_rows += 3
            pq.write_table(pa.Table.from_pylist(rows), out / f"shard-{shard:02d}.parquet")
            continue
        lines = [json.dumps(row, ensure_ascii=False).encode() for row in rows]
        lines.insert(len(lines) // 3, b'{"id": "bad-%d-broken", "text": "this line was cut' % shard)
        lines.insert(
            len(lines) // 2,
            b'{"id": "bad-%d-utf8", "text": "caf\xe9 au lait \xff\xfe", "topic": "cooking"}'
            % shard,
        )
        lines.insert(
            2 * len(lines) // 3, b'{"id": "bad-%d-empty", "text": "", "topic": "travel"}' % shard
        )
        lines.insert(len(lines) - 1, b'{"id": "bad-%d-no-text", "topic": "finance"}' % shard)
        bad_rows += 4
        payload = b"\n".join(lines) + b"\n"
        if shard < n_parquet + n_jsonl:
            (out / f"shard-{shard:02d}.jsonl").write_bytes(payload)
        else:
            with gzip.open(out / f"shard-{shard:02d}.jsonl.gz", "wb") as handle:
                handle.write(payload)
    kinds = {kind: sum(r["kind"] == kind for r in records) for kind in KINDS}
    return {
        "documents": n_documents,
        "bad_rows": bad_rows,
        "records": n_documents + bad_rows,
        "shards": n_shards,
        "kinds": kinds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--documents", type=int, default=20_000)
    parser.add_argument("--shards", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    summary = write_sample_corpus(args.out_dir, args.documents, args.shards, args.seed)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
