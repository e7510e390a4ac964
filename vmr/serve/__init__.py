"""Serving: `vmr recommend` (`recommend`) and `vmr export` (`export`)."""
