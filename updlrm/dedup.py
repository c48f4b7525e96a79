"""In-batch deduplication of identical bags (RecD's IKJT idea); see choose_bags."""

from __future__ import annotations

import numpy as np


def choose_bags(batch, order, mode):
    """Per feature (collection order): global bag ids to compute, inverse map of the B samples, deduplicated?"""
    bags, inverse, dedup = [], [], []
    for k in order:
        lo, hi = int(batch.bag_start[k]), int(batch.bag_start[k + 1])
        bags.append(np.arange(lo, hi, dtype=np.int64))
        inverse.append(batch.inverse[k])
        dedup.append(batch.inverse[k] is not None)
    return bags, inverse, dedup
