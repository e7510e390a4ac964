"""Data preparation (`vmr prepare`), the prepared-dataset API and the synthetic demo catalogue.

Modules: `io` (reading user inputs), `kcore` (k-core filter), `prepare` (the `vmr prepare`
pipeline), `dataset` (`load_dataset`), `synthetic` (`generate_catalogue`). Nothing heavy is
imported here.
"""
