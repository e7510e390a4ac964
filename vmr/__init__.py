"""vmr: multimodal sequential recommendation on frozen pretrained features.

The Python API (vmr/api.py, docs/API.md) is re-exported here lazily: `vmr.prepare`,
`vmr.extract`, `vmr.train`, `vmr.load` and `vmr.Run` import it, and through it torch, on first
use, so `import vmr` stays cheap and `vmr --help` fast.

`vmr.extract` and `vmr.train` are also the names of subpackages, which the import system binds
on this package whenever a module of theirs is imported. So that both keep working, those two
attributes are the subpackages made callable: `vmr.train(data, out)` calls `vmr.api.train`,
and `vmr.train.session` is still the module."""

import sys
import types

__version__ = "0.1.0"

_API = ("prepare", "extract", "train", "load", "Run")
__all__ = ["__version__", *_API]


def _callable_subpackage(name: str):
    """A property whose value is the subpackage `name`, callable as the API function `name`."""

    def __call__(self, *args, **kwargs):
        from vmr import api

        return getattr(api, name)(*args, **kwargs)

    cls = type(f"_Callable_{name}", (types.ModuleType,), {"__call__": __call__})

    def get(self):
        module = self.__dict__.get(f"_subpackage_{name}")
        if module is None:                   # not imported yet (cheap: no torch)
            from vmr.api import subpackage

            module = subpackage(name)
        if type(module) is types.ModuleType:
            module.__class__ = cls
        return module

    def bind(self, module):                  # the import system binding vmr.<name>
        self.__dict__[f"_subpackage_{name}"] = module

    return property(get, bind)


class _Package(types.ModuleType):
    extract = _callable_subpackage("extract")
    train = _callable_subpackage("train")


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str):
    if name in _API:
        from vmr import api

        return getattr(api, name)
    raise AttributeError(f"module 'vmr' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_API))
