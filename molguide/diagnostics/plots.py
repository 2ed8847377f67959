"""PNG figures for MLflow and the run report: noise-level diagnostics, property histograms,
improvement vs weight, loss curves, sample molecules.

matplotlib with the Agg backend (no display needed); every ``plot_*`` function writes one
file and returns its path. Properties are named with their unit (``gap_eV``):
:func:`property_label` turns such a name into what a reader sees ("HOMO-LUMO gap", "eV").
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from molguide.guidance.kinds import GUIDANCE_KINDS

# A guidance-error axis whose positive values span more than this ratio is drawn log-scaled.
LOG_SPAN = 20.0
# Prefixes of the per-molecule tags that carry a property's value (annotated_mols, judge).
_VALUE_PREFIXES = ("evaluator_", "xtb_")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    plt = _pyplot()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


# ----------------------------------------------------------------------------- labels


def property_label(name: str) -> tuple[str, str, str]:
    """(short name, description, unit) of a property named with its unit.

    ``gap_eV`` -> ("gap", "HOMO-LUMO gap", "eV"); ``alpha_bohr3`` -> ("alpha", "isotropic
    polarizability", "bohr^3"); a name the data sets do not know is split at its last
    underscore (``logp`` -> ("logp", "logp", "")).
    """
    from molguide.data.qm9 import PROPERTIES

    for prefix in _VALUE_PREFIXES:
        name = name.removeprefix(prefix)
    short, _, suffix = name.rpartition("_")
    if not short:
        short, suffix = name, ""
    spec = next((p for p in PROPERTIES if p.name == name), None)
    if spec is not None:
        return short, spec.description, spec.unit
    return short, short, suffix


def axis_label(name: str, source: str = "") -> str:
    """An axis label with the property's unit, e.g. "HOMO-LUMO gap (eV), evaluator"."""
    _, description, unit = property_label(name)
    text = f"{description} ({unit})" if unit else description
    return f"{text}, {source}" if source else text


def target_text(target) -> str:
    """A :class:`~molguide.guidance.targets.PropertyTarget`'s goal in the property's unit,
    e.g. ``gap_eV >= 7.505``, ``gap_eV in [6.2, 7.505)``, ``mu_D = 2.5`` (its ``describe()``
    before the bins are fitted)."""
    if getattr(target, "target_value", None) is not None:
        return f"{target.name} = {target.target_value:.4g}"
    if not target.fitted:
        return target.describe()
    low, high = _target_range(target)
    if high is None:
        return f"{target.name} >= {low:.4g}"
    if low is None:
        return f"{target.name} < {high:.4g}"
    return f"{target.name} in [{low:.4g}, {high:.4g})"


def _target_range(target) -> tuple[float | None, float | None]:
    """The target class's bounds in the property's unit (None: unbounded on that side)."""
    edges, c = list(target.edges), target.target_class
    return (edges[c - 1] if c > 0 else None), (edges[c] if c < len(edges) else None)


# ----------------------------------------------------------------------------- noise levels


def chance_levels(num_classes: int) -> tuple[float, float]:
    """(cross-entropy in nats, accuracy) of a classifier that predicts the uniform prior
    over ``num_classes`` balanced classes: log K and 1/K (log 3 = 1.099, 1/3)."""
    if num_classes < 2:
        raise ValueError(f"chance levels need at least 2 classes, got {num_classes}")
    return math.log(num_classes), 1.0 / num_classes


def noise_level_t(rows) -> list[float]:
    """The noise level t of each row: the centre of its bin.

    ``noise_level_diagnostics`` draws bin b of n uniformly in [b/n, (b+1)/n) (``t_low``,
    ``t_high``; 0 = clean, 1 = pure noise); rows stored without them fall back to
    (b + 1/2)/n with n the number of rows.
    """
    rows = [r.as_dict() if hasattr(r, "as_dict") else r for r in rows]
    n = len(rows)
    return [
        (r["t_low"] + r["t_high"]) / 2 if "t_low" in r and "t_high" in r else (r["bin"] + 0.5) / n
        for r in rows
    ]


def _spans_decades(values) -> bool:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x) and x > 0], dtype=float)
    return len(v) > 1 and v.max() / v.min() > LOG_SPAN


def noise_levels_figure(rows, title: str = "", num_classes: int | None = None):
    """The figure of :func:`plot_noise_levels` (the caller closes it)."""
    plt = _pyplot()
    rows = [r.as_dict() if hasattr(r, "as_dict") else r for r in rows]
    t = noise_level_t(rows)
    xlabel = "noise level t (0 clean, 1 pure noise)"
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(t, [r["classifier_ce"] for r in rows], "o-", label="held-out CE")
    axes[1].plot(t, [r["classifier_accuracy"] for r in rows], "o-", label="accuracy")
    axes[1].plot(t, [r["classifier_ece"] for r in rows], "s--", label="ECE")
    if num_classes is not None:
        ce, acc = chance_levels(num_classes)
        axes[0].axhline(ce, color="grey", ls=":", label=f"chance: log {num_classes} = {ce:.3f}")
        axes[1].axhline(acc, color="grey", ls=":", label=f"chance accuracy 1/{num_classes} = {acc:.3f}")
    axes[0].set(xlabel=xlabel, ylabel="cross-entropy (nats)", title="classifier cross-entropy")
    axes[1].set(xlabel=xlabel, title="accuracy and calibration error")
    kind = rows[0].get("guidance_mse_kind", "") if rows else ""
    est = [r["guidance_mse_est"] for r in rows]
    if kind == "bound":
        axes[2].plot(t, est, "o-", label="upper bound d L sqrt(CE)")
        axes[2].set(ylabel="guidance error bound", title="guidance error (bound, not measured)")
        shown = est
    else:
        bound = [r.get("guidance_mse_bound", math.nan) for r in rows]
        axes[2].plot(t, est, "o-", label=f"estimate ({kind or 'measured'})")
        axes[2].plot(t, bound, "s--", label="upper bound d L sqrt(CE)")
        axes[2].set(ylabel="squared guidance error", title="estimated guidance error")
        shown = est + bound
    if _spans_decades(shown):
        axes[2].set_yscale("log")
    axes[2].set(xlabel=xlabel)
    for ax in axes:
        ax.set_xlim(0, 1)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_noise_levels(rows, path: str | Path, title: str = "", num_classes: int | None = None) -> Path:
    """Cross-entropy, accuracy/ECE and the guidance error against the noise level t.

    ``rows``: ``NoiseLevelRow`` objects or their dicts. ``num_classes`` (K, the target's
    ``n_bins``) adds the chance lines: log K nats on the cross-entropy panel, 1/K on the
    accuracy panel. The guidance error is drawn log-scaled when it spans more than a
    factor :data:`LOG_SPAN`, and called a bound when ``guidance_mse_kind`` is "bound".
    """
    return _save(noise_levels_figure(rows, title, num_classes), path)


# ----------------------------------------------------------------------------- histograms


def plot_histograms(judged: dict[str, dict], target, path: str | Path, goal_text: str | None = None) -> Path:
    """Evaluator (and xTB) property histograms of every setting against the unguided one.

    The title states the goal in the property's unit (``goal_text``, by default
    :func:`target_text` of ``target``, e.g. "gap_eV >= 7.505"; the ``guide`` pipeline's
    text of several goals); the target range is shaded
    and the bin edges dotted; the x axis names the property and its unit.
    """
    plt = _pyplot()
    goal = goal_text or target_text(target)
    unit = property_label(target.name)[2]
    in_unit = f" {unit}" if unit else ""
    sources = [("evaluator", "evaluator")] + (
        [("xtb", "xTB (calibrated)")] if any(np.isfinite(j["xtb"]).any() for j in judged.values()) else []
    )
    fig, axes = plt.subplots(1, len(sources), figsize=(6 * len(sources), 3.8), squeeze=False)
    for ax, (key, label) in zip(axes[0], sources):
        allv = np.concatenate([j[key][np.isfinite(j[key])] for j in judged.values()])
        if len(allv) == 0:
            continue
        bins = np.linspace(np.quantile(allv, 0.005), np.quantile(allv, 0.995), 40)
        if target.fitted and getattr(target, "target_value", None) is None:
            low, high = _target_range(target)
            ax.axvspan(bins[0] if low is None else max(low, bins[0]),
                       bins[-1] if high is None else min(high, bins[-1]),
                       color="C2", alpha=0.08, label="target range")  # fmt: skip
        for name, j in judged.items():
            v = j[key][np.isfinite(j[key])]
            ax.hist(
                v,
                bins=bins,
                histtype="step",
                linewidth=2 if name == "unguided" else 1.2,
                label=f"{name} (mean {v.mean():.3g}{in_unit})" if len(v) else name,
            )
        for edge in target.edges:
            ax.axvline(edge, color="grey", linestyle=":")
        ax.set(xlabel=axis_label(target.name, label), ylabel="molecules", title=f"target: {goal}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


# ----------------------------------------------------------------------------- sweep

_IMPROVEMENT_KEYS = ("property_improvement", "property_improvement_ci_low", "property_improvement_ci_high")


def _weights_of(results: dict[str, dict], kind_name: str) -> list[tuple[float, dict]]:
    """(weight, metrics) of the settings named ``<kind>_w<weight>``, by weight."""
    found = []
    for name, metrics in results.items():
        if name.startswith(kind_name + "_w"):
            try:
                found.append((float(name[len(kind_name) + 2 :]), metrics))
            except ValueError:  # not a weight sweep's name
                continue
    return sorted(found, key=lambda item: item[0])


def plot_sweep(results: dict[str, dict], path: str | Path, unit: str = "") -> Path:
    """Property improvement (bootstrap 95 % interval as error bars) and hit rate against
    the guidance weight, one line per guidance kind, with a zero line.

    ``results`` maps setting names (``<kind>_w<weight>``, the references ``unguided`` and
    ``cfg_unconditional``) to their metrics; ``unit`` labels the improvement axis.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for i, kind in enumerate(GUIDANCE_KINDS.values()):
        marker, color, label = kind.marker, f"C{i}", kind.label or kind.name
        named = _weights_of(results, kind.name)
        if not named:
            continue
        reference = results.get(kind.reference, {})
        if not kind.zero_weight_guides:  # weight 0 is the reference itself: no change
            named = [(0.0, {**reference, **dict.fromkeys(_IMPROVEMENT_KEYS, 0.0)}), *named]
        w = [x for x, _ in named]
        imp = np.array([m.get("property_improvement", math.nan) for _, m in named], dtype=float)
        lo = np.array([m.get("property_improvement_ci_low", math.nan) for _, m in named], dtype=float)
        hi = np.array([m.get("property_improvement_ci_high", math.nan) for _, m in named], dtype=float)
        axes[0].errorbar(
            w,
            imp,
            yerr=[np.maximum(imp - lo, 0.0), np.maximum(hi - imp, 0.0)],
            marker=marker,
            color=color,
            capsize=3,
            label=f"{label} (vs {kind.reference})",
        )
        axes[1].plot(
            w,
            [m.get("target_hit_rate", math.nan) for _, m in named],
            marker=marker,
            color=color,
            label=f"{label} (evaluator)",
        )
        if "target_hit_rate_xtb" in reference:
            axes[1].plot(
                w,
                [m.get("target_hit_rate_xtb", math.nan) for _, m in named],
                marker=marker,
                color=color,
                linestyle="--",
                label=f"{label} (xTB)",
            )
    axes[0].axhline(0, color="grey", linewidth=0.8)
    unit_text = f"{unit}, " if unit else ""
    axes[0].set(
        xlabel="guidance weight w",
        ylabel=f"property improvement ({unit_text}95% CI)",
        title="paired improvement over the reference",
    )
    axes[1].set(xlabel="guidance weight w", ylabel="target hit rate", title="samples in the target range")
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


# ----------------------------------------------------------------------------- loss curves


def _moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average over ``window`` points (fewer at the ends): it does not lag."""
    if window <= 1:
        return values
    half = window // 2
    total = np.concatenate([[0.0], np.cumsum(values)])
    idx = np.arange(len(values))
    lo, hi = np.maximum(idx - half, 0), np.minimum(idx + half + 1, len(values))
    return (total[hi] - total[lo]) / (hi - lo)


def loss_curves_figure(
    curves: dict[str, list[tuple[int, float]]], title: str = "", clip_percentile: float = 99.0
):
    """The figure of :func:`plot_loss_curves` (the caller closes it)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4))
    finite = []
    for i, (name, points) in enumerate(curves.items()):
        pts = np.asarray([(s, v) for s, v in points if v is not None and math.isfinite(v)], dtype=float)
        if len(pts) == 0:
            continue
        steps, loss = pts[:, 0], pts[:, 1]
        finite.append(loss)
        smooth = _moving_average(loss, max(1, len(loss) // 50))
        tail = float(np.mean(loss[-max(1, len(loss) // 20) :]))
        ax.plot(steps, loss, color=f"C{i}", alpha=0.3, linewidth=0.8)
        ax.plot(steps, smooth, color=f"C{i}", linewidth=1.6, label=f"{name} (end {tail:.4g})")
    ylabel = "training loss"
    if finite:
        every = np.concatenate(finite)
        if (every > 0).all():
            ax.set_yscale("log")
            ylabel += " (log scale)"
        else:  # log is impossible (an NLL can be negative): clip the warm-up spike instead
            top = float(np.percentile(every, clip_percentile))
            bottom = float(every.min())
            pad = 0.05 * (top - bottom or 1.0)
            if every.max() > top:
                ylabel += f" (clipped at the {clip_percentile:g}th percentile)"
            ax.set_ylim(bottom - pad, top + pad)
        ax.legend(fontsize=8)
    ax.set(xlabel="step", ylabel=ylabel, title=title or "loss curves (faint: per step; solid: smoothed)")
    fig.tight_layout()
    return fig


def plot_loss_curves(
    curves: dict[str, list[tuple[int, float]]],
    path: str | Path,
    title: str = "",
    clip_percentile: float = 99.0,
) -> Path:
    """Training loss against step, one line per network (``curves``: name -> (step, loss)).

    A warm-up spike does not flatten the rest: the y axis is log-scaled when every loss is
    positive, otherwise clipped at the ``clip_percentile``-th percentile of the losses.
    Each network is drawn per step (faint) and smoothed over ~2 % of its steps (solid),
    labelled with the mean of its last 5 %.
    """
    return _save(loss_curves_figure(curves, title, clip_percentile), path)


def plot_toy(curve: dict, cfg: dict, reward: dict, trained: dict, path: str | Path) -> Path:
    """The four toy figures: MSE vs excess CE (log-log), E[1/p] vs w, E[r] vs w, trained errors vs t."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(18, 3.8))
    rows = curve["rows"]
    for name in sorted({r["classifier"] for r in rows}):
        pts = [r for r in rows if r["classifier"] == name]
        axes[0].loglog(
            [r["excess_ce"] for r in pts],
            [r["guidance_mse_exact"] for r in pts],
            "o" if name.startswith("shift") else "*",
            label=name,
            markersize=5,
        )
    axes[0].set(
        xlabel="excess cross-entropy",
        ylabel="guidance MSE (exact)",
        title=f"slope {curve['slope']:.2f}, max MSE/(d sqrt(CE)) {curve['max_ratio']:.2f}",
    )
    axes[0].legend(fontsize=6)
    w = cfg["weights"]
    axes[1].plot(w, cfg["inv_prob_exact"], "o-", label="exact (quadrature)")
    axes[1].plot(w, [s["inv_prob_median"] for s in cfg["samples"]], "s--", label="CFG samples: median")
    axes[1].axhline(cfg["inv_prior"], color="grey", linestyle=":", label="1/p(c)")
    axes[1].set(xlabel="CFG weight w", ylabel="E[1/p(c|x)]", title="CFG lowers E[1/p]")
    axes[1].legend(fontsize=7)
    rw = reward["rows"]
    axes[2].errorbar(
        [r["w"] for r in rw],
        [r["reward_mean"] for r in rw],
        yerr=[2 * r["reward_se"] for r in rw],
        marker="o",
        capsize=3,
        label="sampled (2 SE)",
    )
    axes[2].plot([1.0], [reward["reward_exact_w1"]], "r*", markersize=12, label="exact E_{p^r}[r]")
    axes[2].set(xlabel="reward weight w", ylabel="E[r(x)]", title="reward guidance raises E[r]")
    axes[2].legend(fontsize=7)
    tr = trained["rows"]
    t = [r["t"] for r in tr]
    axes[3].semilogy(t, [r["score_rel_mse"] for r in tr], "o-", label="score rel. MSE")
    axes[3].semilogy(t, [r["reward_score_rel_mse"] for r in tr], "s-", label="reweighted score rel. MSE")
    axes[3].semilogy(
        t, [max(r["classifier_excess_ce"], 1e-8) for r in tr], "^-", label="classifier excess CE"
    )
    axes[3].set(xlabel="noise level t", title="trained by molguide's Trainer")
    axes[3].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def strict_problems(mol) -> str:
    """What keeps a molecule from strict validity, read from its ``annotated_mols`` tags.

    A short label for a legend, e.g. "charged", "radical", "2 frags", "missing H",
    "EDM-invalid", "no bonds" (bond perception failed, so no strict tags), joined by
    commas; "" for a strictly valid molecule; "not evaluated" without tags.
    """
    if not mol.HasProp("valid_strict"):
        return "not evaluated"
    if mol.GetProp("valid_strict") == "1":
        return ""
    problems = []
    if mol.HasProp("valid") and mol.GetProp("valid") != "1":
        problems.append("EDM-invalid")
    if not mol.HasProp("fragments"):  # no perceived bonds: strict validity had nothing to look at
        problems.append("no bonds")
    else:

        def count(key: str) -> int:
            return int(mol.GetProp(key)) if mol.HasProp(key) else 0

        fragments = count("fragments")
        if fragments == 0:  # the strict check could not sanitise the perceived molecule
            problems.append("unsanitisable")
        if count("charged_atoms"):
            problems.append("charged")
        if count("radical_electrons"):
            problems.append("radical")
        if fragments > 1:
            problems.append(f"{fragments} frags")
        if count("missing_h"):
            problems.append("missing H")
    return ", ".join(problems) or "not strictly valid"


def _is_strict(mol) -> bool:
    return mol.HasProp("valid_strict") and mol.GetProp("valid_strict") == "1"


def value_label(mol, label_prop: str | None) -> str:
    """A molecule's ``label_prop`` with the property's short name and unit, e.g. "gap 7.61 eV"
    (``evaluator_gap_eV`` or ``gap_eV``); "" when it does not carry it or it is not a number."""
    if not label_prop or not mol.HasProp(label_prop):
        return ""
    try:
        value = float(mol.GetProp(label_prop))
    except ValueError:
        return ""
    if not math.isfinite(value):
        return ""
    short, _, unit = property_label(label_prop)
    return f"{short} {value:.2f} {unit}".strip()


def rows_without_strict(rows: dict[str, list]) -> list[str]:
    """The settings of ``rows`` that have no strictly valid molecule."""
    return [name for name, mols in rows.items() if not any(_is_strict(m) for m in mols)]


def grid_cells(
    rows: dict[str, list], per_row: int = 6, label_prop: str | None = None, strict_only: bool = True
) -> list[tuple]:
    """The cells of :func:`plot_molecule_grid`: (molecule or None for an empty cell, legend).

    Per row (setting), the strictly valid molecules (tag ``valid_strict`` == "1", in their
    order), up to ``per_row``. With ``strict_only`` (the default) the other molecules are
    kept out, except in a row that has no strictly valid one: there they are drawn, each
    labelled by what is wrong (:func:`strict_problems`). Without it, the others (EDM-invalid
    ones and those without bonds included) follow the strictly valid ones in every row.
    A legend reads "<setting>: <value>" (:func:`value_label`, e.g. "unguided: gap 7.61 eV")
    plus the problems in brackets; short rows are padded with empty cells.
    """
    cells: list[tuple] = []
    for name, candidates in rows.items():
        strict = [m for m in candidates if _is_strict(m)]
        others = [m for m in candidates if not _is_strict(m)]
        chosen = (strict if strict_only and strict else strict + others)[:per_row]
        for mol in chosen:
            problems = strict_problems(mol)
            legend = ": ".join(part for part in (name, value_label(mol, label_prop)) if part)
            cells.append((mol, (legend + (f" ({problems})" if problems else "")).strip()))
        cells += [(None, "")] * (per_row - len(chosen))  # keep one setting per row
    return cells


def _drawable(mol):
    """A 2D copy to draw: heavy atoms with 2D coordinates; without bonds, the heavy atoms
    (all atoms when there are none) at their 3D positions projected on their main plane."""
    from rdkit import Chem
    from rdkit.Chem import AllChem
    from rdkit.Geometry import Point3D

    from molguide.data.io import rdkit_messages

    with rdkit_messages():
        if mol.GetNumBonds() == 0:
            heavy = [a.GetIdx() for a in mol.GetAtoms() if a.GetAtomicNum() != 1]
            keep = heavy or list(range(mol.GetNumAtoms()))
            flat = Chem.RWMol()
            for i in keep:
                atom = Chem.Atom(mol.GetAtomWithIdx(i).GetAtomicNum())
                atom.SetNoImplicit(True)
                flat.AddAtom(atom)
            flat = flat.GetMol()
            if keep and mol.GetNumConformers():
                xyz = mol.GetConformer().GetPositions()[keep]
                xyz = xyz - xyz.mean(axis=0)
                axes = np.linalg.svd(xyz, full_matrices=False)[2] if len(keep) > 1 else np.eye(3)
                plane = xyz @ axes[:2].T
                conf = Chem.Conformer(len(keep))
                for i, (x, y) in enumerate(plane):
                    conf.SetAtomPosition(i, Point3D(float(x), float(y), 0.0))
                flat.AddConformer(conf, assignId=True)
            else:
                AllChem.Compute2DCoords(flat)
        else:
            flat = Chem.RemoveHs(Chem.Mol(mol), sanitize=False)
            AllChem.Compute2DCoords(flat)
        flat.UpdatePropertyCache(strict=False)
    return flat


def grid_title(rows: dict[str, list], label_prop: str | None = None, strict_only: bool = True) -> str:
    """The heading of :func:`plot_molecule_grid`: what is drawn, the value shown, and the
    settings without any strictly valid molecule (drawn with their invalid ones)."""
    what = "strictly valid samples" if strict_only else "samples, strictly valid first"
    if label_prop:
        _, description, unit = property_label(label_prop)
        source = "predicted " if label_prop.startswith("evaluator_") else ""
        what += f"; value: {source}{description}" + (f" ({unit})" if unit else "")
    missing = rows_without_strict(rows)
    if missing:
        named = ", ".join(name or "all" for name in missing)
        what += f"; NO strictly valid molecule in: {named} (invalid ones shown, labelled)"
    return what


def _with_title(image, title: str):
    """The grid image with ``title`` written above it (wrapped to the image's width)."""
    import textwrap

    from PIL import Image, ImageDraw, ImageFont

    try:
        font = ImageFont.load_default(size=15)
    except TypeError:  # Pillow < 10.1: one bitmap size
        font = ImageFont.load_default()
    lines = textwrap.wrap(title, width=max(20, image.width // 8))
    height = 10 + 20 * len(lines)
    out = Image.new("RGB", (image.width, image.height + height), "white")
    out.paste(image.convert("RGB"), (0, height))
    draw = ImageDraw.Draw(out)
    for k, line in enumerate(lines):
        draw.text((8, 5 + 20 * k), line, fill="black", font=font)
    return out


def plot_molecule_grid(
    rows: dict[str, list],
    path: str | Path,
    label_prop: str | None = None,
    per_row: int = 6,
    strict_only: bool = True,
    title: str | None = None,
) -> Path:
    """A grid image of molecules, one row per setting (:func:`grid_cells` chooses them).

    ``rows`` maps a setting name to RDKit Mols (as returned by ``annotated_mols``). By
    default only strictly valid molecules are drawn; a row without any shows its invalid
    ones labelled by what is wrong, and the heading (:func:`grid_title`, or ``title``)
    says so. A molecule without bonds is drawn as its atoms. Each legend shows the
    setting and ``label_prop`` (e.g. ``evaluator_gap_eV``) as "gap 7.61 eV".
    """
    from rdkit import Chem
    from rdkit.Chem import Draw

    cells = grid_cells(rows, per_row, label_prop, strict_only)
    mols = [Chem.Mol() if mol is None else _drawable(mol) for mol, _ in cells]
    legends = [legend for _, legend in cells]
    image = Draw.MolsToGridImage(mols, molsPerRow=per_row, subImgSize=(220, 180), legends=legends)
    heading = grid_title(rows, label_prop, strict_only) if title is None else title
    (_with_title(image, heading) if heading else image).save(str(path))
    return Path(path)


def plot_mae_against_theory(points: list[dict], correlations: dict, path: str | Path) -> Path:
    """Conditional MAE (relative to unguided) against the guidance network's integrated
    cross-entropy and against its guidance-error estimate, one point per property and
    kind, with Spearman's rho per kind: does the ordering the theory predicts hold?"""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    kinds = list(dict.fromkeys(p["kind"] for p in points))
    for i, kind in enumerate(kinds):
        mine = [p for p in points if p["kind"] == kind]
        rho = correlations.get(kind, {})
        for ax, key, corr in (
            (axes[0], "cross_entropy", "mae_vs_cross_entropy"),
            (axes[1], "guidance_mse_est", "mae_vs_guidance_error"),
        ):
            shown = [p for p in mine if p.get(key) is not None and p.get("mae_ratio") is not None]
            if not shown:
                continue
            r = rho.get(corr, {}).get("rho")
            label = f"{kind} (rho {r:+.2f})" if r is not None else kind
            ax.scatter([p[key] for p in shown], [p["mae_ratio"] for p in shown], color=f"C{i}", label=label)
            for p in shown:
                ax.annotate(p["property"], (p[key], p["mae_ratio"]), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")  # fmt: skip
    axes[0].set(xlabel="integrated cross-entropy (classifier: CE / log K; regressor: NLL)",
                ylabel="conditional MAE / unguided MAE", title="MAE against cross-entropy")  # fmt: skip
    axes[1].set(xlabel="guidance-error estimate (integrated over t)", title="MAE against guidance error")
    for ax in axes:
        ax.axhline(1.0, color="grey", lw=0.8, ls=":")  # no better than unguided
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_lead_curve(rows: list[dict], path: str | Path, ylabel: str = "improvement over the lead") -> Path:
    """Lead optimisation against the start level t0, one line per setting: the improvement
    over the lead with its interval (rows with ``improvement``, ``ci_low``, ``ci_high``;
    the panel is left out when no row has one) beside the Tanimoto similarity to the lead
    and strict validity."""
    plt = _pyplot()
    with_gain = any(r.get("improvement") is not None for r in rows)
    fig, axes = plt.subplots(1, 2 if with_gain else 1, figsize=(10 if with_gain else 5.5, 4), squeeze=False)
    left, right = (axes[0][0], axes[0][1]) if with_gain else (None, axes[0][0])
    for setting in dict.fromkeys(r["setting"] for r in rows):
        mine = [r for r in rows if r["setting"] == setting]
        t0 = [r["t0"] for r in mine]
        if left is not None and all(r.get("improvement") is not None for r in mine):
            mean = np.array([r["improvement"] for r in mine], dtype=float)
            low = np.array([r["ci_low"] for r in mine], dtype=float)
            high = np.array([r["ci_high"] for r in mine], dtype=float)
            left.errorbar(t0, mean, yerr=[mean - low, high - mean], marker="o", capsize=3, label=setting)
        similarity = [math.nan if r.get("tanimoto_to_lead") is None else r["tanimoto_to_lead"] for r in mine]
        right.plot(t0, similarity, marker="o", label=f"{setting}: Tanimoto")
        valid = [r["validity_strict"] for r in mine]
        right.plot(t0, valid, marker="s", linestyle="--", label=f"{setting}: strict valid")
    if left is not None:
        left.axhline(0, color="grey", linewidth=0.8)
        left.set(xlabel="start level t0", ylabel=ylabel, title="improvement (95 % CI)")
        left.legend()
    right.set(xlabel="start level t0", ylabel="fraction", title="similarity and validity", ylim=(0, 1.05))
    right.legend(fontsize=7)
    return _save(fig, path)
