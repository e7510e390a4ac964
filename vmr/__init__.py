"""vmr: multimodal sequential recommendation on frozen pretrained features.

The Python API (vmr/api.py, docs/API.md) is re-exported here lazily: `vmr.prepare`,
`vmr.extract`, `vmr.train`, `vmr.load` and `vmr.Run` import it, and through it torch, on first
use, so `import vmr` stays cheap and `vmr --help` fast.

`vmr.extract` is also the name of the extraction subpackage, which the import system binds on
this package whenever a module of it is imported. So that both keep working, the package's
`extract` attribute is that subpackage made callable: `vmr.extract(data, "text")` calls
`vmr.api.extract`, and `vmr.extract.runner` is still the module."""

import sys
import types

__version__ = "0.1.0"

_API = ("prepare", "extract", "train", "load", "Run")
__all__ = ["__version__", *_API]


class _CallableExtract(types.ModuleType):
    """The vmr.extract subpackage, callable as the API's extract()."""

    def __call__(self, data, modality, **options):
        from vmr import api

        return api.extract(data, modality, **options)


class _Package(types.ModuleType):
    @property
    def extract(self):
        module = self.__dict__.get("_extract_subpackage")
        if module is None:            # not imported yet: import it (cheap, no torch)
            from vmr.api import extract_subpackage

            module = extract_subpackage()
        if not isinstance(module, _CallableExtract):
            module.__class__ = _CallableExtract
        return module

    @extract.setter
    def extract(self, module):        # the import system binding vmr.extract
        self.__dict__["_extract_subpackage"] = module


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str):
    if name in _API:
        from vmr import api

        return getattr(api, name)
    raise AttributeError(f"module 'vmr' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_API))
