"""The white-box probes over layers (``logit_lens@Lℓ``, ``linear_probe@Lℓ`` of
:mod:`obliviate.evaluation.metrics.whitebox`): one panel per probe, one line per (stage, split), the forget and
retain splits (and any ``forget_*`` split), stages such as "before" and "after" unlearning told apart by line
style. Knowledge that is gone falls at every layer; knowledge that is only hidden from the output stays high in
the middle layers and falls at the last."""

from __future__ import annotations

from pathlib import Path

from obliviate.evaluation.results import CURVE_MARK, Evaluation
from obliviate.plotting import pyplot

PROBES = {"logit_lens": "p(answer) read at the layer (logit lens, log scale)",
          "linear_probe": "accuracy of the retain-trained linear probe"}
STAGE_STYLES = ("-", "--", ":", "-.")
PROBE_CHANCE = 0.5  # linear_probe's class-balanced accuracy of a probe that reads nothing


def shown_splits(evaluation: Evaluation) -> list[str]:
    """The splits drawn: forget, retain and every forget_* split, forget first."""
    names = [name for name in evaluation.splits if name in ("forget", "retain") or name.startswith("forget_")]
    return sorted(names, key=lambda name: (name != "forget", name != "retain", name))


def layer_points(values: dict[str, float], probe: str) -> list[tuple[int, float]]:
    """The (layer, value) points of ``probe``'s curve among a split's values (keys ``<probe>@L<layer>``), by layer."""
    prefix = f"{probe}{CURVE_MARK}L"
    return sorted((int(key[len(prefix):]), value) for key, value in values.items()
                  if key.startswith(prefix) and key[len(prefix):].isdigit())


def plot_layer_curves(stages: dict[str, Evaluation], path: Path) -> bool:
    """Draw each probe present in ``stages`` (stage name → evaluation) over the layers into ``path`` (PNG);
    False, and nothing written, when no evaluation has a probe's curve on a drawn split."""
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    probes = [probe for probe in PROBES if any(layer_points(evaluation.splits[split], probe)
                                               for evaluation in stages.values() for split in shown_splits(evaluation))]
    if not probes:
        return False
    splits = list(dict.fromkeys(split for evaluation in stages.values() for split in shown_splits(evaluation)))
    colours = {split: f"C{index}" for index, split in enumerate(splits)}
    figure, axes = plt.subplots(1, len(probes), figsize=(5.5 * len(probes), 4.2), squeeze=False)
    for axis, probe in zip(axes[0], probes):
        for style, (stage, evaluation) in zip(STAGE_STYLES * len(stages), stages.items()):
            for split in shown_splits(evaluation):
                if points := layer_points(evaluation.splits[split], probe):
                    layers, values = zip(*points)
                    axis.plot(layers, values, linestyle=style, marker="o", color=colours[split],
                              label=f"{split} ({stage})")
        if probe == "logit_lens":
            axis.set_yscale("log")
        else:
            axis.axhline(PROBE_CHANCE, color="grey", linewidth=0.8, label="chance")
            axis.set_ylim(0.0, 1.02)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set(title=probe, xlabel="layer", ylabel=PROBES[probe])
        axis.legend(fontsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True
