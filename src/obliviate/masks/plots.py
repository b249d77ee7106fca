"""A picture of a mask's statistics: trainable fraction per layer and per module type."""

from __future__ import annotations

from pathlib import Path

from obliviate.plotting import pyplot


def plot_mask_statistics(statistics: dict, path: Path, title: str) -> None:
    plt = pyplot()
    layers = sorted(statistics["per_layer"], key=lambda k: (not k.isdigit(), int(k) if k.isdigit() else 0, k))
    modules = sorted(statistics["per_module"])
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [2, 1]})
    left.bar(layers, [statistics["per_layer"][k] for k in layers], color="tab:blue")
    left.set(xlabel="layer", ylabel="trainable fraction", ylim=(0, 1), title="per layer")
    left.tick_params(axis="x", labelrotation=90, labelsize=7)
    right.barh(modules, [statistics["per_module"][k] for k in modules], color="tab:orange")
    right.set(xlabel="trainable fraction", xlim=(0, 1), title="per module type")
    right.tick_params(axis="y", labelsize=7)
    figure.suptitle(f"{title} — overall {statistics['trainable_fraction']:.3f}")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
