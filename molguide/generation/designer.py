"""The designer: a trained molguide run as one object that generates RDKit molecules.

    designer = molguide.load("qm9")                   # the generator shipped in the package
    designer = molguide.load("runs:/<run_id>")        # or a run folder such as runs/quickstart
    mols = designer.generate(100, target={"gap_eV": "high"}, guidance={"classifier": 2.0}, seed=0)

Each returned molecule is an RDKit Mol with a 3D conformer and properties (those of
:func:`molguide.chem.evaluate.annotated_mols`). Its bonds are the generator's own when
the score network has a bond-order head (property ``bonds`` = "predicted", judged by
``valid_strict_predicted_bonds``), otherwise perceived from the coordinates with total
charge 0 where that succeeds (``bonds`` = "perceived"). Properties:

- ``valid``: EDM's validity (distance-table bonds, no charges; what the published
  tables count), ``edm_smiles`` (its largest fragment) when valid;
- ``valid_strict``: one connected, neutral, closed-shell molecule with every hydrogen,
  judged on the perceived bonds; with ``charged_atoms``, ``radical_electrons``,
  ``fragments`` and ``missing_h`` (what it looked at, set where bonds were perceived),
  so a molecule that needed charges or radicals says so;
- ``smiles`` (the perceived molecule), ``mol_stable``, ``atom_stable_fraction``,
  RDKit descriptors and ``notes`` (why a molecule is not valid);
- the evaluator's prediction ``evaluator_<property>`` when the run trained an
  evaluator, and ``molguide_guidance`` / ``molguide_seed`` recording how it was made.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Mapping, Sequence

import numpy as np

from molguide.data.molecules import Molecule
from molguide.diagnostics.statistics import bootstrap_mean
from molguide.diffusion.process import network_setting
from molguide.diffusion.sampling import GuidanceTerm
from molguide.generation.from_molecules import (
    as_molecule,
    counts_above,
    grown_edit,
    kept_atoms,
    lead_edit,
    similarity_to_lead,
    type_indices,
)
from molguide.generation.limits import MAX_SAMPLES, MAX_STEPS, check_sample_count, whole_number
from molguide.generation.pipeline import MoleculeDiffusionPipeline
from molguide.guidance.goals import Goal, goal_request, parse_goals, trained_goal
from molguide.guidance.kinds import GUIDANCE_KINDS
from molguide.guidance.targets import PropertyTarget
from molguide.guidance.terms import TimeWindow
from molguide.storage.trained_run import TrainedRun, registered_network

log = logging.getLogger(__name__)

# Where to find a generator that keeps atoms exactly (said when one that cannot is asked to).
KEEPING_GENERATOR_HINT = "a generator trained with fixed atoms (model.fixed_atoms) keeps them exactly"


class GenerationError(RuntimeError):
    """Every requested sample was lost while sampling; ``Designer.last_failures`` says why."""


class Designer:
    """Generates molecules from a trained run, optionally guided towards a property class."""

    def __init__(self, run: TrainedRun) -> None:
        self.run = run
        self.pipeline = MoleculeDiffusionPipeline.from_run(run)
        self.last_failures: dict[int, str] = {}
        self.last_metrics: dict[str, float | None] = {}  # of the last generate(evaluate=True)
        self.last_goals: list[Goal] = []  # of the last generate
        self.last_predictions: dict[str, np.ndarray] = {}  # evaluators' predictions, by property

    @classmethod
    def load(cls, source: str, device: str = "cpu", guidance: Sequence[str] = ()) -> Designer:
        """A designer from ``runs:/<run_id>`` or a run folder (see :func:`molguide.load`)."""
        designer = cls(TrainedRun.from_pretrained(source, device))
        return designer.with_guidance(*_sources(guidance)) if guidance else designer

    def with_guidance(self, *sources: str | TrainedRun) -> Designer:
        """This generator with the guidance networks and evaluators of other runs (folders,
        ``runs:/<run_id>`` or loaded :class:`TrainedRun` objects) or registered networks
        (``models:/<name>/<version>``): several properties at once."""
        run = self.run
        for source in sources:
            if isinstance(source, str) and source.startswith("models:/"):  # one registered network
                run = run.with_network(registered_network(source, run.device))
                continue
            if not isinstance(source, TrainedRun):
                source = TrainedRun.from_pretrained(source, run.device)
            run = run.with_guidance(source)
        return Designer(run)

    @property
    def target(self) -> PropertyTarget | None:
        """The first property's binning of the guidance networks (None: unguided only)."""
        return self.run.target

    @property
    def properties(self) -> list[str]:
        """The properties this run's guidance networks and evaluators were trained for."""
        return self.run.properties

    @property
    def guidance_kinds(self) -> list[str]:
        """The guidance terms this run can apply."""
        return [name for name, kind in GUIDANCE_KINDS.items() if self.run.has_any(kind.network)]

    def __repr__(self) -> str:
        target = self.target.describe() if self.target else "no guidance networks"
        return f"Designer({self.run.source}: {target}; guidance {self.guidance_kinds})"

    # ------------------------------------------------------------------ arguments
    def resolve_goals(self, target: Mapping | None) -> list[Goal]:
        """``{property: goal}`` (:mod:`molguide.guidance.goals`) -> the goals, each checked
        against this run's networks; None: the first property's trained goal."""
        if target is None:
            trained = self.target
            return [] if trained is None else [trained_goal(trained)]
        goals = parse_goals(target)
        available = self.run.properties
        for goal in goals:
            if goal.property not in available:
                have = f"were trained for {', '.join(map(repr, available))}" if available else "are none"
                raise ValueError(f"target {goal.property!r}: this run's guidance networks {have}")
            binning = self.run.binning(goal.property)
            if goal.kind == "bin" and binning is not None:
                goal.classes(binning)  # a bin outside the binning is named here
        return goals

    def resolve_guidance(
        self, guidance: Mapping[str, float] | None, target: Mapping | None
    ) -> dict[str, float]:
        """Weights by kind; a target without weights means classifier guidance at weight 1;
        a kind's name alone (``"classifier"``) means that kind at weight 1."""
        if guidance is None:
            if target is None:
                return {}
            guidance = {"classifier": 1.0}
        if isinstance(guidance, str):  # one kind by name, not a sequence of its letters
            guidance = {guidance: 1.0}
        if not isinstance(guidance, Mapping):
            raise ValueError(f"guidance: give weights by kind, e.g. {{'classifier': 2.0}}, got {guidance!r}")
        unknown = set(guidance) - set(GUIDANCE_KINDS)
        if unknown:
            raise ValueError(f"guidance: unknown term(s) {sorted(unknown)}; allowed: {list(GUIDANCE_KINDS)}")
        weights = {}
        for name, w in guidance.items():
            if not isinstance(w, numbers.Real) or not math.isfinite(w) or w < 0:
                raise ValueError(f"guidance[{name!r}]: a weight must be a finite number >= 0, got {w!r}")
            kind = GUIDANCE_KINDS[name]
            if kind.is_on(w) and not self.run.has_any(kind.network):
                raise ValueError(f"guidance[{name!r}]: {self.run.source} has no {kind.network} model")
            if kind.is_on(w):
                weights[name] = float(w)
        return weights

    def _terms(self, weights: dict[str, float], goals: list[Goal], window: TimeWindow):
        """One term per property and kind (the kind's weight times the goal's), and the
        pipeline to sample them with (a kind that samples its own network, CFG, puts that
        network under the sampler: one property at most)."""
        run = self.run
        if weights and not goals:
            raise ValueError("guidance needs a target")
        terms, pipeline, own = [], self.pipeline, None
        for goal in goals:
            for name, w in weights.items():
                kind = GUIDANCE_KINDS[name]
                if not kind.is_on(w * goal.weight):
                    continue
                if not run.has(kind.network, goal.property):
                    raise ValueError(
                        f"guidance[{name!r}]: {run.source} has no {kind.network} model for {goal.property}"
                    )
                if kind.takes_values and goal.kind != "value":
                    raise ValueError(
                        f"guidance[{name!r}]: it aims at a value; {goal.property}'s goal is {goal.kind!r} "
                        f"(give a value, e.g. {{{goal.property!r}: 2.5}})"
                    )
                if kind.samples_own_network:
                    if own is not None:
                        raise ValueError(
                            f"guidance[{name!r}]: its network replaces the score model, so it steers one "
                            f"property per call ({own} and {goal.property} asked)"
                        )
                    own = goal.property
                    pipeline = self.pipeline.with_model(run.network(kind.network, goal.property))
                terms.append(kind.build(goal_request(run, kind.network, goal, w, window)))
        return terms, pipeline

    # ------------------------------------------------------------------ generation
    def generate(
        self,
        n: int,
        target: Mapping[str, object] | None = None,
        guidance: Mapping[str, float] | Sequence[GuidanceTerm] | None = None,
        seed: int = 0,
        steps: int | None = None,
        method: str | None = None,
        t_min: float = 0.0,
        t_max: float = 1.0,
        batch_size: int = 250,
        evaluate: bool = True,
        progress: bool = False,
        grid_power: float | None = None,
        sampler_options: Mapping[str, float] | None = None,
        max_samples: int | None = MAX_SAMPLES,
        keep: tuple | None = None,
    ) -> list:
        """Generate ``n`` molecules; returns RDKit Mols with 3D conformers and properties.

        Args:
            target: one goal per property (:mod:`molguide.guidance.goals`), e.g.
                ``{"gap_eV": "high", "mu_D": {"value": 2.5, "tolerance": 0.3}}``: "high",
                "low", a value (a number is always a value, never a bin), ``{"bin": k}``,
                each optionally with a ``weight`` and a ``t_min``/``t_max`` window; every
                property needs its guidance networks in the run (:meth:`with_guidance`
                adds other runs'); default: the first property's trained goal.
            guidance: weights by guidance kind (:mod:`molguide.guidance.kinds`), e.g.
                ``{"classifier": 2.0, "reward": 1.0, "cfg": 0.5}``; ``"cfg": 0`` is plain
                conditional sampling, any other kind at 0 is off (default: none, or
                classifier weight 1 when a target is given), or your
                own guidance terms (objects with ``__call__(GuidanceState) -> (g_x, g_h)``,
                see :mod:`molguide.guidance.terms`), which add to the score as they are.
            seed: the same seed gives the same molecule sizes and noise, so guided and
                unguided calls with one seed are paired sample by sample.
            steps, method: sampler steps and a registered sampler ("ancestral", "ddim",
                "dpmpp2m", "dpmpp2m_sde"); default: what the model recommends (a saved
                model's ``sampler`` record, e.g. the shipped one's), else 100 ancestral steps.
            grid_power: spacing of the sampler's time grid (1: EDM's even grid; 2: more
                steps near the data); default: what the model recommends, else 1.
            sampler_options: the sampler's own settings, e.g. ``{"eta": 1.0}`` for
                "dpmpp2m_sde"; default: the model's recommended ones for its recommended
                sampler, else the sampler's defaults.
            max_samples: the most molecules one call may make (default
                :data:`~molguide.generation.limits.MAX_SAMPLES`, 100,000; None: no bound). A
                call whose results would not fit in this machine's free memory is refused
                whatever it says.
            evaluate: perceive bonds and add the properties of the module docstring
                (``valid``, ``valid_strict`` and what it looked at, stability, SMILES,
                descriptors; otherwise atoms and coordinates only); the returned molecules'
                ``validity``, ``validity_strict`` and stability are logged (INFO) and kept
                in ``last_metrics``; with evaluators, so are each goal's predicted mean and
                hit rate (``<property>_mean``, ``<property>_hit_rate``, the mean distance
                ``<property>_mae_to_value`` of a value goal) and ``joint_hit_rate``.

            keep: ``(mol, "SMARTS")`` or ``(mol, [atom indices])``: those atoms of ``mol`` (an
                RDKit Mol with a 3D conformer) stay as they are, at their coordinates, in every
                molecule, and the rest is generated around them (docs/edit.md); each molecule
                then has more atoms than the kept ones, and ``keep_matched`` says whether a
                SMARTS still matches the whole molecule's perceived bonds.

        Samples whose coordinates diverge are not returned; their reasons are in
        ``last_failures`` and a warning says how many. When every sample diverges,
        :class:`GenerationError` says so (nothing to return is not a result).
        """
        # Every argument is checked before any work: a wrong one is a ValueError naming it.
        n = whole_number("n", n, least=1)
        if max_samples is not None:
            max_samples = whole_number("max_samples", max_samples, least=1)
        check_sample_count(n, max_samples)
        seed = whole_number("seed", seed, least=0, most=2**63 - 2)
        if steps is not None:
            steps = whole_number("steps", steps, least=1, most=MAX_STEPS)
        for name, value in (("t_min", t_min), ("t_max", t_max)):
            if not isinstance(value, numbers.Real) or isinstance(value, bool) or not 0 <= value <= 1:
                raise ValueError(f"{name} must be a number from 0 to 1, got {value!r}")
        window = TimeWindow(t_min, t_max)
        edit, sizes, pattern = None, n, None
        if keep is not None:
            fragment, pattern = self._fragment(keep)
            self._note_keeping()
            types = type_indices(fragment, self.run.atom_types, "keep")
            sizes = counts_above(self.pipeline.nodes, n, fragment.num_atoms + 1, seed)
            edit = grown_edit(fragment, types, sizes)
        sample = self._design(
            sizes, target, guidance, seed, steps, method, window, batch_size, progress, grid_power,
            sampler_options, edit,
        )  # fmt: skip
        mols = self._finish(sample, evaluate)
        if pattern is not None:
            from rdkit import Chem

            query = Chem.MolFromSmarts(pattern)
            for mol in mols:
                mol.SetIntProp("keep_matched", int(mol.GetNumBonds() > 0 and mol.HasSubstructMatch(query)))
        return mols

    def optimize(
        self,
        lead,
        n: int = 10,
        t0: float = 0.3,
        target: Mapping[str, object] | None = None,
        guidance: Mapping[str, float] | Sequence[GuidanceTerm] | None = None,
        seed: int = 0,
        steps: int | None = None,
        method: str | None = None,
        keep: str | Sequence[int] | None = None,
        batch_size: int = 250,
        evaluate: bool = True,
        progress: bool = False,
    ) -> list:
        """``n`` variants of ``lead`` (an RDKit Mol with a 3D conformer): the lead noised to
        ``t0`` and denoised, guided as :meth:`generate` is (docs/edit.md).

        The smaller ``t0``, the closer the variants stay (0.1: small changes of geometry and
        a few atoms; 1: the lead's atom count only). ``steps`` (default: the model's
        recommended steps times ``t0``) cover [t0, 0]. ``keep`` (a SMARTS pattern or atom
        indices of ``lead``) fixes those atoms as well. Each variant carries
        ``tanimoto_to_lead`` (Morgan, radius 2), ``rmsd_to_lead`` (heavy atoms, superposed,
        Angstrom), ``scaffold_kept`` (Bemis-Murcko, 1/0), and with an evaluator
        ``evaluator_<property>`` and ``lead_<property>``; ``last_metrics`` adds their means
        and, per property, ``<property>_improvement`` with its 95 % bootstrap interval
        (``_ci_low``, ``_ci_high``): the variants' mean minus the lead's, towards the goal
        (a "low" goal counts a decrease, a value goal how much closer to it; without a goal,
        the plain difference).
        """
        n = whole_number("n", n, least=1)
        check_sample_count(n, MAX_SAMPLES)
        seed = whole_number("seed", seed, least=0, most=2**63 - 2)
        if not isinstance(t0, numbers.Real) or isinstance(t0, bool) or not 0 < t0 <= 1:
            raise ValueError(f"t0 must be a number in (0, 1], got {t0!r}")
        molecule = as_molecule(lead)
        types = type_indices(molecule, self.run.atom_types)
        kept = kept_atoms(lead, keep, molecule.num_atoms) if keep is not None else None
        if kept:
            self._note_keeping()
        if steps is None:
            steps = max(1, round(self.pipeline.steps * t0))
        steps = whole_number("steps", steps, least=1, most=MAX_STEPS)
        edit = lead_edit(molecule, types, n, float(t0), kept)
        sample = self._design(
            edit.counts, target, guidance, seed, steps, method, TimeWindow(0.0, 1.0), batch_size, progress,
            None, None, edit,
        )  # fmt: skip
        mols = self._finish(sample, evaluate)
        for mol in mols:
            mol.SetProp("molguide_t0", f"{t0:g}")
        similarity_to_lead(_lead_smiles(lead), molecule, mols, sample.molecules)
        lead_values = self._predict([Molecule(molecule.atomic_numbers, molecule.positions)])
        for prop, values in self.last_predictions.items():
            lead_value = float(lead_values[prop][0])
            for mol in mols:
                mol.SetDoubleProp(f"lead_{prop}", lead_value)
            gains = _towards_goal(np.asarray(values, dtype=float), lead_value, self.last_goals, prop)
            interval = bootstrap_mean(gains, seed=seed)
            self.last_metrics.update(interval.as_metrics(f"{prop}_improvement"))
        for key in ("tanimoto_to_lead", "rmsd_to_lead", "scaffold_kept"):
            values = [float(m.GetProp(key)) if m.HasProp(key) else np.nan for m in mols]
            self.last_metrics[key] = float(np.nanmean(values)) if np.isfinite(values).any() else None
        return mols

    def _note_keeping(self) -> None:
        """Say once per designer when kept atoms rely on RePaint's approximation."""
        trained = network_setting(self.pipeline.model, "fixed_atoms", False)
        if trained or getattr(self, "_noted_keeping", False):
            return
        self._noted_keeping = True
        log.warning(
            "this generator was not trained to keep atoms: they are kept by RePaint's approximation, "
            "which gives few valid molecules; %s (docs/edit.md)",
            KEEPING_GENERATOR_HINT,
        )

    def _fragment(self, keep: tuple) -> tuple[Molecule, str | None]:
        """The kept atoms of ``keep = (mol, SMARTS or indices)`` as a Molecule, and the SMARTS."""
        if not isinstance(keep, tuple) or len(keep) != 2:
            raise ValueError("keep: give (mol, 'SMARTS') or (mol, [atom indices])")
        mol, spec = keep
        whole = as_molecule(mol, "keep")
        indices = kept_atoms(mol, spec, whole.num_atoms)
        fragment = Molecule(whole.atomic_numbers[indices], whole.positions[indices], name="kept")
        return fragment, spec if isinstance(spec, str) else None

    def _design(
        self, n, target, guidance, seed, steps, method, window, batch_size, progress, grid_power,
        sampler_options, edit,
    ):  # fmt: skip
        """Resolve the goals and guidance, sample (``n``: a count, or atom counts), and record
        failures; returns the SampleResult and sets ``last_goals``."""
        if _are_terms(guidance):
            if target is not None:
                raise ValueError(
                    "target: applies to guidance weights by name; your own guidance terms carry their targets"
                )
            terms, pipe, goals = list(guidance), self.pipeline, []
            label = ", ".join(type(term).__name__ for term in terms) or "none"
        else:
            goals = self.resolve_goals(target)
            weights = self.resolve_guidance(guidance, target)
            terms, pipe = self._terms(weights, goals, window)
            label = ", ".join(f"{k}={w:g}" for k, w in weights.items()) or "none"
            if weights:
                label += "; target " + ", ".join(g.describe(self.run.binning(g.property)) for g in goals)
        result = pipe(
            n,
            terms,
            seed,
            batch_size,
            steps=steps,
            sampler=method,
            grid_power=grid_power,
            sampler_options=sampler_options,
            progress=progress,
            edit=edit,
        )
        n = n if isinstance(n, int) else len(n)
        molecules = result.molecules
        self.last_failures = dict(result.failures)
        if not molecules:
            first = min(result.failures)
            raise GenerationError(
                f"all {n} samples diverged while sampling (sample {first}: {result.failures[first]}); "
                "designer.last_failures has every reason"
            )
        if self.last_failures:
            log.warning(
                "%d of %d samples diverged and are not returned (see last_failures)",
                len(self.last_failures),
                n,
            )
        for m in molecules:
            m.tags["molguide_guidance"] = label
            m.tags["molguide_seed"] = str(seed)
        self.last_goals = goals
        return result

    def _finish(self, result, evaluate: bool) -> list:
        """The sampled molecules as RDKit Mols with the evaluators' predictions and the metrics."""
        predicted = self._predict(result.molecules)
        self.last_metrics, self.last_predictions = {}, predicted
        mols = self._to_rdkit(result.molecules, evaluate)
        self.last_metrics.update(self._goal_metrics(self.last_goals, predicted))
        return mols

    def _predict(self, molecules: list[Molecule]) -> dict[str, np.ndarray]:
        """Every evaluator's predictions, by property (also set as ``evaluator_<property>``)."""
        from molguide.models.predictor import predict_samples

        predicted = {}
        for prop in self.run.properties if molecules else []:
            if not self.run.has("evaluator", prop):
                continue
            record = self.run.record("evaluator", prop)
            evaluator, onehot = self.run.network("evaluator", prop), self.run.diffusion.onehot_scale
            predicted[prop] = values = np.asarray(
                predict_samples(evaluator, molecules, record.mean, record.std, onehot), dtype=float
            )
            for m, v in zip(molecules, values):
                m.properties[f"evaluator_{prop}"] = float(v)
        return predicted

    def _goal_metrics(self, goals: list[Goal], predicted: dict[str, np.ndarray]) -> dict[str, float]:
        """Per goal with an evaluator: the predicted mean, the hit rate where the goal can be
        judged (a binning, or a value with a tolerance) and the mean distance to a value goal;
        the joint hit rate when every goal has a hit rate."""
        metrics: dict[str, float] = {}
        hits = []
        for goal in goals:
            values = predicted.get(goal.property)
            if values is None:
                continue
            metrics[f"{goal.property}_mean"] = float(np.nanmean(values))
            binning = self.run.binning(goal.property)
            if binning is not None or goal.judged_without_bins():
                hits.append(goal.hits(values, binning))
                metrics[f"{goal.property}_hit_rate"] = float(hits[-1].mean())
            if goal.kind == "value":
                metrics[f"{goal.property}_mae_to_value"] = float(np.nanmean(np.abs(values - goal.value)))
        if len(goals) > 1 and len(hits) == len(goals):
            metrics["joint_hit_rate"] = float(np.logical_and.reduce(hits).mean())
        if metrics:
            log.info("goals: %s", ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
        return metrics

    def _to_rdkit(self, molecules: list[Molecule], evaluate: bool) -> list:
        from molguide.chem.evaluate import METRIC_NAMES, PREDICTED_BONDS_METRIC, annotated_mols
        from molguide.chem.evaluate import evaluate as evaluate_molecules
        from molguide.data.io import molecule_to_rdkit

        if not evaluate or not molecules:
            return [molecule_to_rdkit(m) for m in molecules]
        ev = evaluate_molecules(molecules, reference_smiles=[], descriptors=True, xtb=False, progress=False)
        names = [k for k in METRIC_NAMES if k != "novelty"]
        names += [PREDICTED_BONDS_METRIC] if PREDICTED_BONDS_METRIC in ev.metrics else []
        self.last_metrics = {k: ev.metrics.get(k) for k in names}
        log.info(
            "%d molecules: %s",
            len(molecules),
            ", ".join(f"{k} {v:.3f}" for k, v in self.last_metrics.items() if v is not None),
        )
        mols = annotated_mols(ev, molecules)
        for mol, m in zip(mols, molecules):
            for key, value in m.tags.items():
                mol.SetProp(key, value)
        return mols


def _towards_goal(values: np.ndarray, lead_value: float, goals: list[Goal], prop: str) -> np.ndarray:
    """Each variant's gain over the lead in the direction of ``prop``'s goal."""
    goal = next((g for g in goals if g.property == prop), None)
    if goal is not None and goal.kind == "value":  # as diagnostics.goals scores a value goal
        return abs(lead_value - goal.value) - np.abs(values - goal.value)
    sign = goal.direction if goal is not None and goal.direction else 1.0  # a bin goal: the plain difference
    return sign * (values - lead_value)


def _lead_smiles(mol) -> str:
    """The lead's canonical SMILES from its own bonds, else from bonds perceived from its
    coordinates ('' when neither works): what its variants are compared with."""
    from molguide.chem.smiles import canonical_smiles

    if hasattr(mol, "GetNumBonds") and mol.GetNumBonds() > 0:
        from rdkit import Chem

        copy = Chem.Mol(mol)
        try:
            Chem.SanitizeMol(copy)
            return canonical_smiles(copy) or ""
        except (ValueError, RuntimeError):
            pass
    from molguide.chem.reconstruct import rebuild_molecule

    rebuilt = rebuild_molecule(as_molecule(mol))
    return (canonical_smiles(rebuilt.mol) or "") if rebuilt.mol is not None else ""


def _are_terms(guidance) -> bool:
    """Whether ``guidance`` is a sequence of guidance-term objects (not the weights by name)."""
    if guidance is None or isinstance(guidance, (Mapping, str)):
        return False
    if not isinstance(guidance, Sequence) or not all(callable(term) for term in guidance):
        raise ValueError("guidance: give weights by kind, e.g. {'classifier': 2.0}, or guidance-term objects")
    return True


def _sources(guidance: object) -> list[str]:
    if isinstance(guidance, (str, bytes)) or not isinstance(guidance, Sequence):
        raise ValueError(f"guidance: give a list of run folders or runs:/<run_id>, got {guidance!r}")
    return list(guidance)


def load(source: str, device: str = "cpu", guidance: Sequence[str] = ()) -> Designer:
    """A :class:`Designer` from a shipped generator (``"qm9"``: the QM9 score model in
    the package, unguided), a saved model folder, ``"runs:/<run_id>"`` (MLflow, any run
    of a quickstart, full or guide pipeline, or a training run) or a run folder
    (``output_dir``); ``guidance`` adds the guidance networks and evaluators of other
    runs (e.g. one per property: ``load("qm9", guidance=["runs/gap", "runs/mu"])``)."""
    return Designer.load(source, device, guidance)
