"""The ``toy`` pipeline: the guidance theory checked on a Gaussian mixture, in about a minute.

It runs every check of :mod:`molguide.toy.checks` and logs their numbers and a plot
to MLflow (experiment ``molguide-toy``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from molguide.toy.checks import (
    cfg_inverse_probability,
    error_versus_excess_ce,
    exact_classifier_guidance_check,
    mlp_classifier,
    reward_guidance_check,
    smoothness_check,
    train_toy_models,
    trained_model_errors,
)
from molguide.toy.vectors import default_mixture

log = logging.getLogger(__name__)

EXPERIMENT = "molguide-toy"


def run_toy(config=None, progress: bool | None = None, out_dir: str | Path | None = None) -> dict:
    """The ``toy`` pipeline: all checks, logged to MLflow (experiment ``molguide-toy``) with plots."""
    import mlflow

    from molguide.diagnostics.plots import plot_toy
    from molguide.diagnostics.tables import toy_table
    from molguide.runs.tracking import log_metrics_batch, mlflow_run, ui_command

    gm = default_mixture()
    out_dir = Path(out_dir or (Path(config.output_dir) if config is not None else Path("runs/toy"))) / "toy"
    out_dir.mkdir(parents=True, exist_ok=True)
    with mlflow_run(EXPERIMENT, "toy", {"molguide.pipeline": "toy", "molguide.dataset": "gaussian-mixture"}):
        log.info("toy: exact classifier guidance and reward guidance")
        cg = exact_classifier_guidance_check(gm)
        rg = reward_guidance_check(gm)
        log.info("toy: CFG and E[1/p]")
        cfg = cfg_inverse_probability(gm)
        log.info("toy: training score, classifier and reweighted score networks")
        nets = train_toy_models(gm)
        trained = trained_model_errors(gm, nets)
        log.info("toy: guidance error against excess cross-entropy")
        curve = error_versus_excess_ce(gm, extra_classifiers={"trained": mlp_classifier(nets["classifier"])})
        smooth = smoothness_check(gm)
        metrics = []
        for k, row in enumerate(trained["rows"]):
            metrics += [
                ("classifier_ce", row["classifier_ce"], k),
                ("excess_ce_exact", row["classifier_excess_ce"], k),
                ("guidance_mse_exact", row["classifier_guidance_mse"], k),
                ("score_rel_mse", row["score_rel_mse"], k),
                ("reward_score_rel_mse", row["reward_score_rel_mse"], k),
            ]
        shift = [r for r in curve["rows"] if r["classifier"] == "shift0.1"]
        metrics += [("guidance_mse_est", r["guidance_mse_est"], k) for k, r in enumerate(shift)]
        for k, exact_inv in enumerate(cfg["inv_prob_exact"]):
            metrics += [
                ("inv_prob_mean", cfg["samples"][k]["inv_prob_mean"], k),
                ("inv_prob_median", cfg["samples"][k]["inv_prob_median"], k),
                ("inv_prob_exact", exact_inv, k),
            ]
        for k, row in enumerate(rg["rows"]):
            metrics += [
                ("reward_improvement", row["reward_improvement"], k),
                ("reward_mean", row["reward_mean"], k),
            ]
        metrics += [
            ("guidance_error_slope", curve["slope"], 0),
            ("guidance_error_bound_ratio", curve["max_ratio"], 0),
        ]
        log_metrics_batch(metrics)
        mlflow.log_param("cfg_weights", cfg["weights"])
        mlflow.log_param("reward_weights", [r["w"] for r in rg["rows"]])
        png = plot_toy(curve, cfg, rg, trained, out_dir / "toy_theory.png")
        mlflow.log_artifact(str(png), "plots")
        summary = {
            "classifier_guidance_w1": cg,
            "reward_guidance": rg,
            "cfg": cfg,
            "trained": trained,
            "slope": curve["slope"],
            "max_ratio": curve["max_ratio"],
            "smoothness": smooth,
            "run_id": mlflow.active_run().info.run_id,
            "plot": str(png),
        }
        summary["table"] = toy_table(summary)
        mlflow.log_text(summary["table"], "summary.txt")
    summary["mlflow_ui"] = ui_command()
    return summary
