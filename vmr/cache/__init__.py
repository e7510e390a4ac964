"""The HDF5 feature cache: reading, atomic publishing, inspection and shard merging.

Knows nothing about encoders or models; see docs/DESIGN.md and docs/EXTRACT.md."""
