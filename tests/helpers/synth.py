"""A tiny planted-structure dataset for training tests: items belong to topics, users walk
mostly inside one topic in a fixed order, and the text features reveal the topic."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def make_dataset(root: Path, n_topics: int = 4, per_topic: int = 10, n_users: int = 160,
                 length: int = 8, dim: int = 16, seed: int = 0, with_features: bool = True) -> Path:
    from vmr.data.prepare import PrepareOptions, prepare_dataset

    rng = np.random.default_rng(seed)
    items = [f"i{t}-{k:02d}" for t in range(n_topics) for k in range(per_topic)]
    lines = []
    for u in range(n_users):
        t = u % n_topics
        start = rng.integers(per_topic)
        seq = []
        for s in range(length):
            if rng.random() < 0.85:                       # next item of the same topic
                k = (start + s) % per_topic
                seq.append(f"i{t}-{k:02d}")
            else:
                seq.append(items[rng.integers(len(items))])
        lines.append(f"u{u:03d} " + " ".join(seq))
    root.mkdir(parents=True, exist_ok=True)
    (root / "seq.txt").write_text("\n".join(lines) + "\n")
    out = root / "ds"
    prepare_dataset(PrepareOptions(interactions=str(root / "seq.txt"), out=str(out),
                                   fmt="sequences", kcore=1))
    if with_features:
        from vmr.extract.importer import import_features

        centers = rng.normal(size=(n_topics, dim))
        feats = np.stack([centers[int(i[1])] + 0.3 * rng.normal(size=dim) for i in items])
        feats = feats.astype(np.float32)
        np.save(root / "feat.npy", feats)
        (root / "ids.txt").write_text("\n".join(items) + "\n")
        import_features(data=str(out), modality="text", features=str(root / "feat.npy"),
                        ids=str(root / "ids.txt"), dim=None, cache=None, dtype="float32",
                        overwrite=False)
    return out


# what two catalogues extracted with the same --model record (the imported features of
# make_dataset otherwise carry each file's own identity)
SHARED_ENCODER = {"encoder": "import:shared-encoder.npy", "weights": "sha256:0123456789abcdef"}


def same_encoder(ds: Path) -> None:
    """Make a dataset's imported text features look as if one shared encoder made them."""
    import h5py

    with h5py.File(ds / "features.h5", "r+") as f:
        for k, v in SHARED_ENCODER.items():
            f["text"].attrs[k] = v
