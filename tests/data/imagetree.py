"""Image-folder trees of real CIFAR-10 images for the streamed-data tests and benchmark: PNG
class folders and, beside them, the same images as a resident train.npz/test.npz."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def cifar_tree(source: Path, root: Path, per_class_train: int, per_class_test: int,
               classes: int = 10) -> Path:
    """``root/tree/{train,val}/<class>/<NNNNN>.png`` and ``root/npz/{train,test}.npz``: the first
    images of each class of the CIFAR-10 copy in ``source``, in the same order in both (the copy
    is class-major; the file names keep that order)."""
    from PIL import Image

    names = (source / "classes.txt").read_text().split()[:classes]
    tree, npz = root / "tree", root / "npz"
    npz.mkdir(parents=True, exist_ok=True)
    for split, folder, per in (("train", "train", per_class_train),
                               ("test", "val", per_class_test)):
        with np.load(source / f"{split}.npz") as f:
            images, labels = f["images"], f["labels"]
        keep = np.concatenate([np.flatnonzero(labels == c)[:per] for c in range(classes)])
        np.savez(npz / f"{split}.npz", images=images[keep], labels=labels[keep])
        for k, i in enumerate(keep):
            d = tree / folder / names[labels[i]]
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i]).save(d / f"{k:05d}.png")
    (npz / "classes.txt").write_text("\n".join(names) + "\n")
    return tree
