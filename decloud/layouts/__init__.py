"""Acquisition layouts: the arrangement of images one training sample needs.

A layout names acquisitions, each with its sensors (S2, S1 or both) and constraints:
the S2 cloud percentage range of the patch, the largest S1-S2 gap, the S1 pass
direction and relative orbits, and a time window relative to the reference
acquisition, whose S2 date is the time origin. Acquisition names become dataset keys
(``tm1`` gives ``s2_tm1``, ``s2_20m_tm1``, ``s2_mask_tm1``, ``s1_tm1``), so they match
``^[a-z][a-z0-9]*$``. Shipped layouts are package data (``decloud/layouts/shipped/``,
linked from the repository's ``acquisition_layouts/``) that :func:`load_layout` also
finds by name (``load_layout("os2-occitanie")``; :func:`shipped_layouts` lists them).

YAML format::

    # OS2, Occitanie: t-1, t, t+1 S2+S1 inputs, clear target within 10 days of t
    name: os2-occitanie
    description: Multi-temporal SAR+optical (t-1, t, t+1) with a clear target
    acquisitions:                 # in this order in the dataset keys
      tm1:
        window_hours: [-720, -240]    # [start, end] hours from the reference, inclusive
        s2: {cloud: [0, 100]}         # cloud % of the patch, [min, max] inclusive
        s1: {max_gap_hours: 72}       # |t_S1 - t_S2| <= 72 h
      t:
        reference: true               # the time origin: exactly one, no window_hours
        s2: {cloud: [1, 100]}
        s1: {max_gap_hours: 72}
      target:
        window_hours: [-240, 240]
        s2: {cloud: [0, 0]}
      tp1:
        window_hours: [240, 720]
        s2: {cloud: [0, 100]}
        s1: {max_gap_hours: 72}
    dem: true                     # samples also get the DEM patch (key dem)
    siblings: []                  # e.g. [[t, target]]: these must be one S2 image

Every field with its default::

    acquisitions.<name>:
      reference: false
      window_hours: null          # required unless reference
      description: ""
      s2:                         # null: no S2 image
        cloud: [0, 100]           # or {min: 0, max: 100}; a bound may be {randint: [a, b]}
        nodata_max: 0             # % of nodata pixels allowed
      s1:                         # null: no S1 image
        max_gap_hours: 72         # unused without s2
        pass_direction: null      # ASC or DES
        relative_orbits: []       # empty: any
        nodata_max: 0

A cloud bound written ``{randint: [0, 2]}`` (inclusive) is drawn per sample by
:meth:`Layout.resolve` with the sampler's random generator, e.g.
``cloud: {min: {randint: [0, 2]}, max: 100}``.

CNES decloud's JSON layouts load too (``load_layout("AL-CRGA-OS2-Occitanie.json")``):
``t-1``/``t+1`` become ``tm1``/``tp1``, ``"random.randint(a, b)"`` cloud bounds become
``{randint: [a, b]}`` (that exact pattern only, parsed, never evaluated), and the
``options.siblings`` groups are kept. See :mod:`decloud.layouts.loader`.

Every problem raises :class:`~decloud.errors.LayoutError` naming the file, the field
(``acquisitions.tm1.s2.cloud``) and, first in the message, the line (``line 7: ...``).
"""

from __future__ import annotations

from decloud.layouts.loader import SHIPPED_LAYOUTS, load_layout, shipped_layouts
from decloud.layouts.model import Acquisition, Bound, Layout, RandInt, S1Spec, S2Spec
from decloud.layouts.table import layout_table

__all__ = [
    "SHIPPED_LAYOUTS",
    "Acquisition",
    "Bound",
    "Layout",
    "RandInt",
    "S1Spec",
    "S2Spec",
    "layout_table",
    "load_layout",
    "shipped_layouts",
]
