"""Serving: `vmr recommend` (`recommend`), `vmr export` (`export`, with the vmr-free TorchScript
tower of `portable`) and `vmr gallery` (`gallery`)."""
