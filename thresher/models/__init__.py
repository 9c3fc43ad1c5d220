"""Models that scorers fit and load: the reference LM and its tokenizer, proxy classifiers.

- :mod:`thresher.models.tokenizer`: byte-level BPE trained on a corpus sample.
- :mod:`thresher.models.lm`: the reference causal LM (:class:`~thresher.models.lm.ReferenceLM`),
  a thresher LM or a local Hugging Face checkpoint (:mod:`thresher.models._hf`).
- :mod:`thresher.models.lm_training`: training it on a corpus sample, once per run
  (:func:`~thresher.models.lm_training.fit_reference_lm`).
- :mod:`thresher.models.preselect`: PreSelect labels (documents on which several LMs' losses
  rank them as their benchmark scores do) for training a fastText quality classifier.

Modules import torch lazily where they can, so importing the package stays cheap.
"""
