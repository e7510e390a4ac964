"""The package's version: one leaf module that imports nothing, read by setup.cfg
(`attr: vmr._version.__version__`), the CLI, run files and caches."""

__version__ = "0.1.0"
