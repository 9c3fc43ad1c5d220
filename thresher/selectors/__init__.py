"""Selectors, registered by name. Adding one: its module, one line below, its test."""

from __future__ import annotations

from typing import Any

from thresher.errors import ThresherError
from thresher.selectors.base import Selection, Selector
from thresher.selectors.ccs import CCSSelector
from thresher.selectors.d2 import D2Selector
from thresher.selectors.dpp import DPPSelector
from thresher.selectors.dsir import DSIRSelector
from thresher.selectors.kmeans_sensitivity import KMeansSensitivitySelector
from thresher.selectors.language_filter import LanguageFilterSelector
from thresher.selectors.prototypes import PrototypesSelector
from thresher.selectors.quantile_band import QuantileBandSelector
from thresher.selectors.random_baseline import RandomSelector
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
]
SELECTORS: dict[str, type[Selector]] = {cls.name: cls for cls in _REGISTERED}


def make_selector(name: str, params: dict[str, Any] | None = None) -> Selector:
    """Instantiate a registered selector and check its parameters (ValueError when bad)."""
    if name not in SELECTORS:
        raise ValueError(f"unknown selector {name!r}; available: {', '.join(sorted(SELECTORS))}")
    try:
        instance = SELECTORS[name](**(params or {}))
    except TypeError as error:
        raise ValueError(f"selector {name!r}: {error}") from None
    try:
        instance.check_params()
    except (ValueError, ThresherError) as error:  # the config loader adds the field's path
        raise ValueError(str(error)) from None
    return instance


__all__ = ["SELECTORS", "Selection", "Selector", "make_selector"]
