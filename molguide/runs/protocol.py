"""EDM's QM9 evaluation protocol as steps of ``molguide run full`` (docs/protocol.md).

With ``protocol.enabled`` the full pipeline runs ``train-score`` and then:

``protocol-train``
    For each property of ``protocol.properties``: the noise-level classifier on the
    generator half (``protocol.n_bins`` quantile bins), the evaluator on the evaluator
    half and, with ``cfg.enabled``, a conditional score model. Each is trained by its
    single pipeline (:mod:`molguide.runs.guide`) on a copy of the config whose
    target is the property and whose ``output_dir`` is ``<output_dir>/protocol/<property>``,
    so checkpoints, resume and MLflow nesting are the single pipelines' own.
``protocol``
    Draws ``protocol.n_samples`` generator-half molecules: their (atom count N, value c)
    pairs are the targets (EDM draws N and c jointly from the data). The score model is
    sampled once with those N: these unguided samples give the stability table's
    molguide row (their N follow the data's size distribution) and every property's
    unguided row. Per property, classifier guidance steers each molecule towards the
    bin of its own c, at every weight of ``protocol.classifier_weights``; with a CFG
    model, its label is that bin's one-hot. The property's evaluator judges every
    sample against its c. Reference rows (Naive, #Atoms, lower bound) come from the
    real molecules of the pairs. The two tables are returned beside the published
    anchors and logged to the parent run by :func:`log_protocol`.

Resume: every sampling setting writes each batch of ``sample.batch_size`` molecules
atomically to ``protocol/samples/<setting>/`` and skips the batches already there; each
batch has its own seed, so a resumed run makes exactly the molecules an uninterrupted
run would have made, and the guided and unguided molecules of a pair share their
noise. Finished results go atomically to ``protocol/unconditional/results.json`` and
``protocol/<property>/results.json`` and are reused while their inputs (checkpoint
steps, sampling settings, pairs) are unchanged; finished trainings are skipped.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from molguide.chem.xtb import XTB_PROPERTIES
from molguide.data.molecules import Molecule, MoleculeSet
from molguide.data.registry import split_molecules
from molguide.diagnostics.baselines import atom_count_predictor, mean_absolute_error, reference_maes
from molguide.diagnostics.published import TABLE_UNITS, to_table_units
from molguide.diagnostics.quality import QUALITY_VERSION, qm9_reference_row, sample_quality
from molguide.diagnostics.statistics import is_finite_number
from molguide.diagnostics.tables import protocol_tables
from molguide.diagnostics.theory_rows import inverse_target_probability, network_theory
from molguide.diagnostics.xtb_judge import calibration_offset, xtb_mae, xtb_values
from molguide.diffusion.sampling import for_samples
from molguide.generation.pipeline import MoleculeDiffusionPipeline
from molguide.generation.sample_store import BatchedSamples, batch_seed
from molguide.guidance.kinds import GUIDANCE_KINDS, TermRequest, setting_name
from molguide.guidance.targets import PropertyTarget
from molguide.guidance.terms import TimeWindow
from molguide.models.predictor import predict_samples
from molguide.runs.config import RunConfig, TrainSection
from molguide.runs.settings import SamplingSetting
from molguide.runs.tracking import log_metrics_batch, mlflow_run
from molguide.runs.train import train_network
from molguide.runs.training_specs import TRAINING_SPECS
from molguide.storage.checkpoints import CheckpointError, load_checkpoint
from molguide.storage.files import as_json, read_json, write_json
from molguide.storage.trained_run import TrainedNetwork, TrainedRun, read_network

log = logging.getLogger(__name__)

EXPERIMENT = "molguide-full"  # used when a step runs alone; nested runs stay in the parent's experiment


def _progress(progress: bool | None) -> bool:
    return sys.stderr.isatty() if progress is None else progress


def protocol_dir(config: RunConfig) -> Path:
    """Where the protocol keeps its models, samples and results: ``<output_dir>/protocol``."""
    return Path(config.output_dir) / "protocol"


def property_config(config: RunConfig, prop: str) -> RunConfig:
    """The config of one property's models: its target binning and its own ``output_dir``."""
    target = config.target.model_copy(
        update={
            "property": prop,
            "n_bins": config.protocol.n_bins,
            "thresholds": None,
            "target": "high",
            "target_value": None,
            "goals": None,  # one property per folder: no further networks
        }
    )
    update = {
        "name": f"{config.name}-{prop}",
        "output_dir": str(protocol_dir(config) / prop),
        "target": target,
    }
    return config.model_copy(update=update, deep=True)


def protocol_weights(config: RunConfig) -> dict[str, list[float]]:
    """The weights of each guidance kind that steers every molecule to its own target
    (``protocol.<kind>_weights``), registry order; kinds without a weight that guides, or
    whose network's section is not ``enabled`` (``cfg.enabled``), are left out."""
    weights = {}
    for kind in GUIDANCE_KINDS.values():
        if not kind.per_sample_targets or not getattr(getattr(config, kind.network, None), "enabled", True):
            continue
        chosen = [w for w in getattr(config.protocol, f"{kind.name}_weights") if kind.is_on(w)]
        if chosen:
            weights[kind.name] = chosen
    return weights


# ----------------------------------------------------------------------------- training


def _kinds(config: RunConfig) -> list[str]:
    """The networks each property needs: the evaluator, those of the guidance kinds it
    samples and, when a weight is chosen among several, the selector."""
    guided = list(dict.fromkeys(GUIDANCE_KINDS[name].network for name in protocol_weights(config)))
    selector = ["selector"] if needs_selector(config) else []
    return [*guided[:1], "evaluator", *guided[1:], *selector]  # earlier runs' order first


def needs_selector(config: RunConfig) -> bool:
    """Whether some guidance kind's weight is chosen among several (``protocol.select``)."""
    return config.protocol.select and any(len(w) > 1 for w in protocol_weights(config).values())


def choose_weights(settings: dict[str, dict], unguided_strict: float, max_drop: float) -> dict[str, str]:
    """Per guidance kind, the setting whose selector MAE is lowest among those whose strict
    validity stays within ``max_drop`` of unguided's (all of the kind's settings when none
    does). ``settings`` maps a setting's name to its kind, ``selector_mae`` and
    ``validity_strict``; returns kind -> the chosen setting's name."""
    chosen: dict[str, str] = {}
    for kind in dict.fromkeys(s["kind"] for s in settings.values()):
        names = [n for n, s in settings.items() if s["kind"] == kind]
        keeps = [n for n in names if settings[n]["validity_strict"] >= unguided_strict - max_drop]

        def error(name: str) -> float:
            mae = settings[name]["selector_mae"]
            return mae if np.isfinite(mae) else np.inf

        chosen[kind] = min(keeps or names, key=error)
    return chosen


def _finished(checkpoint: Path, summary: dict, section: TrainSection, n_bins: int) -> bool:
    """A training is finished when its checkpoint holds the recorded step and that step is the last.

    A finished classifier or CFG model binned differently from ``protocol.n_bins`` is an
    error: reusing it would mix two binnings in one table.
    """
    if not checkpoint.exists():
        return False
    state = load_checkpoint(checkpoint)
    trained_bins = state.get("target", {}).get("n_bins", n_bins)
    if trained_bins != n_bins:
        raise ValueError(
            f"{checkpoint} was trained with {trained_bins} bins but protocol.n_bins is {n_bins}: "
            f"set it back, or delete {checkpoint.parent} to train again"
        )
    step = int(state["step"])
    return step == summary.get("steps") and step >= section.steps


def train_protocol_models(config: RunConfig, progress: bool | None = None) -> dict:
    """Train each property's classifier, evaluator (and CFG model) for the protocol; skip finished ones.

    One nested MLflow run per property (``protocol-<property>``) holds the single
    pipelines' runs. A part whose checkpoint reached its configured steps in an earlier
    run of the same command is not run again: its recorded summary is returned with
    ``reused = True``. Unfinished parts resume from their checkpoints.
    """
    out: dict = {"parts": {}}
    for prop in config.protocol.properties:
        pconf = property_config(config, prop)
        folder = Path(pconf.output_dir)
        record_path = folder / "training.json"
        record = read_json(record_path) or {}
        tags = {"molguide.pipeline": "protocol-train", "molguide.property": prop}
        with mlflow_run(EXPERIMENT, f"protocol-{prop}", tags):
            reused = []
            for kind in _kinds(config):
                section = TRAINING_SPECS[kind].settings(config)
                summary = record.get(kind)
                checkpoint, n_bins = folder / kind / "last.pt", config.protocol.n_bins
                if summary is not None and _finished(checkpoint, summary, section, n_bins):
                    log.info(
                        "protocol %s %s: finished earlier (%d steps), reused", prop, kind, summary["steps"]
                    )
                    reused.append(kind)
                    summary = {**summary, "reused": True}
                else:
                    summary = train_network(kind, pconf, progress)
                    record[kind] = summary
                    write_json(record_path, record)
                out["parts"][f"{prop} {kind}"] = summary
            if reused:
                import mlflow

                mlflow.set_tag("molguide.reused", ",".join(reused))
    return out


# ----------------------------------------------------------------------------- sampling


@dataclass
class Pairs:
    """The protocol's targets: real generator-half molecules, whose (N, c) each sample gets."""

    molecules: MoleculeSet
    signature: dict
    indices: np.ndarray  # their indices in the split

    @property
    def counts(self) -> np.ndarray:
        return self.molecules.num_atoms

    def targets(self, prop: str) -> np.ndarray:
        return self.molecules.properties[prop]


def draw_pairs(config: RunConfig) -> Pairs:
    """``protocol.n_samples`` molecules of the generator half, drawn with ``protocol.seed``."""
    pc = config.protocol
    mols = split_molecules(config.data)
    rng = np.random.default_rng([pc.seed, 1])
    idx = rng.choice(len(mols), pc.n_samples, replace=pc.n_samples > len(mols))
    signature = {
        "n_samples": pc.n_samples,
        "seed": pc.seed,
        "split": config.data.split,
        "max_molecules": config.data.max_molecules,
        "remove_hydrogens": config.data.remove_hydrogens,
    }
    return Pairs(mols.subset(idx), signature, idx)


def _sample_setting(
    setting: SamplingSetting,
    folder: Path,
    config: RunConfig,
    base: MoleculeDiffusionPipeline,
    counts,
    progress: bool,
) -> BatchedSamples:
    """Sample (or finish sampling) one setting for every pair; returns its stored batches."""
    pc = config.protocol
    store = BatchedSamples(folder, setting.signature, len(counts), config.sample.batch_size)
    pipe = base.with_model(setting.model)

    def one_batch(k: int, start: int, end: int) -> tuple[list[Molecule | None], dict[int, str]]:
        # Each batch has its own seed, so a resumed run makes the molecules it would have made.
        result = pipe(
            torch.as_tensor(counts[start:end]),
            [for_samples(term, start, end) for term in setting.terms],
            batch_size=end - start,
            generator=torch.Generator().manual_seed(batch_seed(pc.seed, k)),
            steps=pc.steps,
            sampler=pc.method if pc.sampler == "edm" else None,  # None: the pipeline's (the model's)
        )
        return result.by_index(), dict(result.failures)

    store.fill(one_batch, f"protocol {setting.name}", progress)
    return store


def _network(folder: Path, kind: str, device: str) -> TrainedNetwork:
    """The exported network of ``kind`` in a property's folder (written when it was trained)."""
    if not (folder / kind / "config.json").is_file():
        raise CheckpointError(f"no {kind} network in {folder / kind}; run protocol-train (or full) first")
    return read_network(folder / kind, device)


def _predict(evaluator: TrainedNetwork, mols: list[Molecule | None], onehot_scale: float):
    """The evaluator's value per sample (NaN for lost samples)."""
    record = evaluator.record
    return predict_samples(evaluator.network, mols, record.mean, record.std, onehot_scale)


def _settings_of_property(
    config: RunConfig, prop: str, pairs: Pairs, base_signature: dict, pipe: MoleculeDiffusionPipeline
) -> list[SamplingSetting]:
    """One setting per guidance kind and weight of one property, each molecule steered to
    its own target value (kinds that aim at values) or to that value's bin."""
    settings = []
    for name, weights in protocol_weights(config).items():
        kind = GUIDANCE_KINDS[name]
        for w in weights:
            term, trained = _term(config, prop, name, w, pairs, pipe)
            model = trained.network if kind.samples_own_network else pipe.model
            sig = {**base_signature, "kind": name, "weight": w, f"{kind.network}_step": trained.step}
            settings.append(SamplingSetting(setting_name(name, w), name, w, model, [term], signature=sig))
    return settings


def _term(config: RunConfig, prop: str, kind_name: str, weight: float, pairs: Pairs, pipe):
    """The term of one guidance kind at ``weight`` steering every pair's molecule to its own
    value of ``prop`` (kinds that aim at values) or to that value's bin; and its network."""
    kind = GUIDANCE_KINDS[kind_name]
    trained = _network(protocol_dir(config) / prop, kind.network, config.device)
    targets = pairs.targets(prop)
    if kind.takes_values:
        target, classes, values = PropertyTarget(prop), 0, torch.as_tensor(targets, dtype=torch.float64)
    else:
        target, values = trained.record.property_target, None
        classes = torch.as_tensor(target.labels(targets))
    request = TermRequest(
        trained.network, trained.record, target, classes, pipe.diffusion, weight, TimeWindow(), values=values
    )
    return kind.build(request), trained


SETTING_PARAMS = ("property", "pair", "guidance", "weight", "weights", "steps", "selected")


def _log_setting(name: str, tags: dict, metrics: dict, sdf: Path | None) -> None:
    """One nested run per sampling setting: its metrics and its molecules as SDF."""
    import mlflow

    with mlflow_run(EXPERIMENT, name, tags, nested=True):
        # The setting's tags as params too: MLflow's compare view plots metrics against params.
        params = {key.removeprefix("molguide."): value for key, value in tags.items()}
        mlflow.log_params({k: v for k, v in params.items() if k in SETTING_PARAMS})
        log_metrics_batch([(k, v, 0) for k, v in metrics.items() if is_finite_number(v)])
        if sdf is not None and sdf.exists():
            mlflow.log_artifact(str(sdf), "samples")
        if sdf is not None and sdf.with_suffix(".csv").exists():
            mlflow.log_artifact(str(sdf.with_suffix(".csv")), "samples")


def _unguided(score: torch.nn.Module, signature: dict) -> SamplingSetting:
    return SamplingSetting("unguided", "unguided", 0.0, score, signature=signature)


def _unconditional(
    config: RunConfig, pairs: Pairs, signature: dict, pipe: MoleculeDiffusionPipeline, progress: bool
) -> dict:
    """Unguided samples with the pairs' N: the stability row (and every property's unguided row)."""
    root = protocol_dir(config)
    results_path = root / "unconditional" / "results.json"
    sdf = root / "unconditional" / "samples.sdf"
    cached = read_json(results_path)
    if (
        cached is not None
        and cached.get("signature") == as_json(signature)
        and cached.get("quality_version") == QUALITY_VERSION
    ):
        log.info("protocol unconditional: results of an earlier run reused (%s)", results_path)
        result = {**cached, "reused": True}
    else:
        folder = root / "samples" / "unguided"
        store = _sample_setting(
            _unguided(pipe.model, signature), folder, config, pipe, pairs.counts, progress
        )
        mols, _, seconds = store.load()
        quality = sample_quality(mols, progress, sdf, int(pairs.counts.sum()))
        quality["sample_s_per_molecule"] = seconds / len(mols)
        result = {
            "signature": as_json(signature),
            "quality_version": QUALITY_VERSION,
            "n": len(mols),
            "quality": quality,
        }
        write_json(results_path, result)
        result["reused"] = False
    tags = {"molguide.guidance": "unguided", "molguide.steps": str(config.protocol.steps)}
    _log_setting("unconditional", tags, result["quality"], sdf)
    return result


def _property_results(
    config: RunConfig,
    prop: str,
    pairs: Pairs,
    base_signature: dict,
    pipe: MoleculeDiffusionPipeline,
    progress: bool,
) -> dict:
    """Every row of one property's column (MAE in the table's unit): references, unguided, guided."""
    pconf = property_config(config, prop)
    folder = Path(pconf.output_dir)
    evaluator = _network(folder, "evaluator", config.device)
    selector = _network(folder, "selector", config.device) if needs_selector(config) else None
    settings = _settings_of_property(config, prop, pairs, base_signature, pipe)
    signature = {
        **base_signature,
        "evaluator_step": evaluator.step,
        "settings": {s.name: s.signature for s in settings},
        "quality_version": QUALITY_VERSION,  # results only: the samples do not depend on it
    }
    if selector is not None:  # (a sweep keeps the signature of earlier runs)
        drop = config.protocol.max_validity_drop
        signature["selection"] = {"selector_step": selector.step, "max_drop": drop}
    # what the xTB judge and the theory columns read: other settings, other results
    signature["judges"] = {
        "xtb_molecules": config.protocol.xtb_molecules if _xtb_judges(config, prop) else 0,
        "n_bins": config.protocol.n_bins,
    }
    signature = as_json(signature)
    results_path = folder / "results.json"
    cached = read_json(results_path)
    if cached is not None and cached.get("signature") == signature:
        log.info("protocol %s: results of an earlier run reused (%s)", prop, results_path)
        for name, row in cached["settings"].items():
            _log_setting(f"{prop}-{name}", row["tags"], row["metrics"], folder / f"samples_{name}.sdf")
        return {**cached, "reused": True}

    unit = TABLE_UNITS[prop][0]
    targets = pairs.targets(prop)
    onehot_scale = pipe.diffusion.onehot_scale
    # The reference rows: the evaluator on the pairs' real molecules; #Atoms fitted on the evaluator half.
    real = _predict(evaluator, list(pairs.molecules), onehot_scale)
    atoms = atom_count_predictor(split_molecules(pconf.data, "evaluator_half"), prop)(pairs.counts)
    rng = np.random.default_rng([config.protocol.seed, 3])
    maes = {k: to_table_units(prop, v) for k, v in reference_maes(real, targets, atoms, rng).items()}

    unguided = _sample_setting(
        _unguided(pipe.model, base_signature),
        protocol_dir(config) / "samples" / "unguided",
        config,
        pipe,
        pairs.counts,
        progress,
    ).load()[0]  # sampled by the unconditional step already: nothing left to do but read
    n_atoms = int(pairs.counts.sum())

    # E[1/p(c|x)]: the evaluator as a Gaussian of its RMSE on the generator half, the bins
    # those of the classifiers (protocol.n_bins quantiles of the generator half)
    rmse = evaluator.record.reference_rows.get("evaluator_rmse")
    binning = PropertyTarget(prop, n_bins=config.protocol.n_bins).fit(
        split_molecules(pconf.data).properties[prop]
    )

    def judged(mols: list, record: dict) -> None:
        """The evaluator's MAE of one setting's molecules (and their SD tags), and E[1/p(c|x)]."""
        pred = _predict(evaluator, mols, onehot_scale)
        for m, v in zip(mols, pred):
            if m is not None:
                m.properties[f"evaluator_{prop}"] = float(v)
        mae = mean_absolute_error(pred, targets)
        record["metrics"].update({"mae_to_target": mae, "mae_table_units": to_table_units(prop, mae)})
        if rmse:
            record["metrics"].update(inverse_target_probability(pred, targets, rmse, binning))

    unguided_record: dict = {"metrics": {}}  # judged once: its MAE row and its E[1/p(c|x)]
    judged(unguided, unguided_record)
    maes["unguided"] = unguided_record["metrics"]["mae_table_units"]
    samples: dict[str, list] = {}
    out_settings: dict[str, dict] = {}
    for s in settings:
        store = _sample_setting(
            s, protocol_dir(config) / "samples" / prop / s.name, config, pipe, pairs.counts, progress
        )
        mols, _, seconds = store.load()
        samples[s.name] = mols
        for m, c in zip(mols, targets):
            if m is not None:
                m.properties[f"target_{prop}"] = float(c)
        tags = {"molguide.property": prop, "molguide.guidance": s.kind, "molguide.weight": str(s.weight)}
        record = out_settings[s.name] = {"metrics": {}, "tags": tags}
        if selector is None:  # a sweep: the evaluator judges every setting
            judged(mols, record)
            maes[s.name] = record["metrics"]["mae_table_units"]
        else:  # weights are chosen on the generator half: the selector judges
            pred = _predict(selector, mols, onehot_scale)
            record["metrics"]["selector_mae"] = mean_absolute_error(pred, targets)
        sdf = folder / f"samples_{s.name}.sdf" if selector is None else None
        record["metrics"].update(
            {
                "n_evaluated": float(sum(m is not None for m in mols)),
                "sample_s_per_molecule": seconds / len(mols),
                **sample_quality(mols, progress, sdf, n_atoms),
            }
        )
    chosen: dict[str, str] = {}
    unguided_strict = 0.0
    if selector is not None:
        unguided_strict = sample_quality(unguided, False, None, n_atoms)["validity_strict"]
        chosen = choose_weights(
            {n: {"kind": r["tags"]["molguide.guidance"], **r["metrics"]} for n, r in out_settings.items()},
            unguided_strict,
            config.protocol.max_validity_drop,
        )
        for kind, name in chosen.items():  # the evaluator judges each kind's chosen setting, once
            judged(samples[name], out_settings[name])
            out_settings[name]["tags"]["molguide.selected"] = "true"
            maes[f"{kind}_selected"] = out_settings[name]["metrics"]["mae_table_units"]
            sample_quality(samples[name], False, folder / f"samples_{name}.sdf", n_atoms)  # its SDF, tagged
    for name, record in out_settings.items():
        judged_here = (
            selector is None or name in chosen.values()
        )  # an old SDF of an unchosen setting: not logged
        sdf = folder / f"samples_{name}.sdf" if judged_here else None
        _log_setting(f"{prop}-{name}", record["tags"], record["metrics"], sdf)
    judged_rows = {"unguided": (unguided, base_signature)}
    for row, name in chosen.items() if selector is not None else ((n, n) for n in out_settings):
        setting = next(s for s in settings if s.name == name)
        judged_rows[f"{row}_selected" if selector is not None else name] = (samples[name], setting.signature)
    theory = {
        "networks": {
            kind: network_theory(kind, _network(folder, GUIDANCE_KINDS[kind].network, config.device).record)
            for kind in protocol_weights(config)
        },
        "rows": {"unguided": _theory_of(unguided_record["metrics"], maes["unguided"], maes["unguided"])},
    }
    for row, name in chosen.items() if selector is not None else ((n, n) for n in out_settings):
        key = f"{row}_selected" if selector is not None else name
        theory["rows"][key] = _theory_of(out_settings[name]["metrics"], maes[key], maes["unguided"])
    result = {
        "property": prop,
        "theory": theory,
        "xtb": _xtb_rows(config, prop, pairs, judged_rows) if _xtb_judges(config, prop) else {},
        "unit": unit,
        "signature": signature,
        "n_pairs": len(targets),
        "mae": maes,
        "settings": out_settings,
        "chosen": {
            kind: {
                "setting": name,
                "weight": float(out_settings[name]["tags"]["molguide.weight"]),
                # False: no weight kept strict validity within max_validity_drop (the lowest
                # selector MAE among all was taken, and the table says so)
                "kept_validity": bool(
                    out_settings[name]["metrics"]["validity_strict"]
                    >= unguided_strict - config.protocol.max_validity_drop
                ),
            }
            for kind, name in chosen.items()
        },
    }
    write_json(results_path, result)
    log.info("protocol %s: %s", prop, ", ".join(f"{k} {v:.4g} {unit}" for k, v in maes.items()))
    return {**result, "reused": False}


def _theory_of(metrics: dict, mae: float, unguided_mae: float) -> dict:
    """A judged row's numbers the theory speaks about: its MAE relative to unguided and E[1/p(c|x)]."""
    keep = ("inv_prob_mean", "inv_prob_median")
    return {"mae_ratio": mae / unguided_mae if unguided_mae else None, **{k: metrics.get(k) for k in keep}}


def _xtb_judges(config: RunConfig, prop: str) -> bool:
    return config.protocol.xtb_molecules > 0 and prop in XTB_PROPERTIES


def _xtb_rows(config: RunConfig, prop: str, pairs: Pairs, rows: dict[str, tuple[list, dict]]) -> dict:
    """GFN2-xTB's MAE (table units) of the first ``protocol.xtb_molecules`` molecules of each
    row against their targets, calibrated on as many other generator-half molecules; its
    lower bound is its MAE on the pairs' real molecules (:mod:`molguide.diagnostics.xtb_judge`)."""
    pc = config.protocol
    k = min(pc.xtb_molecules, len(pairs.counts))
    root, workers = protocol_dir(config) / "xtb", pc.xtb_workers
    half = split_molecules(config.data)
    others = np.setdiff1d(np.arange(len(half)), pairs.indices)  # not the pairs' own molecules
    calibration = half.subset(
        np.random.default_rng([pc.seed, 2]).choice(others, min(k, len(others)), replace=False)
    )
    calibrated = xtb_values(
        list(calibration), root / "calibration.json", {"seed": pc.seed, "split": pairs.signature}, workers
    )
    offset = calibration_offset(calibrated, calibration.properties[prop], prop)
    targets = pairs.targets(prop)[:k]
    sets = {"lower_bound": (list(pairs.molecules)[:k], root / "real.json", {"pairs": pairs.signature})}
    for row, (mols, signature) in rows.items():
        name = "unguided" if row == "unguided" else f"{prop}-{row}"
        sets[row] = (mols[:k], root / f"{name}.json", signature)
    out: dict = {"offset": offset, "n_molecules": k, "mae": {}, "n": {}}
    for row, (mols, cache, signature) in sets.items():
        mae, n = xtb_mae(xtb_values(mols, cache, signature, workers), targets, prop, offset)
        out["mae"][row], out["n"][row] = to_table_units(prop, mae), n
    log.info("protocol %s: xTB judge (%d molecules a row): %s", prop, k,
             ", ".join(f"{r} {v:.4g}" for r, v in out["mae"].items()))  # fmt: skip
    return out


def pair_weights(config: RunConfig, per_property: dict[str, dict]) -> dict[str, dict[str, float]]:
    """Per property, the weight of each guidance kind that can steer two properties at once
    (not CFG, whose network replaces the score model): the weight chosen for it alone, or
    with one weight per kind, that weight."""
    out: dict[str, dict[str, float]] = {}
    for prop, result in per_property.items():
        chosen = {kind: c["weight"] for kind, c in result.get("chosen", {}).items()}
        for kind, weights in protocol_weights(config).items():
            chosen.setdefault(kind, weights[0])
        out[prop] = {k: w for k, w in chosen.items() if not GUIDANCE_KINDS[k].samples_own_network}
    return out


def _pair_results(
    config: RunConfig,
    pair: tuple[str, str],
    pairs: Pairs,
    base_signature: dict,
    pipe: MoleculeDiffusionPipeline,
    per_property: dict[str, dict],
    progress: bool,
) -> dict:
    """EEGSDE's multi-property rows for one pair of properties: every molecule steered to
    both of its own values at once (one term per property, each at the weight chosen for
    its property alone), judged by both properties' evaluators."""
    key = "+".join(pair)
    folder = protocol_dir(config) / "pairs" / key
    evaluators = {p: _network(protocol_dir(config) / p, "evaluator", config.device) for p in pair}
    weights = pair_weights(config, {p: per_property[p] for p in pair})
    settings = []
    for kind in weights[pair[0]]:
        terms, steps = [], []
        for p in pair:
            term, trained = _term(config, p, kind, weights[p][kind], pairs, pipe)
            terms.append(term)
            steps.append(trained.step)
        name = f"{kind}_w" + "+".join(f"{weights[p][kind]:g}" for p in pair)
        chosen = [weights[p][kind] for p in pair]
        sig = {**base_signature, "kind": kind, "pair": list(pair), "weights": chosen, "steps": steps}
        settings.append(SamplingSetting(name, kind, weights[pair[0]][kind], pipe.model, terms, signature=sig))
    signature = as_json(
        {
            "settings": {s.name: s.signature for s in settings},
            "evaluator_steps": [evaluators[p].step for p in pair],
            "quality_version": QUALITY_VERSION,
        }
    )
    cached = read_json(folder / "results.json")
    if cached is not None and cached.get("signature") == signature:
        log.info("protocol %s: results of an earlier run reused", key)
        return {**cached, "reused": True}
    onehot_scale = pipe.diffusion.onehot_scale
    maes = {row: {p: per_property[p]["mae"][row] for p in pair} for row in ("unguided", "lower_bound")}
    out_settings = {}
    for s in settings:
        sample_folder = protocol_dir(config) / "samples" / "pairs" / key / s.name
        store = _sample_setting(s, sample_folder, config, pipe, pairs.counts, progress)
        mols, _, seconds = store.load()
        maes[s.name] = {}
        for p in pair:
            pred = _predict(evaluators[p], mols, onehot_scale)
            for m, v, c in zip(mols, pred, pairs.targets(p)):
                if m is not None:
                    m.properties[f"evaluator_{p}"], m.properties[f"target_{p}"] = float(v), float(c)
            maes[s.name][p] = to_table_units(p, mean_absolute_error(pred, pairs.targets(p)))
        metrics = {
            "sample_s_per_molecule": seconds / len(mols),
            **{f"mae_{p}": v for p, v in maes[s.name].items()},
            **sample_quality(mols, progress, folder / f"samples_{s.name}.sdf", int(pairs.counts.sum())),
        }
        out_settings[s.name] = {"metrics": metrics, "kind": s.kind, "weights": s.signature["weights"]}
        tags = {
            "molguide.pair": key,
            "molguide.guidance": s.kind,
            "molguide.weights": str(s.signature["weights"]),
        }
        _log_setting(f"{key}-{s.name}", tags, metrics, folder / f"samples_{s.name}.sdf")
    result = {"pair": list(pair), "signature": signature, "mae": maes, "settings": out_settings}
    write_json(folder / "results.json", result)
    return {**result, "reused": False}


def run_protocol(config: RunConfig, progress: bool | None = None) -> dict:
    """Sample the protocol's pairs unguided and guided, judge them, and build the two tables.

    Needs the score model (``train-score``) and the per-property models
    (:func:`train_protocol_models`). Returns the tables (Markdown), their rows (JSON),
    the metrics :func:`log_protocol` puts on the parent run, and which results were reused.
    """

    progress = _progress(progress)
    pc = config.protocol
    score_folder = Path(config.output_dir) / "score"
    if not (score_folder / "config.json").is_file():
        raise ValueError(f"protocol: no score network in {score_folder}; run train-score first")
    generator = TrainedRun(
        {"score": read_network(score_folder, config.device)}, str(score_folder), config.device
    )
    pipe = _protocol_pipeline(config, generator)
    pairs = draw_pairs(config)
    base_signature = {
        "pairs": pairs.signature,
        "steps": pc.steps,
        "method": pc.method,
        "batch_size": config.sample.batch_size,  # batches carry their own seeds
        "score_step": generator.step("score"),
    }
    if pc.sampler == "model":  # (EDM's settings keep the signature of earlier runs)
        base_signature["method"] = {
            "method": pipe.sampler,
            "grid_power": pipe.grid_power,
            "options": dict(pipe.sampler_options),
        }
    tags = {"molguide.pipeline": "protocol", "molguide.split_half": config.data.split}
    with mlflow_run(EXPERIMENT, "protocol", tags) as run:
        unconditional = _unconditional(config, pairs, base_signature, pipe, progress)
        data_row = qm9_reference_row(config, progress)
        per_property = {
            prop: _property_results(config, prop, pairs, base_signature, pipe, progress)
            for prop in pc.properties
        }
        unconditional["sampler"] = sampler_description(config, pipe)
        per_pair = {
            "+".join(pair): _pair_results(
                config, tuple(pair), pairs, base_signature, pipe, per_property, progress
            )
            for pair in pc.pairs
        }
        result = protocol_tables(
            config, unconditional, data_row, per_property, generator.step("score"), per_pair
        )
        result["reused"] = [
            name for name, r in (("unconditional", unconditional), *per_property.items()) if r.get("reused")
        ]
        result["properties"] = {
            p: {k: v for k, v in r.items() if k != "signature"} for p, r in per_property.items()
        }
        log_protocol(result)
        result["run_id"] = run.info.run_id
    return result


def _protocol_pipeline(config: RunConfig, generator: TrainedRun) -> MoleculeDiffusionPipeline:
    """The score network's pipeline: EDM's sampler settings (protocol.method on the even
    grid) or, with ``protocol.sampler: model``, the sampler the network recommends."""
    if config.protocol.sampler == "model":
        return MoleculeDiffusionPipeline.from_run(generator)
    return MoleculeDiffusionPipeline(
        generator.network("score"),
        generator.diffusion,
        generator.nodes,
        generator.atom_types,
        device=config.device,
    )


def sampler_description(config: RunConfig, pipe: MoleculeDiffusionPipeline) -> str:
    """How the protocol's molecules were sampled, as the tables name it."""
    pc = config.protocol
    if pc.sampler == "edm":
        return f"{pc.method} sampler, {pc.steps} steps"
    options = "".join(f", {k} {v:g}" for k, v in pipe.sampler_options.items())
    return f"{pipe.sampler} sampler (the model's: grid u^{pipe.grid_power:g}{options}), {pc.steps} steps"


def log_protocol(result: dict) -> None:
    """Log the protocol's tables (Markdown, JSON) and metrics to the active MLflow run."""
    import mlflow

    log_metrics_batch([(k, v, 0) for k, v in result["metrics"].items()])
    mlflow.log_text(
        result["header"] + "\n\n" + result["stability_table"] + "\n", "protocol/stability_table.md"
    )
    mlflow.log_text(
        result["header"] + "\n\n" + result["conditional_mae_table"] + "\n",
        "protocol/conditional_mae_table.md",
    )
    keys = (
        "header",
        "stability",
        "conditional_mae",
        "units",
        "metrics",
        "chosen_weights",
        "multi_property",
        "theory",
    )
    if result.get("theory_table"):
        import tempfile

        from molguide.diagnostics.plots import plot_mae_against_theory

        mlflow.log_text(result["theory_table"] + "\n", "protocol/theory_table.md")
        with tempfile.TemporaryDirectory() as tmp:
            png = plot_mae_against_theory(result["theory"]["points"], result["theory"]["correlations"],
                                          Path(tmp) / "mae_against_theory.png")  # fmt: skip
            mlflow.log_artifact(str(png), "protocol")
    if result.get("xtb_table"):
        mlflow.log_text(result["header"] + "\n\n" + result["xtb_table"] + "\n", "protocol/xtb_table.md")
    if result.get("multi_property_table"):
        mlflow.log_text(
            result["header"] + "\n\n" + result["multi_property_table"] + "\n",
            "protocol/multi_property_table.md",
        )
    tables = {k: result[k] for k in keys}
    mlflow.log_dict(tables, "protocol/tables.json")
