"""Models that scorers fit and load: the reference LM and its tokenizer, proxy classifiers.

- :mod:`thresher.models.tokenizer`: byte-level BPE trained on a corpus sample.
- :mod:`thresher.models.lm`: the reference causal LM (:func:`~thresher.models.lm.fit_reference_lm`,
  :class:`~thresher.models.lm.ReferenceLM`), trained here or loaded from a local checkpoint.

Modules import torch lazily where they can, so importing the package stays cheap.
"""
