"""Scorers, registered by name. Adding one: its module, one line below, its test."""

from __future__ import annotations

from typing import Any

from thresher.errors import ThresherError
from thresher.scorers.base import Scorer
from thresher.scorers.dsir import DSIRScorer
from thresher.scorers.el2n import EL2NScorer
from thresher.scorers.embedding import EmbeddingScorer
from thresher.scorers.fasttext_quality import FastTextQualityScorer
from thresher.scorers.grand import GraNdScorer
from thresher.scorers.influence import InfluenceScorer
from thresher.scorers.language import LanguageScorer
from thresher.scorers.minhash import MinHashScorer
from thresher.scorers.perplexity import PerplexityScorer
from thresher.scorers.text_stats import (
    AlphaFractionScorer,
    MeanWordLengthScorer,
    RepeatedLineFractionScorer,
    WordCountScorer,
)
from thresher.scorers.token_count import TokenCountScorer
from thresher.scorers.vog import VoGScorer

_REGISTERED: list[type[Scorer]] = [
    WordCountScorer,
    AlphaFractionScorer,
    MeanWordLengthScorer,
    RepeatedLineFractionScorer,
    MinHashScorer,
    EL2NScorer,
    GraNdScorer,
    InfluenceScorer,
    VoGScorer,
    EmbeddingScorer,
    PerplexityScorer,
    FastTextQualityScorer,
    TokenCountScorer,
    LanguageScorer,
    DSIRScorer,
]
SCORERS: dict[str, type[Scorer]] = {cls.name: cls for cls in _REGISTERED}


def make_scorer(name: str, params: dict[str, Any] | None = None) -> Scorer:
    """Instantiate a registered scorer and check its parameters (ValueError when bad)."""
    if name not in SCORERS:
        raise ValueError(f"unknown scorer {name!r}; available: {', '.join(sorted(SCORERS))}")
    try:
        instance = SCORERS[name](**(params or {}))
    except TypeError as error:
        raise ValueError(f"scorer {name!r}: {error}") from None
    try:
        instance.check_params()
    except (ValueError, ThresherError) as error:  # the config loader adds the field's path
        raise ValueError(str(error)) from None
    return instance


__all__ = ["SCORERS", "Scorer", "make_scorer"]
