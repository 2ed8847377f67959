"""Judging generated molecules and comparing guided with unguided samples (docs/theory.md).

:func:`judge` turns one set of samples into per-sample arrays (index = sample
number, NaN where a sample failed or has no value) and quality metrics;
:func:`paired_report` compares two judged sets sample by sample.

Conventions: rates are over all requested samples, a lost or invalid sample
counting as a miss; property differences use the pairs where both molecules have a
value (their number is logged as ``n_pairs``). p(y|x) for E[1/p] comes from the
clean evaluator, read as a Gaussian around its prediction with its validation RMSE.
"""

from __future__ import annotations

import math

import numpy as np

from molguide.chem.evaluate import annotated_mols, evaluate, over_requested, write_annotated_sdf
from molguide.data.molecules import Molecule
from molguide.diagnostics.statistics import (
    bootstrap_mean,
    inverse_probability_summary,
    nanmean,
    paired_improvement,
)
from molguide.guidance.kinds import RewardRecord
from molguide.guidance.targets import PropertyTarget, reward_logits
from molguide.models.predictor import MoleculePredictor, predict_samples
from molguide.storage.metadata import EvaluatorRecord


def class_probability(pred: np.ndarray, rmse: float, target: PropertyTarget) -> np.ndarray:
    """P(value in the target bin) for a Gaussian N(pred, rmse^2) (the evaluator as a classifier)."""
    edges = [-math.inf, *target.edges, math.inf]
    lo, hi = edges[target.target_class], edges[target.target_class + 1]
    from scipy.stats import norm

    return norm.cdf((hi - pred) / rmse) - norm.cdf((lo - pred) / rmse)


def reward_values(
    values: np.ndarray, beta: float, direction: float, mean: float, std: float, clip_z: float | None = None
) -> np.ndarray:
    """r(x) = exp(beta * direction * z(v)), the reward the reward model was trained with."""
    return np.exp(reward_logits(values, beta, direction, mean, std, clip_z))


def judge(
    molecules: list[Molecule | None],
    failures: dict[int, str],
    n_requested: int,
    evaluator: MoleculePredictor,
    evaluator_record: EvaluatorRecord,
    target: PropertyTarget,
    onehot_scale: float,
    reference_smiles,
    xtb: bool,
    xtb_calibration: tuple[float, float] | None,
    progress: bool = False,
    requested_atoms: int | None = None,
) -> dict:
    """Quality metrics and per-sample arrays of one set of samples.

    Per-sample arrays (length ``n_requested``): ``evaluator`` and ``xtb`` values (NaN
    where lost), ``hits``, ``valid`` (EDM validity) and ``valid_strict`` (False where
    lost). ``validity``, ``validity_strict`` and ``mol_stability`` are over all requested
    (:func:`molguide.chem.evaluate.over_requested`), atom stability too when
    ``requested_atoms`` (the atoms of every requested sample) is given.
    """
    prop = target.name
    if len(molecules) != n_requested:
        raise ValueError(f"{len(molecules)} entries for {n_requested} requested samples")
    present = [k for k, m in enumerate(molecules) if m is not None]
    mols = [molecules[k] for k in present]
    pred = predict_samples(evaluator, molecules, evaluator_record.mean, evaluator_record.std, onehot_scale)
    for k in present:
        molecules[k].properties[f"evaluator_{prop}"] = float(pred[k])
    ev = evaluate(mols, reference_smiles=reference_smiles, descriptors=False, xtb=xtb, progress=progress)
    valid = np.zeros(n_requested, dtype=bool)  # EDM validity
    valid_strict = np.zeros(n_requested, dtype=bool)
    xtb_values = np.full(n_requested, np.nan)
    for k, r in zip(present, ev.molecules):
        valid[k], valid_strict[k] = r.valid, r.valid_strict
        raw = r.properties.get(f"xtb_{prop}")
        if raw is not None and xtb_calibration is not None:
            xtb_values[k] = xtb_calibration[0] * raw + xtb_calibration[1]
    # Chemistry metrics over all requested samples (lost ones are invalid and unstable).
    metrics = over_requested(ev.metrics, mols, n_requested, requested_atoms)
    hits = np.where(np.isfinite(pred), target.hits(np.nan_to_num(pred)), False).astype(float)
    metrics["target_hit_rate"] = float(hits.mean())
    metrics[f"evaluator_{prop}_mean"] = nanmean(pred)
    xtb_hits = None
    if xtb and xtb_calibration is not None:
        xtb_hits = np.where(np.isfinite(xtb_values), target.hits(np.nan_to_num(xtb_values)), False).astype(
            float
        )
        metrics["target_hit_rate_xtb"] = float(xtb_hits.mean())
        metrics[f"xtb_{prop}_mean"] = nanmean(xtb_values)
    if target.target_value is not None:
        metrics["mae_to_target"] = nanmean(np.abs(pred - target.target_value))
    rmse = float(evaluator_record.reference_rows.get("evaluator_rmse", evaluator_record.std * 0.3))
    p_target = class_probability(pred[np.isfinite(pred)], rmse, target)
    metrics.update(inverse_probability_summary(p_target))

    def write_sdf(path) -> int:
        return write_annotated_sdf(ev, mols, path)

    return {
        "metrics": metrics,
        "evaluator": pred,
        "xtb": xtb_values,
        "hits": hits,
        "xtb_hits": xtb_hits,
        "valid": valid,
        "valid_strict": valid_strict,
        "write_sdf": write_sdf,
        "rdkit": lambda: annotated_mols(ev, mols),
    }


def paired_report(
    guided: dict, unguided: dict, target: PropertyTarget, reward_record: RewardRecord | None
) -> dict:
    """Improvement of ``guided`` over ``unguided`` (same seeds), with bootstrap 95 % intervals."""
    direction = target.direction or 1.0
    out: dict[str, float] = {}
    imp, frac = paired_improvement(guided["evaluator"], unguided["evaluator"], direction)
    out.update(imp.as_metrics("property_improvement"))
    out["fraction_improved"], out["n_pairs"] = frac, float(imp.n)
    out["target_hit_rate_unguided"] = unguided["metrics"]["target_hit_rate"]
    out.update(bootstrap_mean(guided["hits"] - unguided["hits"]).as_metrics("target_hit_rate_gain"))
    if guided["xtb_hits"] is not None and unguided["xtb_hits"] is not None:
        imp_x, frac_x = paired_improvement(guided["xtb"], unguided["xtb"], direction)
        out.update(imp_x.as_metrics("property_improvement_xtb"))
        out["fraction_improved_xtb"], out["n_pairs_xtb"] = frac_x, float(imp_x.n)
        out["target_hit_rate_xtb_unguided"] = unguided["metrics"]["target_hit_rate_xtb"]
        out.update(
            bootstrap_mean(guided["xtb_hits"] - unguided["xtb_hits"]).as_metrics("target_hit_rate_xtb_gain")
        )
    if reward_record is not None:
        r = reward_record
        args = (r.beta, r.direction, r.mean, r.std, r.clip_z)
        r_g, r_u = reward_values(guided["evaluator"], *args), reward_values(unguided["evaluator"], *args)
        out.update(paired_improvement(r_g, r_u, 1.0)[0].as_metrics("reward_improvement"))
        out["reward_mean"] = nanmean(r_g)
        out["reward_mean_unguided"] = nanmean(r_u)
    return out
