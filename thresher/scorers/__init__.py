"""Scorers, registered by name. Adding one: its module, one line below, its test."""

from __future__ import annotations

from thresher.registry import Registry
from thresher.scorers.base import Scorer
from thresher.scorers.dsir import DSIRScorer
from thresher.scorers.el2n import EL2NScorer
from thresher.scorers.embedding import EmbeddingScorer
from thresher.scorers.embedding_classifier import EmbeddingClassifierScorer
from thresher.scorers.fasttext_quality import FastTextQualityScorer
from thresher.scorers.grand import GraNdScorer
from thresher.scorers.influence import InfluenceScorer
from thresher.scorers.label_issues import LabelIssuesScorer
from thresher.scorers.language import LanguageScorer
from thresher.scorers.memorization import MemorizationScorer
from thresher.scorers.mimic import MimicScorer
from thresher.scorers.minhash import MinHashScorer
from thresher.scorers.perplexity import PerplexityScorer
from thresher.scorers.quality_signals import (
    C4QualityScorer,
    FineWebQualityScorer,
    GopherQualityScorer,
    GopherRepetitionScorer,
)
from thresher.scorers.score_combine import ScoreCombineScorer
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
    MimicScorer,
    LabelIssuesScorer,
    VoGScorer,
    EmbeddingScorer,
    PerplexityScorer,
    MemorizationScorer,
    FastTextQualityScorer,
    TokenCountScorer,
    LanguageScorer,
    DSIRScorer,
    EmbeddingClassifierScorer,
    ScoreCombineScorer,
    GopherQualityScorer,
    GopherRepetitionScorer,
    C4QualityScorer,
    FineWebQualityScorer,
]
SCORERS: Registry[Scorer] = Registry("scorer", _REGISTERED)
#: A registered scorer by name, its parameters checked (RegistryError, a ValueError, when bad).
make_scorer = SCORERS.make


__all__ = ["SCORERS", "Scorer", "make_scorer"]
