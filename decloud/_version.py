"""Single source of the package version (read by setup.cfg and ``decloud --version``)."""

__version__ = "0.1.0"
