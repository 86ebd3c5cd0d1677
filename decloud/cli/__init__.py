"""The ``decloud`` command line: one module per command, grouped in :mod:`.main`."""
