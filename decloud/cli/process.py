"""``decloud process``: the whole-tile processors, one subcommand per module.

A processor adds itself with one line here: ``process.add_command(<command>)``, its
command living in ``decloud/cli/process_<name>.py``.
"""

from __future__ import annotations

import click

from decloud.cli.process_gapfill import gapfill
from decloud.cli.process_monthly import monthly
from decloud.cli.process_multitemporal import multi_temporal
from decloud.cli.process_series import series
from decloud.cli.process_single_date import single_date

__all__ = ["process"]


@click.group()
def process() -> None:
    """Reconstruct whole tiles: COG, quality band and completion record per output."""


process.add_command(single_date)
process.add_command(gapfill)
process.add_command(multi_temporal)
process.add_command(series)
process.add_command(monthly)
