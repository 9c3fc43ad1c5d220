"""language scorer (py3langid batched, lingua) and the language_filter selector."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from tests.helpers.batches import text_batch
from thresher.errors import ConfigError
from thresher.examples.sample_corpus import generate_records
from thresher.scorers import make_scorer
from thresher.selectors import make_selector

#: Sentences whose language a reader knows (written for this test).
KNOWN = {
    "en": "The weather was cold, so we stayed at home and read books by the fire all evening.",
    "de": "Das Wetter war kalt, deshalb sind wir zu Hause geblieben und haben den ganzen Abend gelesen.",
    "fr": "Il faisait froid, alors nous sommes restés à la maison et avons lu des livres toute la soirée.",
    "es": "Hacía frío, así que nos quedamos en casa y leímos libros junto al fuego toda la noche.",
    "it": "Faceva freddo, quindi siamo rimasti a casa e abbiamo letto libri accanto al fuoco tutta la sera.",
    "nl": "Het was koud, dus we bleven thuis en lazen de hele avond boeken bij het vuur.",
    "pt": "Estava frio, então ficamos em casa e lemos livros perto da lareira a noite toda.",
    "ru": "Было холодно, поэтому мы остались дома и весь вечер читали книги у камина.",
    "pl": "Było zimno, więc zostaliśmy w domu i przez cały wieczór czytaliśmy książki przy kominku.",
    "sv": "Det var kallt, så vi stannade hemma och läste böcker vid brasan hela kvällen.",
}


def _score(scorer: object, texts: list[str | None]) -> tuple[list[str], np.ndarray]:
    scorer.setup()  # type: ignore[attr-defined]
    result = scorer.score(text_batch(texts).select(["text"]))  # type: ignore[attr-defined]
    return result.field(0).to_pylist(), result.field(1).to_numpy()


@pytest.mark.parametrize("backend", ["py3langid", "lingua"])
def test_known_languages_are_found_with_high_probability(backend: str) -> None:
    if backend == "lingua":
        pytest.importorskip("lingua")
    codes, probabilities = _score(
        make_scorer("language", {"backend": backend}), list(KNOWN.values())
    )
    assert codes == list(KNOWN)
    assert np.all(probabilities > 0.5) and np.all(probabilities <= 1.0)


def test_the_batched_kernel_gives_py3langids_answers() -> None:
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    texts = [r["text"] for r in generate_records(300, seed=3)] + list(KNOWN.values())
    texts += ["SHOUTING IN CAPITALS ONLY", "café crème brûlée", "okay then"]
    codes, probabilities = _score(make_scorer("language"), texts)
    expected = [identifier.classify(text) for text in texts]
    assert codes == [code for code, _ in expected]
    np.testing.assert_allclose(probabilities, [p for _, p in expected], rtol=1e-4, atol=1e-6)
    # where no feature of the model occurs, py3langid answers its flat prior; thresher says so
    assert identifier.classify("ok")[1] == pytest.approx(2 / len(identifier.nb_classes))
    assert _score(make_scorer("language"), ["ok"])[0] == ["und"]


def test_empty_text_is_undetermined_and_long_text_is_cut() -> None:
    scorer = make_scorer("language", {"max_characters": 40})
    english, german = KNOWN["en"], KNOWN["de"]
    codes, probabilities = _score(scorer, ["", "   ", None, english[:40] + german * 20])
    assert codes == ["und", "und", "und", "en"]  # only the first 40 characters are read
    assert probabilities[:3].tolist() == [0.0, 0.0, 0.0]


def test_languages_restricts_the_answer() -> None:
    codes, _ = _score(
        make_scorer("language", {"languages": ["de", "en"]}),
        [KNOWN["nl"], KNOWN["fr"], KNOWN["de"]],
    )
    assert set(codes) <= {"de", "en"} and codes[2] == "de"
    with pytest.raises(ConfigError, match="Unknown language"):
        make_scorer("language", {"languages": ["en", "not-a-language"]}).setup()


def test_scores_do_not_depend_on_the_batch() -> None:
    texts = [r["text"] for r in generate_records(40, seed=4)] + list(KNOWN.values())
    scorer = make_scorer("language")
    codes, probabilities = _score(scorer, texts)
    for i in (0, 7, len(texts) - 1):
        one_code, one_probability = _score(scorer, [texts[i]])
        assert one_code == [codes[i]] and one_probability[0] == probabilities[i]


def _scored_table() -> pa.Table:
    texts = [*KNOWN.values(), "", "Short and English, mostly."]
    codes, probabilities = _score(make_scorer("language"), texts)
    return pa.table(
        {
            "id": [f"d{i}" for i in range(len(texts))],
            "language": codes,
            "language_probability": probabilities,
        }
    )


def test_language_filter_keeps_the_set_above_the_minimum_probability() -> None:
    table = _scored_table()
    codes = table.column("language").to_pylist()
    p = table.column("language_probability").to_numpy()
    selector = make_selector("language_filter", {"languages": ["de", "en"], "min_probability": 0.9})
    kept = selector.select(table).indices.tolist()
    assert kept == [
        i for i, (c, q) in enumerate(zip(codes, p, strict=True)) if c in {"de", "en"} and q >= 0.9
    ]
    assert {codes[i] for i in kept} == {"de", "en"}
    # threshold on the probability alone: confident documents of any language
    confident = make_selector("threshold", {"score": "language_probability", "min": 0.9})
    assert confident.select(table).indices.tolist() == np.flatnonzero(p >= 0.9).tolist()


def test_language_filter_refuses_missing_columns_and_a_budget() -> None:
    table = _scored_table()
    selector = make_selector("language_filter", {"languages": ["en"], "language": "lang"})
    with pytest.raises(ValueError, match="'lang' not found"):
        selector.select(table)
    with pytest.raises(ValueError, match="leave its budget empty"):
        make_selector("language_filter", {"languages": ["en"]}).select(table, budget=3)
    with pytest.raises(ValueError, match="languages"):
        make_selector("language_filter", {"languages": []})


def test_language_filter_reads_any_string_encoding_of_the_codes() -> None:
    probabilities = [0.9, 0.8, 0.9, 0.99]
    selector = make_selector(
        "language_filter", {"languages": ["en", "fr"], "min_probability": 0.85}
    )
    for codes in (
        pa.array(["en", "de", None, "fr"], pa.large_string()),
        pa.array(["en", "de", None, "fr"]).dictionary_encode(),
    ):
        table = pa.table({"language": codes, "language_probability": probabilities})
        assert selector.select(table).indices.tolist() == [0, 3]
