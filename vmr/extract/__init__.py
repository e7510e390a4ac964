"""Feature extraction: frozen pretrained encoders turn each item's video, image or text into one
vector in the HDF5 cache (`vmr extract`), or features computed elsewhere are imported
(`vmr import-features`). See docs/EXTRACT.md."""
