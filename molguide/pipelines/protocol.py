"""EDM's QM9 evaluation protocol as steps of ``molguide run full`` (design.md sections 4, 8, 9).

With ``protocol.enabled`` the full pipeline runs ``train-score`` and then:

``protocol-train``
    For each property of ``protocol.properties``: the noise-level classifier on the
    generator half (``protocol.n_bins`` quantile bins), the evaluator on the evaluator
    half and, with ``cfg.enabled``, a conditional score model. Each is trained by its
    single pipeline (:mod:`molguide.pipelines.guidance`) on a copy of the config whose
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

import json
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from molguide.atomic import atomic_write
from molguide.checkpoint import load_checkpoint
from molguide.components import inference_state, network_from_state
from molguide.config import RunConfig, TrainSection
from molguide.data.molecules import Molecule, MoleculeSet
from molguide.diagnostics.report import TABLE_UNITS, mean_absolute_error, reference_maes, to_table_units
from molguide.guidance.targets import PropertyTarget
from molguide.guidance.terms import ClassifierFreeGuidance, ClassifierGuidance
from molguide.pipelines import guidance
from molguide.pipelines.common import split_molecules
from molguide.pipelines.summary import conditional_mae_table, stability_table
from molguide.tracking import log_metrics_batch, mlflow_run

log = logging.getLogger(__name__)

EXPERIMENT = "molguide-full"  # used when a step runs alone; nested runs stay in the parent's experiment

PROPERTY_ORDER = ("alpha_bohr3", "gap_eV", "homo_eV", "lumo_eV", "mu_D", "cv_calmolK")

# design.md section 9 (as fractions; the published tables give percentages). ``validity`` is
# EDM's; the papers report no strict validity (None: "-" in the table).
STABILITY_KEYS = ("atom_stability", "mol_stability", "validity", "validity_strict", "valid_unique")
PUBLISHED_STABILITY: list[dict] = [
    {"row": name, **dict(zip(STABILITY_KEYS, values))}
    for name, values in (
        ("QM9 data", (0.990, 0.952, 0.977, None, 0.977)),
        ("EDM (1000 steps)", (0.987, 0.820, 0.919, None, 0.907)),
        ("GeoLDM", (0.989, 0.894, 0.938, None, 0.927)),
        ("GeoBFN (1000 steps)", (0.9908, 0.9087, 0.9531, None, 0.9296)),
    )
]

# design.md section 9, in the table's units (alpha bohr^3, gap/HOMO/LUMO meV, mu D, Cv cal/mol K).
PUBLISHED_MAE: dict[str, dict[str, float]] = {
    name: dict(zip(PROPERTY_ORDER, values))
    for name, values in (
        ("Naive (shuffled targets)", (9.01, 1470, 645, 1457, 1.616, 6.857)),
        ("#Atoms", (3.86, 866, 426, 813, 1.053, 1.971)),
        ("EDM (conditional model)", (2.76, 655, 356, 584, 1.111, 1.101)),
        ("EEGSDE (EDM + energy guidance)", (2.50, 487, 302, 447, 0.777, 0.941)),
        ("GeoLDM", (2.37, 587, 340, 522, 1.108, 1.025)),
        ("JODO", (1.42, 335, 226, 256, 0.628, 0.581)),
        ("lower bound (evaluator on data)", (0.10, 64, 39, 36, 0.043, 0.040)),
    )
}

QUALITY = (
    "atom_stability",
    "mol_stability",
    "validity",
    "validity_strict",
    "uniqueness",
    "valid_unique",
    "sample_failures",
)
# The version of what _quality measures: cached results and reference rows of another
# version are measured again from the stored samples (2: EDM validity, validity_strict).
QUALITY_VERSION = 2
ROW_LABELS = {
    "naive": "Naive (shuffled targets)",
    "atoms": "#Atoms",
    "unguided": "molguide unguided",
    "lower_bound": "lower bound (evaluator on data)",
}


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
        }
    )
    update = {
        "name": f"{config.name}-{prop}",
        "output_dir": str(protocol_dir(config) / prop),
        "target": target,
    }
    return config.model_copy(update=update, deep=True)


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def _write_json(path: Path, value: dict) -> None:
    atomic_write(path, lambda fh: fh.write(json.dumps(value, indent=2, default=str).encode()))


def _normalised(value: dict) -> dict:
    """A dict as it reads back from JSON (tuples become lists), so signatures compare equal."""
    return json.loads(json.dumps(value, default=str))


def classifier_weights(config: RunConfig) -> list[float]:
    """The positive classifier-guidance weights (w = 0 is the unguided row)."""
    return [w for w in config.protocol.classifier_weights if w > 0]


def cfg_weights(config: RunConfig) -> list[float]:
    """The CFG weights, when a conditional model is trained (``cfg.enabled``)."""
    return list(config.protocol.cfg_weights) if config.cfg.enabled else []


# ----------------------------------------------------------------------------- training


def _parts(config: RunConfig) -> list[tuple[str, Callable[[RunConfig, bool | None], dict], TrainSection]]:
    parts: list[tuple[str, Callable[[RunConfig, bool | None], dict], TrainSection]] = []
    if classifier_weights(config):
        parts.append(("classifier", guidance.train_classifier, config.classifier.train))
    parts.append(("evaluator", guidance.train_evaluator, config.evaluator.train))
    if config.cfg.enabled:
        parts.append(("cfg", guidance.train_cfg, config.cfg.train))
    return parts


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
        record = _read_json(record_path) or {}
        tags = {"molguide.pipeline": "protocol-train", "molguide.property": prop}
        with mlflow_run(EXPERIMENT, f"protocol-{prop}", tags):
            reused = []
            for kind, train, section in _parts(config):
                summary = record.get(kind)
                checkpoint, n_bins = folder / kind / "last.pt", config.protocol.n_bins
                if summary is not None and _finished(checkpoint, summary, section, n_bins):
                    log.info(
                        "protocol %s %s: finished earlier (%d steps), reused", prop, kind, summary["steps"]
                    )
                    reused.append(kind)
                    summary = {**summary, "reused": True}
                else:
                    summary = train(pconf, progress)
                    record[kind] = summary
                    _write_json(record_path, record)
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

    @property
    def counts(self) -> np.ndarray:
        return self.molecules.num_atoms

    def targets(self, prop: str) -> np.ndarray:
        return self.molecules.properties[prop]


def draw_pairs(config: RunConfig) -> Pairs:
    """``protocol.n_samples`` molecules of the generator half, drawn with ``protocol.seed``."""
    pc = config.protocol
    mols = split_molecules(config)
    rng = np.random.default_rng([pc.seed, 1])
    idx = rng.choice(len(mols), pc.n_samples, replace=pc.n_samples > len(mols))
    signature = {
        "n_samples": pc.n_samples,
        "seed": pc.seed,
        "split": config.data.split,
        "max_molecules": config.data.max_molecules,
        "remove_hydrogens": config.data.remove_hydrogens,
    }
    return Pairs(mols.subset(idx), signature)


def batch_seed(seed: int, batch: int) -> int:
    """The sampling seed of one batch: batches are independent, so a resumed run repeats them."""
    return int(np.random.SeedSequence([seed, batch]).generate_state(1, dtype=np.uint64)[0] >> 1)


class BatchedSamples:
    """One sampling setting's molecules, stored batch by batch so that a rerun continues.

    Every batch is a compressed ``batch_<k>.npz`` (atoms, positions, offsets, which
    samples were lost and why, seconds), written atomically. ``meta.json`` holds the
    signature of what made them; when it changes (another score checkpoint, other
    sampling settings), the old batches are discarded with a warning.
    """

    def __init__(self, folder: Path, signature: dict, n: int, batch_size: int) -> None:
        self.folder, self.n, self.batch_size = Path(folder), n, batch_size
        signature = _normalised({**signature, "n": n, "batch_size": batch_size})
        meta = self.folder / "meta.json"
        old = _read_json(meta)
        if old != signature:
            stale = sorted(self.folder.glob("batch_*.npz"))
            if stale:
                log.warning("%s: sampling inputs changed; discarding %d old batches", self.folder, len(stale))
                for path in stale:
                    path.unlink()
            _write_json(meta, signature)

    def _path(self, k: int) -> Path:
        return self.folder / f"batch_{k:05d}.npz"

    @property
    def ranges(self) -> list[tuple[int, int, int]]:
        """(batch index, first sample, end) of every batch."""
        starts = range(0, self.n, self.batch_size)
        return [(k, s, min(s + self.batch_size, self.n)) for k, s in enumerate(starts)]

    def fill(
        self,
        sample_batch: Callable[[int, int, int], tuple[list[Molecule | None], dict[int, str]]],
        desc: str,
        progress: bool,
    ) -> None:
        """Sample every missing batch with ``sample_batch(k, start, end)`` -> (molecules, failures)."""
        from tqdm.auto import tqdm

        todo = [r for r in self.ranges if not self._path(r[0]).exists()]
        if not todo:
            return
        done = self.n - sum(end - start for _, start, end in todo)
        if done:
            log.info("%s: resuming at %d of %d molecules", desc, done, self.n)
        with tqdm(total=self.n, initial=done, desc=desc, unit="mol", disable=not progress) as bar:
            for k, start, end in todo:
                t0 = time.perf_counter()
                mols, failures = sample_batch(k, start, end)
                self._save(k, mols, failures, time.perf_counter() - t0)
                bar.update(end - start)
                if not progress:
                    log.info("%s: %d of %d molecules", desc, end, self.n)

    def _save(self, k: int, mols: list[Molecule | None], failures: dict[int, str], seconds: float) -> None:
        present = [i for i, m in enumerate(mols) if m is not None]
        counts = np.array([mols[i].num_atoms for i in present], dtype=np.int64)
        arrays = {
            "index": np.array(present, dtype=np.int64),
            "offsets": np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            "atomic_numbers": np.concatenate(
                [mols[i].atomic_numbers for i in present] or [np.zeros(0)]
            ).astype(np.int8),
            "positions": np.concatenate([mols[i].positions for i in present] or [np.zeros((0, 3))]).astype(
                np.float32
            ),
            "failed": np.array(sorted(failures), dtype=np.int64),
            "reasons": np.array([failures[i] for i in sorted(failures)], dtype=str),
            "seconds": np.array(seconds),
        }
        atomic_write(self._path(k), lambda fh: np.savez_compressed(fh, **arrays))

    def load(self) -> tuple[list[Molecule | None], dict[int, str], float]:
        """(molecule or None per sample, failures by sample index, sampling seconds) of all batches."""
        mols: list[Molecule | None] = [None] * self.n
        failures: dict[int, str] = {}
        seconds = 0.0
        for k, start, _ in self.ranges:
            with np.load(self._path(k)) as npz:
                z = {key: npz[key] for key in npz.files}  # each npz[key] access decompresses again
            offsets = z["offsets"]
            for j, i in enumerate(z["index"].tolist()):
                a, b = offsets[j], offsets[j + 1]
                mols[start + i] = Molecule(
                    z["atomic_numbers"][a:b], z["positions"][a:b], name=f"sample_{start + i}"
                )
            failures.update({start + int(i): str(r) for i, r in zip(z["failed"], z["reasons"])})
            seconds += float(z["seconds"])
        return mols, failures, seconds


@dataclass
class Setting:
    """One way of sampling the pairs: a base network and the guidance terms of each batch."""

    name: str
    kind: str  # unguided | classifier | cfg
    weight: float
    model: torch.nn.Module
    terms: list  # guidance terms over all pairs (per-pair targets), cut to each batch
    signature: dict


def _sample_setting(
    setting: Setting, folder: Path, config: RunConfig, diffusion, counts: np.ndarray, progress: bool
) -> BatchedSamples:
    """Sample (or finish sampling) one setting for every pair; returns its stored batches."""
    from molguide.design_pipeline import MoleculeDiffusionPipeline
    from molguide.diffusion.sampling import for_samples

    pc = config.protocol
    store = BatchedSamples(folder, setting.signature, len(counts), config.sample.batch_size)
    pipe = MoleculeDiffusionPipeline(setting.model, diffusion, device=config.device)

    def one_batch(k: int, start: int, end: int) -> tuple[list[Molecule | None], dict[int, str]]:
        # Each batch has its own seed, so a resumed run makes the molecules it would have made.
        result = pipe(
            torch.as_tensor(counts[start:end]),
            [for_samples(term, start, end) for term in setting.terms],
            batch_size=end - start,
            generator=torch.Generator().manual_seed(batch_seed(pc.seed, k)),
            steps=pc.steps,
            sampler=pc.method,
        )
        return result.by_index(), dict(result.failures)

    store.fill(one_batch, f"protocol {setting.name}", progress)
    return store


def _quality(
    mols: list[Molecule | None], progress: bool, sdf: Path | None = None, requested_atoms: int | None = None
) -> dict:
    """EDM's chemistry metrics and strict validity over all requested samples (a lost sample
    is invalid and unstable).

    ``requested_atoms``: the atoms of every requested sample, lost ones included (their
    atoms count as unstable); None when nothing can be lost (real molecules).
    """
    from molguide.chem.evaluate import evaluate, write_annotated_sdf

    present = [m for m in mols if m is not None]
    ev = evaluate(present, reference_smiles=[], descriptors=False, progress=progress)
    scale = len(present) / len(mols)
    m = ev.metrics
    validity = (m["validity"] or 0.0) * scale
    atom_scale = 1.0
    if requested_atoms:
        atom_scale = sum(p.num_atoms for p in present) / requested_atoms
    out = {
        "atom_stability": (m["atom_stability"] or 0.0) * atom_scale if present else 0.0,
        "mol_stability": (m["mol_stability"] or 0.0) * scale,
        "validity": validity,
        "validity_strict": (m["validity_strict"] or 0.0) * scale,
        "uniqueness": m["uniqueness"],
        "valid_unique": validity * (m["uniqueness"] or 0.0),
        "sample_failures": float(len(mols) - len(present)),
    }
    if sdf is not None:
        sdf.parent.mkdir(parents=True, exist_ok=True)
        write_annotated_sdf(ev, present, sdf)
    return out


def qm9_reference_row(config: RunConfig, progress: bool) -> dict:
    """The stability table's data row, measured on ``protocol.n_reference`` random generator-half molecules.

    Cached per (split, n, seed, data cut) in ``$MOLGUIDE_CACHE/protocol``: it depends on
    the data only.
    """
    from molguide.data.qm9 import default_cache_dir

    pc, dc = config.protocol, config.data
    key = f"qm9_{dc.split}_n{pc.n_reference}_seed{pc.seed}"
    key += f"_first{dc.max_molecules}" if dc.max_molecules else ""
    key += "_noH" if dc.remove_hydrogens else ""
    path = default_cache_dir() / "protocol" / f"{key}.json"
    cached = _read_json(path)
    if cached is not None and cached.get("quality_version") == QUALITY_VERSION:
        return cached["row"]
    mols = split_molecules(config)
    rng = np.random.default_rng([pc.seed, 2])
    idx = rng.choice(len(mols), min(pc.n_reference, len(mols)), replace=False)
    row = {"n": len(idx), **_quality(list(mols.subset(idx)), progress)}
    _write_json(path, {"quality_version": QUALITY_VERSION, "row": row})
    return row


def _network(folder: Path, kind: str, device: str) -> tuple[torch.nn.Module, dict]:
    path = folder / kind / "last.pt"
    if not path.exists():
        raise ValueError(f"protocol: no {kind} checkpoint at {path}; run the protocol-train step first")
    state = inference_state(load_checkpoint(path, map_location=device))
    return network_from_state(kind, state, device), state


def _predict(evaluator: torch.nn.Module, state: dict, mols: list[Molecule | None], onehot_scale: float):
    """The evaluator's value per sample (NaN for lost samples)."""
    from molguide.models.predictor import predict_property

    pred = np.full(len(mols), np.nan)
    present = [i for i, m in enumerate(mols) if m is not None]
    if present:
        packed = MoleculeSet.from_molecules([mols[i] for i in present])
        pred[present] = predict_property(evaluator, packed, state["mean"], state["std"], onehot_scale)
    return pred


def _settings_of_property(
    config: RunConfig, prop: str, pairs: Pairs, base_signature: dict, score: torch.nn.Module, diffusion
) -> list[Setting]:
    """Classifier-guided settings (one per weight) and CFG settings of one property."""
    folder, device = protocol_dir(config) / prop, config.device
    targets = pairs.targets(prop)
    settings = []
    if classifier_weights(config):
        classifier, cstate = _network(folder, "classifier", device)
        classes = torch.as_tensor(PropertyTarget.from_dict(cstate["target"]).labels(targets))
        for w in classifier_weights(config):
            terms = [ClassifierGuidance(classifier, classes, w)]
            sig = {
                **base_signature,
                "kind": "classifier",
                "weight": w,
                "classifier_step": int(cstate["step"]),
            }
            settings.append(Setting(f"classifier_w{w:g}", "classifier", w, score, terms, sig))
    if cfg_weights(config):
        cfg_model, fstate = _network(folder, "cfg", device)
        cfg_target = PropertyTarget.from_dict(fstate["target"])
        onehot = torch.eye(cfg_target.n_bins)[torch.as_tensor(cfg_target.labels(targets))]
        for w in cfg_weights(config):
            terms = [ClassifierFreeGuidance(cfg_model, onehot, diffusion.schedule.sigma, w)]
            sig = {**base_signature, "kind": "cfg", "weight": w, "cfg_step": int(fstate["step"])}
            settings.append(Setting(f"cfg_w{w:g}", "cfg", w, cfg_model, terms, sig))
    return settings


def _log_setting(name: str, tags: dict, metrics: dict, sdf: Path | None) -> None:
    """One nested run per sampling setting: its metrics and its molecules as SDF."""
    import mlflow

    with mlflow_run(EXPERIMENT, name, tags, nested=True):
        log_metrics_batch([(k, v, 0) for k, v in metrics.items() if _finite(v)])
        if sdf is not None and sdf.exists():
            mlflow.log_artifact(str(sdf), "samples")


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _unguided(score: torch.nn.Module, signature: dict) -> Setting:
    return Setting("unguided", "unguided", 0.0, score, [], signature)


def _unconditional(
    config: RunConfig, pairs: Pairs, signature: dict, score: torch.nn.Module, diffusion, progress: bool
) -> dict:
    """Unguided samples with the pairs' N: the stability row (and every property's unguided row)."""
    root = protocol_dir(config)
    results_path = root / "unconditional" / "results.json"
    sdf = root / "unconditional" / "samples.sdf"
    cached = _read_json(results_path)
    if (
        cached is not None
        and cached.get("signature") == _normalised(signature)
        and cached.get("quality_version") == QUALITY_VERSION
    ):
        log.info("protocol unconditional: results of an earlier run reused (%s)", results_path)
        result = {**cached, "reused": True}
    else:
        folder = root / "samples" / "unguided"
        store = _sample_setting(
            _unguided(score, signature), folder, config, diffusion, pairs.counts, progress
        )
        mols, _, seconds = store.load()
        quality = _quality(mols, progress, sdf, int(pairs.counts.sum()))
        quality["sample_s_per_molecule"] = seconds / len(mols)
        result = {
            "signature": _normalised(signature),
            "quality_version": QUALITY_VERSION,
            "n": len(mols),
            "quality": quality,
        }
        _write_json(results_path, result)
        result["reused"] = False
    tags = {"molguide.guidance": "unguided", "molguide.steps": str(config.protocol.steps)}
    _log_setting("unconditional", tags, result["quality"], sdf)
    return result


def _property_results(
    config: RunConfig,
    prop: str,
    pairs: Pairs,
    base_signature: dict,
    score: torch.nn.Module,
    diffusion,
    progress: bool,
) -> dict:
    """Every row of one property's column (MAE in the table's unit): references, unguided, guided."""
    pconf = property_config(config, prop)
    folder = Path(pconf.output_dir)
    evaluator, estate = _network(folder, "evaluator", config.device)
    settings = _settings_of_property(config, prop, pairs, base_signature, score, diffusion)
    signature = _normalised(
        {
            **base_signature,
            "evaluator_step": int(estate["step"]),
            "settings": {s.name: s.signature for s in settings},
            "quality_version": QUALITY_VERSION,  # results only: the samples do not depend on it
        }
    )
    results_path = folder / "results.json"
    cached = _read_json(results_path)
    if cached is not None and cached.get("signature") == signature:
        log.info("protocol %s: results of an earlier run reused (%s)", prop, results_path)
        for name, row in cached["settings"].items():
            _log_setting(f"{prop}-{name}", row["tags"], row["metrics"], folder / f"samples_{name}.sdf")
        return {**cached, "reused": True}

    unit = TABLE_UNITS[prop][0]
    targets = pairs.targets(prop)
    onehot_scale = diffusion.onehot_scale
    # The reference rows: the evaluator on the pairs' real molecules; #Atoms fitted on the evaluator half.
    real = _predict(evaluator, estate, list(pairs.molecules), onehot_scale)
    atoms = guidance._atom_count_predictor(split_molecules(pconf, "evaluator_half"), prop)(pairs.counts)
    rng = np.random.default_rng([config.protocol.seed, 3])
    maes = {k: to_table_units(prop, v) for k, v in reference_maes(real, targets, atoms, rng).items()}

    unguided = _sample_setting(
        _unguided(score, base_signature),
        protocol_dir(config) / "samples" / "unguided",
        config,
        diffusion,
        pairs.counts,
        progress,
    ).load()[0]  # sampled by the unconditional step already: nothing left to do but read
    unguided_pred = _predict(evaluator, estate, unguided, onehot_scale)
    maes["unguided"] = to_table_units(prop, mean_absolute_error(unguided_pred, targets))
    out_settings: dict[str, dict] = {}
    for s in settings:
        store = _sample_setting(
            s, protocol_dir(config) / "samples" / prop / s.name, config, diffusion, pairs.counts, progress
        )
        mols, _, seconds = store.load()
        pred = _predict(evaluator, estate, mols, onehot_scale)
        for m, v, c in zip(mols, pred, targets):
            if m is not None:  # SD tags of the SDF
                m.properties[f"evaluator_{prop}"], m.properties[f"target_{prop}"] = float(v), float(c)
        mae = mean_absolute_error(pred, targets)
        maes[s.name] = to_table_units(prop, mae)
        metrics = {
            "mae_to_target": mae,
            "mae_table_units": to_table_units(prop, mae),
            "n_evaluated": float(np.isfinite(pred).sum()),
            "sample_s_per_molecule": seconds / len(mols),
            **_quality(mols, progress, folder / f"samples_{s.name}.sdf", int(pairs.counts.sum())),
        }
        tags = {"molguide.property": prop, "molguide.guidance": s.kind, "molguide.weight": str(s.weight)}
        out_settings[s.name] = {"metrics": metrics, "tags": tags}
        _log_setting(f"{prop}-{s.name}", tags, metrics, folder / f"samples_{s.name}.sdf")
    result = {
        "property": prop,
        "unit": unit,
        "signature": signature,
        "n_pairs": len(targets),
        "mae": maes,
        "settings": out_settings,
    }
    _write_json(results_path, result)
    log.info("protocol %s: %s", prop, ", ".join(f"{k} {v:.4g} {unit}" for k, v in maes.items()))
    return {**result, "reused": False}


def run_protocol(config: RunConfig, progress: bool | None = None) -> dict:
    """Sample the protocol's pairs unguided and guided, judge them, and build the two tables.

    Needs the score model (``train-score``) and the per-property models
    (:func:`train_protocol_models`). Returns the tables (Markdown), their rows (JSON),
    the metrics :func:`log_protocol` puts on the parent run, and which results were reused.
    """
    from molguide.pipelines.score import _checkpoint_path, load_score_model

    progress = _progress(progress)
    pc = config.protocol
    score_path = _checkpoint_path(config)
    if not score_path.exists():
        raise ValueError(f"protocol: no score checkpoint at {score_path}; run train-score first")
    score, diffusion, _, score_state = load_score_model(score_path, use_ema=True, device=config.device)
    pairs = draw_pairs(config)
    base_signature = {
        "pairs": pairs.signature,
        "steps": pc.steps,
        "method": pc.method,
        "batch_size": config.sample.batch_size,  # batches carry their own seeds
        "score_step": int(score_state["step"]),
    }
    tags = {"molguide.pipeline": "protocol", "molguide.split_half": config.data.split}
    with mlflow_run(EXPERIMENT, "protocol", tags) as run:
        unconditional = _unconditional(config, pairs, base_signature, score, diffusion, progress)
        data_row = qm9_reference_row(config, progress)
        per_property = {
            prop: _property_results(config, prop, pairs, base_signature, score, diffusion, progress)
            for prop in pc.properties
        }
        result = protocol_tables(config, unconditional, data_row, per_property, int(score_state["step"]))
        result["reused"] = [
            name for name, r in (("unconditional", unconditional), *per_property.items()) if r.get("reused")
        ]
        result["properties"] = {
            p: {k: v for k, v in r.items() if k != "signature"} for p, r in per_property.items()
        }
        log_protocol(result)
        result["run_id"] = run.info.run_id
    return result


# ----------------------------------------------------------------------------- tables


def _model_description(config: RunConfig) -> str:
    kw = config.model.backbone_kwargs
    size = f" {kw['hidden']}x{kw['num_layers']}" if "hidden" in kw and "num_layers" in kw else ""
    return f"{config.model.backbone.upper()}{size}"


def _setting_label(name: str) -> str:
    if name in ROW_LABELS:
        return ROW_LABELS[name]
    kind, _, weight = name.rpartition("_w")
    return f"molguide {'classifier-guided' if kind == 'classifier' else 'CFG'}, w = {weight}"


def protocol_tables(
    config: RunConfig, unconditional: dict, data_row: dict, per_property: dict[str, dict], score_steps: int
) -> dict:
    """The stability and conditional-MAE tables (Markdown and rows) and their metrics."""
    pc = config.protocol
    stability_rows = [
        {
            "source": "measured",
            "row": f"molguide ({_model_description(config)}, {score_steps:,} training steps; "
            f"{pc.method} sampler, {pc.steps} steps)",
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
            metrics.update({f"{p}.{name}.{k}": v for k, v in s["metrics"].items() if k in QUALITY})
    metrics.update({k: v for k, v in unconditional["quality"].items()})
    metrics.update({f"qm9_data_{k}": v for k, v in data_row.items() if k in QUALITY})
    header = (
        f"EDM protocol on QM9: evaluators trained on the evaluator half, score model and classifiers on "
        f"the {config.data.split}; {unconditional['n']:,} samples ({pc.method}, {pc.steps} steps)"
    )
    return {
        "header": header,
        "stability_table": stability_table(stability_rows),
        "conditional_mae_table": conditional_mae_table(mae_rows, TABLE_UNITS),
        "stability": stability_rows,
        "conditional_mae": mae_rows,
        "units": {p: unit for p, (unit, _) in TABLE_UNITS.items()},
        "metrics": {k: float(v) for k, v in metrics.items() if _finite(v)},
    }


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
    tables = {k: result[k] for k in ("header", "stability", "conditional_mae", "units", "metrics")}
    mlflow.log_dict(tables, "protocol/tables.json")
