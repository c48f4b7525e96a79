"""``BatchReport``: what one ``EmbeddingBagCollection.forward`` computed and where its time went.

``updlrm.collection`` re-exports it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BatchReport"]


@dataclass
class BatchReport:
    """What one ``forward`` computed: per feature, samples, bags sent to the engine, lookups.

    ``lookups_in`` counts the lookups of the full batch (what a run without dedup sends),
    ``lookups_run`` those sent to the engine; ``deduplicated[i]`` says whether feature
    ``i``'s rows were expanded from inverse indices (deduplicated here, or given so by a
    variable-batch KJT).
    """

    features: list[str]
    samples: int
    bags_run: list[int]
    lookups_in: int
    lookups_run: int
    deduplicated: list[bool]
    read_s: float = 0.0
    dedup_s: float = 0.0
    stack_s: float = 0.0
    expand_s: float = 0.0

    @property
    def duplication(self) -> float:
        """Lookups of the full batch per lookup sent to the engine."""
        return self.lookups_in / self.lookups_run if self.lookups_run else 1.0

    def __repr__(self) -> str:
        """A one-line summary.

        >>> BatchReport(["u", "c"], 4, [1, 4], 8, 5, [True, False])
        BatchReport(4 samples: 8 lookups -> 5 run (1.60x), deduplicated ['u'], host: read 0.000 ms, dedup 0.000 ms, stack 0.000 ms, expand 0.000 ms)
        """
        dedup = [f for f, d in zip(self.features, self.deduplicated) if d]
        times = ", ".join(f"{k} {getattr(self, k + '_s') * 1e3:.3f} ms" for k in ("read", "dedup", "stack", "expand"))
        return (
            f"BatchReport({self.samples} samples: {self.lookups_in:,} lookups -> {self.lookups_run:,} run "
            f"({self.duplication:.2f}x), deduplicated {dedup}, host: {times})"
        )
