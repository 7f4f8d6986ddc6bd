"""Training-curve plots, one panel per task loss and metric."""

from __future__ import annotations

from typing import Dict, List

import tensorflow as tf


def plot_training_curves(history: Dict[str, List[float]], path: str) -> None:
    """Writes a PNG with train and validation curves of every logged series."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    names = sorted({k[len("val_") :] if k.startswith("val_") else k for k in history})
    cols = min(3, len(names))
    rows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.2 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        for key, label in ((name, "train"), (f"val_{name}", "eval")):
            if key in history:
                ax.plot(range(1, len(history[key]) + 1), history[key], marker="o", label=label)
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend()
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.tight_layout()
    with tf.io.gfile.GFile(path, "wb") as f:
        fig.savefig(f, format="png", dpi=90)
    plt.close(fig)
