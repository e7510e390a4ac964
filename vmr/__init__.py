"""vmr: multimodal sequential recommendation on frozen pretrained features.

The Python API (vmr/api.py, docs/API.md) is re-exported here lazily (PEP 562): `vmr.prepare`,
`vmr.extract_features`, `vmr.fit`, `vmr.load` and `vmr.Run` import vmr.api, and through it
torch, on first use, so `import vmr` stays cheap and `vmr --help` fast. No function shares a name
with a subpackage (`vmr.extract`, `vmr.train`, ... are the subpackages, nothing else), and no
module of vmr imports this one."""

from vmr._version import __version__

_API = ("prepare", "extract_features", "fit", "load", "Run")
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        import vmr.api

        return getattr(vmr.api, name)
    raise AttributeError(f"module 'vmr' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_API))
