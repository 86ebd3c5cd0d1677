"""Entry point of the ``decloud`` command.

Commands import Keras (and so TensorFlow or JAX) only when they need it, through
:func:`decloud.cli.backend.load_backend`, which keeps the backend's start-up lines off
the terminal: ``decloud --help`` and the raster commands never load it.
"""

from __future__ import annotations

from typing import Any

import click

from decloud._version import __version__
from decloud.cli.benchmark import benchmark
from decloud.cli.dataset import dataset
from decloud.cli.evaluate import evaluate
from decloud.cli.export import export
from decloud.cli.index import index
from decloud.cli.info import info
from decloud.cli.inventory import inventory
from decloud.cli.layout import layout
from decloud.cli.models import models
from decloud.cli.process import process
from decloud.cli.quicklook import quicklook
from decloud.cli.stac import stac
from decloud.cli.stack import stack
from decloud.cli.train import train
from decloud.env import gdal_env
from decloud.errors import DecloudError

__all__ = ["cli"]


class _Group(click.Group):
    """Runs commands inside decloud's GDAL environment and reports decloud's errors."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            with gdal_env():
                return super().invoke(ctx)
        except DecloudError as err:
            # One clear line naming the file and field; exit status 1.
            raise click.ClickException(f"{type(err).__name__}: {err}") from err


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="decloud")
def cli() -> None:
    """Decloud: remove clouds from Sentinel-2 images with SAR-optical networks.

    Point decloud at an archive laid out as S2/<TILE>/<product>, S1/<TILE>/*.tif and
    DEM/<TILE>.tif with --archive ROOT (or --s2-root, --s1-root, --dem-root).
    """


cli.add_command(inventory)
cli.add_command(info)
cli.add_command(stack)
cli.add_command(quicklook)
cli.add_command(index)
cli.add_command(layout)
cli.add_command(dataset)
cli.add_command(export)
cli.add_command(models)
cli.add_command(evaluate)
cli.add_command(train)
cli.add_command(process)
cli.add_command(stac)
cli.add_command(benchmark)
