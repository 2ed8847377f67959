"""Plain-text tables: the summaries pipelines print at the end (logged as ``summary.txt``)
and EDM's protocol tables (stability, conditional MAE) beside the published rows."""

from __future__ import annotations

import math

from molguide.diagnostics.published import PUBLISHED_MAE, PUBLISHED_STABILITY, TABLE_UNITS
from molguide.diagnostics.quality import PROTOCOL_QUALITY
from molguide.diagnostics.statistics import is_finite_number
from molguide.diagnostics.theory_rows import theory_correlations, theory_points
from molguide.runs.config import RunConfig


def _num(value, fmt: str = ".3f") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return format(value, fmt)


def _interval(metrics: dict, key: str) -> str:
    if key not in metrics:
        return "-"
    return (
        f"{_num(metrics[key], '+.3f')} [{_num(metrics.get(key + '_ci_low'), '+.3f')}, "
        f"{_num(metrics.get(key + '_ci_high'), '+.3f')}]"
    )


def guidance_table(guide: dict, unit: str = "") -> str:
    """One line per sampling setting: improvement with its 95 % interval, hit rates, quality
    (``validity`` is EDM's, ``strict val`` is ``validity_strict``)."""
    results = guide["results"]
    lines = [
        f"target: {guide['target']}; {guide['n_samples']} paired samples, {guide['sampling_steps']} steps",
        f"{'setting':<18} {'improvement ' + unit + ' [95% CI]':<32} {'hit rate':>9} {'unguided':>9} "
        f"{'validity':>9} {'strict val':>10} {'atom stab':>9} {'mol stab':>9}",
    ]
    for name, m in results.items():
        ref = m.get("target_hit_rate_unguided")
        lines.append(
            f"{name:<18} {_interval(m, 'property_improvement'):<32} {_num(m.get('target_hit_rate')):>9} "
            f"{_num(ref):>9} {_num(m.get('validity')):>9} {_num(m.get('validity_strict')):>10} "
            f"{_num(m.get('atom_stability')):>9} {_num(m.get('mol_stability')):>9}"
        )
    reward = [(n, m) for n, m in results.items() if n.startswith("reward") and "reward_improvement" in m]
    for name, m in reward:
        lines.append(f"reward_improvement ({name}): {_interval(m, 'reward_improvement')}")
    xtb = [(n, m) for n, m in results.items() if "target_hit_rate_xtb" in m]
    if xtb:  # the physics oracle, independent of every learned model
        head = f"{'GFN2-xTB judges':<18} {'improvement ' + unit + ' [95% CI]':<32}"
        lines.append(f"{head} {'hit rate':>9} {'unguided':>9}")
        for name, m in xtb:
            lines.append(
                f"{name:<18} {_interval(m, 'property_improvement_xtb'):<32} "
                f"{_num(m.get('target_hit_rate_xtb')):>9} {_num(m.get('target_hit_rate_xtb_unguided')):>9}"
            )
    return "\n".join(lines)


def sampling_table(sample: dict) -> str:
    """Quality of unconditional samples per sampler setting (the ``sample`` step)."""
    lines = [
        f"{'unguided sampling':<18} {'validity':>9} {'strict val':>10} {'atom stab':>9} {'mol stab':>9} "
        f"{'s/molecule':>11}"
    ]
    for tag, m in sample["results"].items():
        lines.append(
            f"{tag:<18} {_num(m.get('validity')):>9} {_num(m.get('validity_strict')):>10} "
            f"{_num(m.get('atom_stability')):>9} {_num(m.get('mol_stability')):>9} "
            f"{_num(m.get('sample_s_per_molecule')):>11}"
        )
    return "\n".join(lines)


def noise_level_table(rows: list[dict]) -> str:
    """Classifier cross-entropy, accuracy, ECE and estimated guidance error per noise-level bin."""
    if not rows:
        return "no noise-level diagnostics (no classifier)"
    kind = rows[0].get("guidance_mse_kind", "")
    lines = [
        f"{'noise level t':<14} {'classifier_ce':>13} {'accuracy':>9} {'ece':>7} "
        f"{'guidance_mse_est (' + kind + ')':>26}"
    ]
    for r in rows:
        lines.append(
            f"{r['t_low']:.1f}-{r['t_high']:.1f}{'':<7} {_num(r['classifier_ce']):>13} "
            f"{_num(r['classifier_accuracy']):>9} {_num(r['classifier_ece']):>7} "
            f"{_num(r['guidance_mse_est'], '.3g'):>26}"
        )
    return "\n".join(lines)


def training_table(steps: dict[str, dict]) -> str:
    """Steps, minutes and final loss of each training step of a composite pipeline.

    A step marked ``reused`` finished in an earlier run of the same command (its numbers
    are that run's).
    """
    if not any("final_loss" in s for s in steps.values()):
        return ""
    width = max(18, *(len(n) + 1 for n, s in steps.items() if "final_loss" in s))
    lines = [f"{'trained':<{width}} {'steps':>7} {'minutes':>8} {'final loss':>11}  extra"]
    for name, s in steps.items():
        if "pretrained" in s:  # model.pretrained: taken as it is, not trained here
            lines.append(
                f"{name:<{width}} {s['steps']:>7} {'-':>8} {'-':>11}  {s['pretrained']}, not trained here"
            )
        if "final_loss" not in s:
            continue
        extra = ["finished earlier, reused"] if s.get("reused") else []
        if "evaluator_mae" in s:
            extra.append(
                f"MAE {s['evaluator_mae']:.3f} (naive {s['naive_mae']:.3f}, #atoms {s['atoms_mae']:.3f})"
            )
        if "reward_weight_ess_fraction" in s:
            extra.append(f"reward ESS {100 * s['reward_weight_ess_fraction']:.1f}%")
        numbers = f"{s['steps']:>7} {_num(s['minutes'], '.1f'):>8} {_num(s['final_loss'], '.4f'):>11}"
        lines.append(f"{name:<{width}} {numbers}  {'; '.join(extra)}".rstrip())
    return "\n".join(lines)


# Column labels and number formats of EDM's conditional table (docs/protocol.md order).
MAE_COLUMNS: dict[str, tuple[str, str]] = {
    "alpha_bohr3": ("alpha", ".2f"),
    "gap_eV": ("gap", ".0f"),
    "homo_eV": ("HOMO", ".0f"),
    "lumo_eV": ("LUMO", ".0f"),
    "mu_D": ("mu", ".3f"),
    "cv_calmolK": ("Cv", ".3f"),
}
STABILITY_COLUMNS = (
    ("atom_stability", "atom stab %"),
    ("mol_stability", "mol stab %"),
    ("validity", "valid %"),
    ("validity_strict", "strict valid %"),
    ("valid_unique", "valid*unique %"),
)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured Markdown table (readable as plain text too)."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"

    return "\n".join([line(header), "| " + " | ".join("-" * w for w in widths) + " |", *map(line, rows)])


def stability_table(rows: list[dict]) -> str:
    """EDM's unconditional table: one row per source (fractions in, percentages out).

    Each row: ``source`` (measured / published), ``row`` (what), ``n`` (molecules, or
    None) and the fractions ``atom_stability``, ``mol_stability``, ``validity`` (EDM's),
    ``validity_strict``, ``valid_unique`` (None or absent where not reported: "-").
    """
    header = ["source", "row", "n", *(label for _, label in STABILITY_COLUMNS)]
    body = []
    for r in rows:
        cells = [_num(100 * r[k] if r.get(k) is not None else None, ".2f") for k, _ in STABILITY_COLUMNS]
        body.append([r["source"], r["row"], "-" if r.get("n") is None else f"{r['n']:,}", *cells])
    return markdown_table(header, body)


def conditional_mae_table(rows: list[dict], units: dict[str, tuple[str, float]]) -> str:
    """EDM's conditional table: MAE per property (columns) for each row (a method or a reference).

    Each row: ``source``, ``row`` and ``mae`` = {property: MAE in the table's unit};
    ``units`` maps a property to (unit, factor) as in ``diagnostics.published.TABLE_UNITS``.
    """
    props = list(MAE_COLUMNS)
    header = ["source", "row", *(f"{MAE_COLUMNS[p][0]} ({units[p][0]})" for p in props)]
    body = [[r["source"], r["row"], *(_num(r["mae"].get(p), MAE_COLUMNS[p][1]) for p in props)] for r in rows]
    return markdown_table(header, body)


def toy_table(toy: dict) -> str:
    """The Gaussian-mixture checks of ``molguide run toy``, each beside its exact value."""
    cg = toy["classifier_guidance_w1"]
    mean, exact, se = cg["mean_sampled"], cg["mean_exact"], cg["mean_se"]
    lines = [
        "classifier guidance, exact classifier, w = 1 (must sample p(x | y)):",
        f"  mean ({mean[0]:.4f}, {mean[1]:.4f}) vs exact ({exact[0]:.4f}, {exact[1]:.4f}), SE {max(se):.4f}; "
        f"class fraction {cg['class_fraction_sampled']:.4f} vs {cg['class_fraction_exact']:.4f}",
        "reward guidance, exact scores:  w   E[r]      reward_improvement",
    ]
    for row in toy["reward_guidance"]["rows"]:
        lines.append(f"{'':<32}{row['w']:<4g}{row['reward_mean']:<10.3f}{row['reward_improvement']:+.3f}")
    lines.append(f"  closed form E_p^r[r] at w = 1: {toy['reward_guidance']['reward_exact_w1']:.3f}")
    cfg = toy["cfg"]
    lines.append("CFG:  w     inv_prob exact  inv_prob_mean  inv_prob_median (samples)")
    for w, ex, s in zip(cfg["weights"], cfg["inv_prob_exact"], cfg["samples"]):
        lines.append(f"      {w:<6g}{ex:<16.3f}{s['inv_prob_mean']:<15.3f}{s['inv_prob_median']:.3f}")
    lines.append(
        f"guidance_mse vs excess CE: log-log slope {toy['slope']:.2f}, "
        f"max MSE / (d sqrt(excess CE)) {toy['max_ratio']:.1f}"
    )
    lines.append(
        "trained networks:  t     classifier_ce  excess_ce_exact  guidance_mse_exact  score rel. MSE"
    )
    for r in toy["trained"]["rows"]:
        lines.append(
            f"{'':<19}{r['t']:<6.2f}{r['classifier_ce']:<15.4f}{r['classifier_excess_ce']:<17.2e}"
            f"{r['classifier_guidance_mse']:<20.3g}{r['score_rel_mse']:.3f}"
        )
    rows = toy["smoothness"]
    lines.append(
        f"smoothness check: the high-frequency perturbation is flagged at "
        f"{sum(r['rough_flagged'] for r in rows)} of {len(rows)} noise levels, the exact classifier at "
        f"{sum(r['exact_flagged'] for r in rows)}"
    )
    return "\n".join(lines)


def run_summary_table(out: dict, config: RunConfig) -> str:
    """The text a user reads at the end: training, guidance results, noise-level diagnostics."""
    from molguide.data.registry import dataset_of

    units = {p.name: p.unit for p in dataset_of(config.data).properties}
    parts = [f"molguide {out['pipeline']} ({config.name}, output in {config.output_dir})"]
    trained = {name: s for name, s in out["steps"].items() if name != "protocol-train"}
    trained.update(out["steps"].get("protocol-train", {}).get("parts", {}))
    parts.append(training_table(trained))
    if "sample" in out["steps"]:
        parts.append(sampling_table(out["steps"]["sample"]))
    guide = out["steps"].get("guide")
    if guide:
        parts.append(guidance_table(guide, f"({units.get(config.target.property, '')})"))
        parts.append(noise_level_table(guide["noise_levels"]))
    if out.get("unfinished"):
        parts.append(
            "not finished: " + ", ".join(out["unfinished"]) + " stopped at the time limit; the later "
            "steps did not run. Run the same command again to continue."
        )
    edm = out["steps"].get("protocol")
    if edm:
        parts.append(edm["header"])
        parts.append("unconditional (%)\n" + edm["stability_table"])
        parts.append(
            "conditional MAE (alpha bohr^3, gap/HOMO/LUMO meV, mu D, Cv cal/mol K)\n"
            + edm["conditional_mae_table"]
        )
        if edm.get("theory_table"):
            parts.append("the theory beside the rows\n" + edm["theory_table"])
        if edm.get("xtb_table"):
            parts.append("GFN2-xTB as a second judge (MAE on a subsample, calibrated)\n" + edm["xtb_table"])
        if edm.get("multi_property_table"):
            parts.append("several properties at once (MAE of both)\n" + edm["multi_property_table"])
        if edm.get("reused"):
            parts.append("reused from an earlier run of this command: " + ", ".join(edm["reused"]))
    return "\n\n".join(p for p in parts if p)


ROW_LABELS = {
    "naive": "Naive (shuffled targets)",
    "atoms": "#Atoms",
    "unguided": "molguide unguided",
    "lower_bound": "lower bound (evaluator on data)",
}


# ----------------------------------------------------------------------------- EDM protocol tables


def _model_description(config: RunConfig) -> str:
    kw = config.model.backbone_kwargs
    size = f" {kw['hidden']}x{kw['num_layers']}" if "hidden" in kw and "num_layers" in kw else ""
    return f"{config.model.backbone.upper()}{size}"


def _setting_label(name: str) -> str:
    if name in ROW_LABELS:
        return ROW_LABELS[name]
    from molguide.guidance.kinds import guidance_kind

    if name.endswith("_selected"):  # one row per kind, its weight chosen per property
        kind = guidance_kind(name.removesuffix("_selected"))
        shown = kind.label if kind.samples_own_network else f"{kind.label}-guided"
        return f"molguide {shown}, w chosen on the generator half"
    kind, _, weight = name.rpartition("_w")
    label = guidance_kind(kind).label or kind
    return f"molguide {label if guidance_kind(kind).samples_own_network else label + '-guided'}, w = {weight}"


def multi_property_table(per_pair: dict[str, dict]) -> tuple[str, list[dict]]:
    """EEGSDE's multi-property table: per pair of properties (columns), the MAE of both
    ("a / b") for each measured row (EEGSDE's published rows are not in it yet: docs/protocol.md)."""
    pairs = list(per_pair)
    names: list[str] = []
    for r in per_pair.values():
        names += [n for n in r["mae"] if n not in names]
    order = ["unguided", *[n for n in names if n not in ("unguided", "lower_bound")], "lower_bound"]
    rows = [
        {
            "source": "measured",
            "row": _pair_row_label(n),
            "key": n,
            "mae": {k: per_pair[k]["mae"].get(n) for k in pairs},
        }
        for n in order
    ]
    header = ["source", "row"]
    for k in pairs:
        header.append(" / ".join(f"{MAE_COLUMNS[p][0]} ({TABLE_UNITS[p][0]})" for p in k.split("+")))
    body = []
    for r in rows:
        cells = []
        for k in pairs:
            both = r["mae"].get(k)
            shown = [_num(both.get(p), MAE_COLUMNS[p][1]) for p in k.split("+")] if both else ["-"]
            cells.append(" / ".join(shown))
        body.append([r["source"], r["row"], *cells])
    return markdown_table(header, body), rows


def xtb_table(per_property: dict[str, dict]) -> str:
    """GFN2-xTB's MAE per row (the evaluator's rows, judged again by xTB on a subsample),
    with the number of molecules xTB judged; "" when no property had the xTB judge."""
    judged = {p: r["xtb"] for p, r in per_property.items() if r.get("xtb")}
    if not judged:
        return ""
    names: list[str] = []
    for x in judged.values():
        names += [n for n in x["mae"] if n not in names]
    order = [*[n for n in names if n != "lower_bound"], "lower_bound"]
    header = ["row", *(f"{MAE_COLUMNS[p][0]} ({TABLE_UNITS[p][0]})" for p in judged)]
    body = []
    for name in order:
        cells = []
        for p, x in judged.items():
            value = x["mae"].get(name)
            cells.append("-" if value is None else f"{_num(value, MAE_COLUMNS[p][1])} (n {x['n'][name]})")
        real = "lower bound (xTB on the pairs' real molecules)"
        body.append([real if name == "lower_bound" else _setting_label(name), *cells])
    return markdown_table(header, body)


def theory_table(points: list[dict], correlations: dict) -> str:
    """Per property and kind: the guidance network's integrated cross-entropy and
    guidance-error estimate beside the row's MAE ratio and E[1/p(c|x)]; then Spearman's rho."""
    if not points:
        return ""
    header = ["property", "kind", "integrated CE", "guidance-error est.", "MAE / unguided", "median 1/p(c|x)"]
    body = [
        [p["property"], p["kind"], f"{_num(p['cross_entropy'], '.3f')} ({p['cross_entropy_kind']})",
         _num(p["guidance_mse_est"], ".3g"), _num(p["mae_ratio"], ".3f"), _num(p["inv_prob_median"], ".3g")]
        for p in points
    ]  # fmt: skip
    lines = []
    for kind, c in correlations.items():
        parts = []
        for name, label in (("mae_vs_cross_entropy", "CE"), ("mae_vs_guidance_error", "guidance error")):
            r = c[name]
            parts.append(
                f"with {label}: "
                + ("too few points" if r["rho"] is None else f"rho {r['rho']:+.2f} (n {r['n']})")
            )
        lines.append(f"{kind}: Spearman rank correlation of MAE / unguided " + "; ".join(parts))
    return markdown_table(header, body) + "\n\n" + "\n".join(lines)


def _pair_row_label(name: str) -> str:
    if name in ROW_LABELS:
        return ROW_LABELS[name]
    from molguide.guidance.kinds import guidance_kind

    kind, _, weights = name.rpartition("_w")
    return f"molguide {guidance_kind(kind).label}-guided, w = {weights.replace('+', ' / ')}"


def protocol_tables(
    config: RunConfig,
    unconditional: dict,
    data_row: dict,
    per_property: dict[str, dict],
    score_steps: int,
    per_pair: dict[str, dict] | None = None,
) -> dict:
    """The stability, conditional-MAE and (with ``per_pair``) multi-property tables
    (Markdown and rows) and their metrics."""
    pc = config.protocol
    sampler = unconditional.get("sampler", f"{pc.method} sampler, {pc.steps} steps")
    stability_rows = [
        {
            "source": "measured",
            "row": f"molguide ({_model_description(config)}, {score_steps:,} training steps; {sampler})",
            "n": unconditional["n"],
            **unconditional["quality"],
        },
        {"source": "measured", "row": f"QM9 data ({config.data.split})", **data_row},
        *({"source": "published", "n": None, **r} for r in PUBLISHED_STABILITY),
    ]
    names: list[str] = []  # every measured row, in table order, over all properties
    for r in per_property.values():
        names += [n for n in r["mae"] if n not in names]
    order = ["naive", "atoms", "unguided", *[n for n in names if n not in ROW_LABELS], "lower_bound"]
    mae_rows = [
        {
            "source": "measured",
            "row": _setting_label(name),
            "key": name,
            "mae": {p: r["mae"][name] for p, r in per_property.items() if name in r["mae"]},
        }
        for name in order
    ]
    mae_rows += [
        {"source": "published", "row": name, "mae": values} for name, values in PUBLISHED_MAE.items()
    ]
    metrics: dict[str, float] = {}
    for p, r in per_property.items():
        metrics.update({f"mae_{p}_{name}": v for name, v in r["mae"].items()})
        for name, s in r.get("settings", {}).items():
            metrics.update({f"{p}.{name}.{k}": v for k, v in s["metrics"].items() if k in PROTOCOL_QUALITY})
    metrics.update({k: v for k, v in unconditional["quality"].items()})
    metrics.update({f"qm9_data_{k}": v for k, v in data_row.items() if k in PROTOCOL_QUALITY})
    header = (
        f"EDM protocol on QM9: evaluators trained on the evaluator half, score model and classifiers on "
        f"the {config.data.split}; {unconditional['n']:,} samples ({sampler})"
    )
    mae_table = conditional_mae_table(mae_rows, TABLE_UNITS)
    chosen = {p: r["chosen"] for p, r in per_property.items() if r.get("chosen")}
    if chosen:
        kinds = dict.fromkeys(k for c in chosen.values() for k in c)
        lines = []
        for k in kinds:
            weights = ", ".join(
                f"{p} w = {c[k]['weight']:g}"
                + ("" if c[k].get("kept_validity", True) else " (validity NOT kept)")
                for p, c in chosen.items()
                if k in c
            )
            lines.append(f"{k}: {weights}")
        mae_table += (
            "\n\nWeights chosen on the generator half (lowest MAE by the selector, an evaluator trained "
            f"on the generator half, with strict validity within {pc.max_validity_drop:g} of unguided): "
            + "; ".join(lines)
        )
    pair_table, pair_rows = multi_property_table(per_pair) if per_pair else ("", [])
    points = theory_points(per_property)
    correlations = theory_correlations(points)
    for p, r in per_property.items():
        for row, value in r.get("xtb", {}).get("mae", {}).items():
            metrics[f"xtb_mae_{p}_{row}"] = value
    for key, r in (per_pair or {}).items():  # MLflow's metric names take no "+"
        for row, both in r["mae"].items():
            pair = key.replace("+", ".")
            metrics.update({f"pair.{pair}.{row.replace('+', '_')}.mae_{p}": v for p, v in both.items()})
    return {
        "header": header,
        "stability_table": stability_table(stability_rows),
        "conditional_mae_table": mae_table,
        "multi_property_table": pair_table,
        "xtb_table": xtb_table(per_property),
        "theory_table": theory_table(points, correlations),
        "theory": {"points": points, "correlations": correlations},
        "multi_property": pair_rows,
        "chosen_weights": chosen,
        "stability": stability_rows,
        "conditional_mae": mae_rows,
        "units": {p: unit for p, (unit, _) in TABLE_UNITS.items()},
        "metrics": {k: float(v) for k, v in metrics.items() if is_finite_number(v)},
    }
