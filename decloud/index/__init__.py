"""The spatio-temporal patch index.

Per-patch statistics, the catalog and its R-tree, acquisition-layout tuple search,
samplers and splits.
"""

from decloud.index.catalog import AddReport, Catalog, CatalogError, ProductRecord
from decloud.index.stats import PatchGrid, s1_patch_stats, s2_patch_stats

__all__ = [
    "AddReport",
    "Catalog",
    "CatalogError",
    "PatchGrid",
    "ProductRecord",
    "s1_patch_stats",
    "s2_patch_stats",
]
