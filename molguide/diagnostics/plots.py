"""PNG figures for MLflow: noise-level diagnostics, property histograms, improvement vs weight,
sample molecules.

matplotlib with the Agg backend (no display needed); every function writes one file.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from molguide.guidance.kinds import GUIDANCE_KINDS


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_noise_levels(rows, path: str | Path, title: str = "") -> Path:
    """Cross-entropy, accuracy/ECE and estimated guidance error against the noise level t."""
    plt = _pyplot()
    rows = [r.as_dict() if hasattr(r, "as_dict") else r for r in rows]
    t = [(r["t_low"] + r["t_high"]) / 2 for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(t, [r["classifier_ce"] for r in rows], "o-")
    axes[0].set(xlabel="noise level t", ylabel="held-out cross-entropy (nats)", title="classifier CE")
    axes[1].plot(t, [r["classifier_accuracy"] for r in rows], "o-", label="accuracy")
    axes[1].plot(t, [r["classifier_ece"] for r in rows], "s--", label="ECE")
    axes[1].set(xlabel="noise level t", title="accuracy and calibration")
    axes[1].legend()
    kind = rows[0]["guidance_mse_kind"] if rows else ""
    est = [r["guidance_mse_est"] for r in rows]
    axes[2].semilogy(t, est, "o-", label=f"guidance_mse_est ({kind})")
    if kind != "bound":
        axes[2].semilogy(t, [r["guidance_mse_bound"] for r in rows], "s--", label="bound d L sqrt(CE)")
    axes[2].set(xlabel="noise level t", title="estimated guidance error")
    axes[2].legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_histograms(judged: dict[str, dict], target, path: str | Path) -> Path:
    """Evaluator (and xTB) property histograms of every setting against the unguided one."""
    plt = _pyplot()
    sources = [("evaluator", "evaluator")] + (
        [("xtb", "xTB (calibrated)")] if any(np.isfinite(j["xtb"]).any() for j in judged.values()) else []
    )
    fig, axes = plt.subplots(1, len(sources), figsize=(6 * len(sources), 3.8), squeeze=False)
    for ax, (key, label) in zip(axes[0], sources):
        allv = np.concatenate([j[key][np.isfinite(j[key])] for j in judged.values()])
        if len(allv) == 0:
            continue
        bins = np.linspace(np.quantile(allv, 0.005), np.quantile(allv, 0.995), 40)
        for name, j in judged.items():
            v = j[key][np.isfinite(j[key])]
            ax.hist(
                v,
                bins=bins,
                histtype="step",
                linewidth=2 if name == "unguided" else 1.2,
                label=f"{name} (mean {v.mean():.3g})" if len(v) else name,
            )
        for edge in target.edges:
            ax.axvline(edge, color="grey", linestyle=":")
        ax.set(
            xlabel=f"{target.name} ({label})",
            ylabel="molecules",
            title=f"target: class {target.target_class}",
        )
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


_IMPROVEMENT_KEYS = ("property_improvement", "property_improvement_ci_low", "property_improvement_ci_high")


def plot_sweep(results: dict[str, dict], path: str | Path) -> Path:
    """Property improvement (with its interval) and hit rate against the guidance weight."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for i, kind in enumerate(GUIDANCE_KINDS.values()):
        marker, color, label = kind.marker, f"C{i}", kind.label or kind.name
        named = sorted(
            ((float(n.split("_w")[1]), m) for n, m in results.items() if n.startswith(kind.name + "_w"))
        )
        if not named:
            continue
        reference = results.get(kind.reference, {})
        if not kind.zero_weight_guides:  # weight 0 is the reference itself: no change
            named = [(0.0, {**reference, **dict.fromkeys(_IMPROVEMENT_KEYS, 0.0)}), *named]
        w = [x for x, _ in named]
        imp = [m.get("property_improvement", math.nan) for _, m in named]
        lo = [m.get("property_improvement_ci_low", math.nan) for _, m in named]
        hi = [m.get("property_improvement_ci_high", math.nan) for _, m in named]
        axes[0].errorbar(
            w,
            imp,
            yerr=[np.subtract(imp, lo), np.subtract(hi, imp)],
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
    axes[0].set(xlabel="guidance weight w", ylabel="property improvement (95% CI)")
    axes[1].set(xlabel="guidance weight w", ylabel="target hit rate")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


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


def grid_cells(rows: dict[str, list], per_row: int = 6, label_prop: str | None = None) -> list[tuple]:
    """The cells of :func:`plot_molecule_grid`: (molecule or None for an empty cell, legend).

    Per row (setting), the strictly valid molecules first (tag ``valid_strict`` == "1",
    in their order), then the others (EDM-invalid ones and those without bonds
    included) up to ``per_row``, each labelled by what is wrong
    (:func:`strict_problems`); short rows are padded with empty cells.
    """
    cells: list[tuple] = []
    for name, candidates in rows.items():
        strict = [m for m in candidates if m.HasProp("valid_strict") and m.GetProp("valid_strict") == "1"]
        others = [
            m for m in candidates if not (m.HasProp("valid_strict") and m.GetProp("valid_strict") == "1")
        ]
        chosen = (strict + others)[:per_row]
        for mol in chosen:
            value = f" {float(mol.GetProp(label_prop)):.2f}" if label_prop and mol.HasProp(label_prop) else ""
            problems = strict_problems(mol)
            legend = f"{name}{value}" + (f" ({problems})" if problems else "")
            cells.append((mol, legend.strip()))
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


def plot_molecule_grid(
    rows: dict[str, list], path: str | Path, label_prop: str | None = None, per_row: int = 6
) -> Path:
    """A grid image of molecules, one row per setting (:func:`grid_cells` chooses them).

    ``rows`` maps a setting name to RDKit Mols (as returned by ``annotated_mols``): the
    strictly valid ones are drawn first, then the others with what is wrong in the
    legend; a molecule without bonds is drawn as its atoms. The legend shows the setting
    and ``label_prop`` when the molecule carries it.
    """
    from rdkit import Chem
    from rdkit.Chem import Draw

    cells = grid_cells(rows, per_row, label_prop)
    mols = [Chem.Mol() if mol is None else _drawable(mol) for mol, _ in cells]
    legends = [legend for _, legend in cells]
    image = Draw.MolsToGridImage(mols, molsPerRow=per_row, subImgSize=(220, 180), legends=legends)
    image.save(str(path))
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
