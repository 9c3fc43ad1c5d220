"""Redaction of personal data in the published text (``thresher.pii``, ``materialize.redact``).

Planted addresses and numbers of every kind are each replaced exactly once;
look-alikes (versions, dates, times, prices, ISBNs, ids, file names) are
left alone, also when both are mixed in one document; the counts per row
are the replacements made. One small end-to-end run per engine checks that
only the published text changes (ingested shards, scores and decisions
stay as they were), that the counts column and the manifest agree, and that
a run without ``materialize.redact`` publishes the text byte for byte.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, get_args

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from thresher.config import RedactKind, parse_config
from thresher.errors import ConfigError
from thresher.pii import KINDS, PLACEHOLDERS, counts_type, redact, redact_text
from thresher.runs import load_run

#: Addresses and numbers that must each be replaced once, by kind.
PLANTED: dict[str, list[str]] = {
    "email": [
        "john.doe@example.com",
        "jane+newsletter@example.org",  # plus-addressing
        "first.last@mail.eng.example.co.uk",  # subdomains
        "ADMIN@Example.COM",
        "user_name-1@my-domain.example.net",
        "x@163.com",  # a domain of digits
        "support@box.com",  # a label ending in x
        "a.b.c@d-e.info",
    ],
    "ip": [
        "192.168.1.20",
        "8.8.8.8",
        "255.255.255.255",
        "10.0.0.1",
        "203.0.113.7",
        "2001:0db8:85a3:0000:0000:8a2e:0370:7334",  # IPv6, full
        "fe80:0:0:0:202:b3ff:fe1e:8329",
        "2001:db8:85a3::8a2e:370:7334",  # compressed
        "2001:db8::1",
        "2001:db8:1::",
        "::ffff:192.0.2.128",  # an IPv4 tail
        "64:ff9b::192.0.2.33",
    ],
    "phone": [
        "(555) 123-4567",  # US
        "555-123-4567",
        "555.123.4567",
        "1-800-555-0199",
        "+1 (555) 123-4567",
        "+1-555-123-4567",
        "+44 20 7946 0958",  # UK
        "020 7946 0958",
        "(020) 7946 0958",
        "07700 900123",
        "+44 7700 900123",
        "01 23 45 67 89",  # France
        "06.12.34.56.78",
        "+33 1 23 45 67 89",
        "+33 (0)1 23 45 67 89",
        "+49 30 1234567",  # elsewhere
        "+86 10 1234 5678",
        "+91-98765-43210",
        "+15551234567",
    ],
}

#: What looks like one of them and is not: never replaced.
LOOK_ALIKES = [
    # versions
    "3.10.12",
    "1.2.3.4.5",
    "v10.0.0.1",
    "10.0.0.1.2",
    "Python 2.7.18",
    # dates and times
    "2024-01-15",
    "15/01/2024",
    "01.02.2024",
    "2024.01.15",
    "01-15-2024",
    "10:30",
    "12:30:45",
    "2024-01-15T10:30:45Z",
    "10:30:45.123",
    # prices and numbers in text
    "$1,234.56",
    "1,234,567.89",
    "1 234 567",
    "3.14159265",
    "+1000",
    "+12.5%",
    "-40.5",
    # ISBNs and ids
    "978-0-306-40615-7",
    "ISBN 0-306-40615-2",
    "978 0 306 40615 7",
    "0306406152",
    "1234567890123",
    "5551234567",
    # not e-mail addresses
    "user@",
    "@handle",
    "user@localhost",
    "logo@2x.png",
    "a@b.c",
    "user@example.com2",
    # file names and not IP addresses
    "a.b.c.d.txt",
    "1.2.3.4.txt",
    "256.1.1.1",
    "192.168.001.001",
    "std::vector",
    "a[1::2]",
    "::1",
    "fe80::1",
    "00:1a:2b:3c:4d:5e",
]

ALL_PLANTED = [(kind, item) for kind, items in PLANTED.items() for item in items]


def test_kinds_agree_with_the_config() -> None:
    assert tuple(get_args(RedactKind)) == KINDS == tuple(PLACEHOLDERS)


@pytest.mark.parametrize(("kind", "item"), ALL_PLANTED, ids=[item for _, item in ALL_PLANTED])
def test_each_planted_item_is_replaced_once(kind: str, item: str) -> None:
    text = f"Contact: {item}. Thanks"
    redacted, counts = redact_text(text)
    assert redacted == f"Contact: {PLACEHOLDERS[kind]}. Thanks"
    assert counts == {k: int(k == kind) for k in KINDS}


@pytest.mark.parametrize("item", LOOK_ALIKES)
def test_look_alikes_are_left_alone(item: str) -> None:
    text = f"see {item} here, and ({item})\n{item}"
    assert redact_text(text) == (text, dict.fromkeys(KINDS, 0))


def test_only_the_listed_kinds_are_replaced() -> None:
    text = "mail a.b@example.com from 10.0.0.1 or call 555-123-4567"
    assert redact_text(text, ["phone"]) == (
        "mail a.b@example.com from 10.0.0.1 or call <PHONE>",
        {"phone": 1},
    )
    assert redact_text(text, ["ip", "email"]) == (
        "mail <EMAIL> from <IP> or call 555-123-4567",
        {"email": 1, "ip": 1},
    )


def test_neighbours_and_placeholders_already_in_the_text() -> None:
    # Addresses one character apart (a match holds its neighbour: the second pass finds it),
    # and a placeholder the text already had is neither counted nor lost.
    text = "<IP> 1.1.1.1,2.2.2.2 3.3.3.3;4.4.4.4 [2001:db8::1]:80 <EMAIL>"
    redacted, counts = redact_text(text)
    assert redacted == "<IP> <IP>,<IP> <IP>;<IP> [<IP>]:80 <EMAIL>"
    assert counts == {"email": 0, "ip": 5, "phone": 0}


def test_arrays_keep_their_type_nulls_and_length() -> None:
    texts = pa.chunked_array(
        [["a@example.com and b@example.com", None], ["", "10.0.0.1"]], pa.large_string()
    )
    redacted, counts = redact(texts, ["ip", "email"])
    assert redacted.type == pa.large_string()
    assert redacted.to_pylist() == ["<EMAIL> and <EMAIL>", None, "", "<IP>"]
    assert counts.type == counts_type(["email", "ip"])
    assert counts.to_pylist() == [
        {"email": 2, "ip": 0},
        {"email": 0, "ip": 0},
        {"email": 0, "ip": 0},
        {"email": 0, "ip": 1},
    ]


_SEPARATORS = st.sampled_from([",", ";", "\n", ", ", "; ", " | ", " and ", " (", ") "])


@given(
    st.lists(
        st.one_of(
            st.sampled_from(ALL_PLANTED),
            st.sampled_from(LOOK_ALIKES).map(lambda item: ("", item)),
            st.sampled_from(["word", "Tel:", "IP", "mail:"]).map(lambda item: ("", item)),
        ),
        min_size=1,
        max_size=12,
    ),
    st.lists(_SEPARATORS, min_size=12, max_size=12),
)
def test_mixed_documents_replace_exactly_the_planted_items(
    parts: list[tuple[str, str]], separators: list[str]
) -> None:
    text = expected = ""
    counts = dict.fromkeys(KINDS, 0)
    for (kind, item), separator in zip(parts, separators, strict=False):
        text += item + separator
        expected += (PLACEHOLDERS[kind] if kind else item) + separator
        if kind:
            counts[kind] += 1
    assert redact_text(text) == (expected, counts)


# -- configuration -----------------------------------------------------------------------------


def test_config_section_is_optional_and_checked(tmp_path: Path) -> None:
    base = {"run_dir": str(tmp_path / "run"), "input": {"paths": [str(tmp_path / "*.jsonl")]}}
    absent = parse_config(base)
    assert absent.materialize is None
    assert "materialize" not in absent.recorded_dict()  # the hash of older configs is kept
    present = parse_config({**base, "materialize": {"redact": ["phone", "email"]}})
    assert present.recorded_dict()["materialize"] == {
        "redact": ["phone", "email"],
        "column": "redactions",
    }
    assert present.config_hash() != absent.config_hash()
    bad = {
        "redact: [ssn]": ({"redact": ["ssn"]}, "materialize.redact.0"),
        "twice": ({"redact": ["ip", "ip"]}, "listed twice"),
        "role column": ({"redact": ["ip"], "column": "text"}, "already an output column"),
        "bad name": ({"column": "a-b"}, "materialize.column"),
    }
    for section, message in bad.values():
        with pytest.raises(ConfigError, match=message):
            parse_config({**base, "materialize": section})
    with pytest.raises(ConfigError, match="needs document text"):
        parse_config(
            {
                **base,
                "schema": {"text": None, "features": "pixels"},
                "materialize": {"redact": ["email"]},
            }
        )


# -- end to end --------------------------------------------------------------------------------

#: Documents of the end-to-end corpus: (text, email, ip, phone) counts planted in each.
_DOCUMENTS = [
    ("Write to john.doe@example.com or jane+news@mail.example.org today.", 2, 0, 0),
    ("The server 192.168.1.20 and 2001:db8::1 answered; see version 3.10.12.", 0, 2, 0),
    ("Call +44 20 7946 0958 or (555) 123-4567 before 2024-01-15 at 10:30.", 0, 0, 2),
    ("Nothing personal here: the price is $1,234.56 and ISBN 978-0-306-40615-7.", 0, 0, 0),
    ("Mail admin@example.net from 10.0.0.1, phone 01 23 45 67 89.", 1, 1, 1),
]


def _corpus(directory: Path) -> Path:
    """A JSONL corpus: the documents above, each repeated with a distinct id and filler."""
    directory.mkdir()
    with (directory / "shard-0.jsonl").open("w") as out:
        for i in range(40):
            text, *_ = _DOCUMENTS[i % len(_DOCUMENTS)]
            filler = " ".join(["words"] * (i % 7 + 3))
            out.write(json.dumps({"id": f"doc-{i:03d}", "text": f"{text} {filler}"}) + "\n")
    return directory


def _config(tmp_path: Path, corpus: Path, name: str, engine: str, **extra: Any) -> Any:
    return parse_config(
        {
            "run_dir": str(tmp_path / name),
            "seed": 1,
            "input": {"paths": [str(corpus / "*.jsonl")]},
            "schema": {"id": "id", "text": "text"},
            "scorers": [{"name": "word_count"}],
            "selector": {"name": "random", "budget": 0.75},
            "engine": {"kind": engine, **({"workers": 2} if engine == "local" else {})},
            **extra,
        },
        base_dir=tmp_path,
    )


def _expected(text: str) -> tuple[str, dict[str, int]]:
    """The planted counts of a corpus document, and the text it is published as."""
    for planted, email, ip, phone in _DOCUMENTS:
        if text.startswith(planted):
            counts = {"email": email, "ip": ip, "phone": phone}
            break
    redacted = text
    for kind, items in PLANTED.items():
        for item in items:
            redacted = redacted.replace(item, PLACEHOLDERS[kind])
    for item in ("jane+news@mail.example.org", "admin@example.net"):
        redacted = redacted.replace(item, PLACEHOLDERS["email"])
    return redacted, counts


@pytest.mark.usefixtures("prefect_server")
@pytest.mark.spark
def test_runs_redact_only_the_published_text_alike_on_both_engines(
    tmp_path: Path, spark: Any
) -> None:
    from thresher.flows.curate import curate

    corpus = _corpus(tmp_path / "corpus")
    redacting = {"materialize": {"redact": ["email", "ip", "phone"]}}
    curate(_config(tmp_path, corpus, "plain", "local"))
    curate(_config(tmp_path, corpus, "local", "local", **redacting))
    curate(_config(tmp_path, corpus, "spark", "spark", **redacting))

    source = {
        row["id"]: row["text"]
        for row in map(json.loads, (corpus / "shard-0.jsonl").read_text().splitlines())
    }
    plain = load_run(tmp_path / "plain")
    assert "redactions" not in plain.data.column_names
    assert "redactions" not in (plain.manifest or {})
    for row in plain.data.to_pylist():  # off by default: the text as it came, byte for byte
        assert row["text"] == source[row["id"]]

    published = {}
    for name in ("local", "spark"):
        run = load_run(tmp_path / name)
        data = run.data.sort_by("id")
        assert data.schema.field("redactions").type == counts_type(KINDS)
        rows = data.to_pylist()
        assert len(rows) == 30
        for row in rows:
            text, counts = _expected(source[row["id"]])
            assert row["text"] == text
            assert row["redactions"] == counts
        # Only the published text changes: stored scores and decisions are the plain run's.
        assert run.scores.sort_by("id").equals(plain.scores.sort_by("id"))
        assert run.selection.sort_by("id").equals(plain.selection.sort_by("id"))
        ingested = pq.read_table(tmp_path / name / "ingested", columns=["id", "text"])
        assert dict(zip(*ingested.to_pydict().values(), strict=True)) == source
        manifest = run.manifest or {}
        totals = {kind: sum(row["redactions"][kind] for row in rows) for kind in KINDS}
        assert manifest["redactions"] == {
            "column": "redactions",
            "placeholders": PLACEHOLDERS,
            "counts": totals,
            "documents": sum(1 for row in rows if any(row["redactions"].values())),
        }
        assert all(totals.values())  # every kind was found in the published rows
        assert manifest["counts"]["reconciles"]
        published[name] = data.select(["id", "text", "redactions"])
    assert published["local"].equals(published["spark"])
    assert pc.sum(pc.count_substring(published["local"].column("text"), "<IP>")).as_py() > 0
