"""Recommendation models whose embedding layer runs on updlrm.

* :class:`~updlrm.models.dlrm.DLRM`: Meta's DLRM for inference (bottom MLP, pairwise
  dot interaction, top MLP with a sigmoid); its sparse part is torch's
  ``nn.EmbeddingBag`` s or :class:`updlrm.EmbeddingBagCollection` with the same weights.

Example:
    >>> from updlrm.models import DLRM
    >>> DLRM.__name__
    'DLRM'
"""

from updlrm.models.dlrm import DLRM, dot_interaction

__all__ = ["DLRM", "dot_interaction"]
