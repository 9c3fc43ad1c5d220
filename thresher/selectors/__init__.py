"""Selectors, registered by name. Adding one: its module, one line below, its test."""

from __future__ import annotations

from thresher.registry import Registry
from thresher.selectors.base import Selection, Selector
from thresher.selectors.bucket_repeat import BucketRepeatSelector
from thresher.selectors.ccs import CCSSelector
from thresher.selectors.d2 import D2Selector
from thresher.selectors.dpp import DPPSelector
from thresher.selectors.dsir import DSIRSelector
from thresher.selectors.ideal import IDEALSelector
from thresher.selectors.kmeans_sensitivity import KMeansSensitivitySelector
from thresher.selectors.language_filter import LanguageFilterSelector
from thresher.selectors.prototypes import PrototypesSelector
from thresher.selectors.quantile_band import QuantileBandSelector
from thresher.selectors.random_baseline import RandomSelector
from thresher.selectors.rules import RulesSelector
from thresher.selectors.semdedup import SemDeDupRankSelector, SemDeDupSelector
from thresher.selectors.threshold import ThresholdSelector
from thresher.selectors.topk import BottomKSelector, TopKSelector

_REGISTERED: list[type[Selector]] = [
    RandomSelector,
    ThresholdSelector,
    QuantileBandSelector,
    TopKSelector,
    BottomKSelector,
    CCSSelector,
    DPPSelector,
    KMeansSensitivitySelector,
    PrototypesSelector,
    SemDeDupSelector,
    SemDeDupRankSelector,
    LanguageFilterSelector,
    DSIRSelector,
    D2Selector,
    IDEALSelector,
    BucketRepeatSelector,
    RulesSelector,
]
SELECTORS: Registry[Selector] = Registry("selector", _REGISTERED)
#: A registered selector by name, its parameters checked (RegistryError, a ValueError, when bad).
make_selector = SELECTORS.make


__all__ = ["SELECTORS", "Selection", "Selector", "make_selector"]
