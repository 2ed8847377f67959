"""The design pipeline: a score model, a sampler, a size distribution and atom types, as one object.

    pipe = MoleculeDiffusionPipeline.from_pretrained("qm9")
    result = pipe(100, seed=0)                                   # unguided
    guided = pipe(100, guidance=[ClassifierGuidance(clf, 2, 2.0)], seed=0)
    # result.molecules[k] is sample result.indices[k]; the same seed pairs the two calls

Every molguide sampling path calls it: ``Designer.generate``, the quickstart's and
``guide``'s settings, EDM's protocol and ``molguide run sample``. A call draws the
molecule sizes from the node-count distribution with ``seed`` (or takes them as
given), the noise from one generator seeded with ``seed + 1`` (or the ``generator``
passed in), and samples in batches of ``batch_size`` under the guidance terms, which
add to the score. Guidance terms with one target per sample (a tensor of classes,
one label per molecule) are cut to each batch through their ``for_samples`` method.
"""

from __future__ import annotations

import dataclasses
import numbers
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from molguide.data.elements import QM9_ATOMIC_NUMBERS
from molguide.diffusion.atom_counts import NodeCountDistribution
from molguide.diffusion.editing import MoleculeEdit
from molguide.diffusion.process import VPDiffusion
from molguide.diffusion.sampling import GuidanceTerm, SampleResult, for_samples, sample
from molguide.generation.limits import MAX_STEPS, check_sample_count, whole_number
from molguide.storage.files import atomic_write
from molguide.storage.metadata import ScoreRecord
from molguide.storage.trained_run import CARD_FILE, TrainedRun, save_network, write_index


@dataclass
class MoleculeDiffusionPipeline:
    """Generates molecules from ``model`` under ``diffusion`` with a registered sampler.

    Args:
        model: the score network (its ``context_dim`` > 0: a conditional network,
            sampled with the null label unless a context is given).
        nodes: the distribution of atom counts (None: every call gives the counts).
        atom_types: the atomic numbers of the network's type channels, in order.
        sampler, steps, grid_power: the defaults of every call (see :meth:`__call__`).
    """

    model: torch.nn.Module
    diffusion: VPDiffusion
    nodes: NodeCountDistribution | None = None
    atom_types: tuple[int, ...] = QM9_ATOMIC_NUMBERS
    sampler: str = "ancestral"
    steps: int = 100
    grid_power: float = 1.0
    device: str | torch.device = "cpu"
    sampler_options: Mapping[str, float] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_pretrained(cls, source: str | Path, device: str = "cpu") -> MoleculeDiffusionPipeline:
        """The pipeline of a shipped generator (``"qm9"``), a saved model folder, a run folder,
        or ``runs:/<run_id>``, with the sampler settings the
        model recommends (:meth:`TrainedRun.from_pretrained`)."""
        return cls.from_run(TrainedRun.from_pretrained(source, device))

    @classmethod
    def from_run(cls, run: TrainedRun, kind: str = "score") -> MoleculeDiffusionPipeline:
        """The pipeline around a run's ``kind`` network (``score``, or ``cfg`` for CFG) with the
        score network's atom counts, atom types and recommended sampler."""
        recommended = run.sampler_settings
        return cls(
            run.network(kind),
            run.diffusion,
            run.nodes,
            run.atom_types,
            sampler=str(recommended.get("method", "ancestral")),
            steps=int(recommended.get("steps", 100)),
            grid_power=float(recommended.get("grid_power", 1.0)),
            device=run.device,
            sampler_options=dict(recommended.get("options", {})),
        )

    def save_pretrained(
        self, directory: str | Path, training: Mapping | None = None, card: str | None = None, step: int = 0
    ) -> Path:
        """Write the pipeline as a trained-run folder (:mod:`molguide.storage.trained_run`):
        the network's weights and config, the diffusion, the atom counts, the atom types and
        this pipeline's sampler settings, which :meth:`from_pretrained` restores."""
        if self.nodes is None:
            raise ValueError("save_pretrained: a saved generator needs its node-count distribution")
        channels = getattr(self.model, "num_atom_types", len(self.atom_types))
        if channels != len(self.atom_types):
            raise ValueError(
                f"the model has {channels} atom-type channels but "
                f"{len(self.atom_types)} atom types were given"
            )
        record = ScoreRecord(
            diffusion=self.diffusion.config,
            atom_types=[int(z) for z in self.atom_types],
            node_count_probs=[float(p) for p in self.nodes.probs],
            training=dict(training or {}),
            sampler={
                "method": self.sampler,
                "steps": self.steps,
                "grid_power": self.grid_power,
                "options": dict(self.sampler_options),
            },
        )
        directory = Path(directory)
        save_network(directory / "score", "score", self.model, record, step)
        if card is not None:
            atomic_write(directory / CARD_FILE, lambda fh: fh.write(card.encode()))
        return write_index(directory)

    def with_model(self, model: torch.nn.Module) -> MoleculeDiffusionPipeline:
        """The same pipeline around another score network of the same diffusion (e.g. a CFG model)."""
        return dataclasses.replace(self, model=model)

    def __call__(
        self,
        n: int | Sequence[int] | torch.Tensor,
        guidance: Sequence[GuidanceTerm] = (),
        seed: int = 0,
        batch_size: int = 250,
        *,
        generator: torch.Generator | None = None,
        context: torch.Tensor | None = None,
        steps: int | None = None,
        sampler: str | None = None,
        grid_power: float | None = None,
        sampler_options: Mapping[str, float] | None = None,
        progress: bool = False,
        edit: MoleculeEdit | None = None,
    ) -> SampleResult:
        """Sample ``n`` molecules (an int: sizes drawn with ``seed``; else one atom count per sample).

        Args:
            guidance: terms added to the score (:class:`~molguide.diffusion.sampling.GuidanceTerm`).
            seed: seeds the sizes (when ``n`` is an int) and, as ``seed + 1``, the noise:
                calls with one seed are paired sample by sample.
            batch_size: molecules per batch (one generator runs on through the batches,
                so the batch size changes which noise a sample gets).
            generator: the noise generator to use instead of one seeded with ``seed + 1``.
            context: (n, context_dim) labels of a conditional network (default: the null label).
            steps, sampler, grid_power, sampler_options: override the pipeline's defaults
                for this call (another sampler starts from its own default options).
            edit: start from given molecules and/or keep some of their atoms
                (:class:`~molguide.diffusion.editing.MoleculeEdit`); ``n`` must then be its
                atom counts, one per sample.
        Returns:
            the molecules with their sample indices, the failures by index, and the seconds taken.

        A wrong argument (``seed="7"``, ``steps=2.5``, ``batch_size=True``, a negative seed) is a
        ValueError naming it; so is a call whose results would not fit in this machine's free
        memory (:func:`molguide.generation.limits.check_sample_count`).
        """
        batch_size = whole_number("batch_size", batch_size, least=1)
        seed = whole_number("seed", seed, least=0, most=2**63 - 2)  # seed + 1 seeds the noise
        steps = whole_number("steps", self.steps if steps is None else steps, least=1, most=MAX_STEPS)
        method = self.sampler if sampler is None else sampler
        if not isinstance(method, str):
            raise ValueError(f"sampler must be a sampler's name, got {method!r}")
        power = self.grid_power if grid_power is None else grid_power
        if not isinstance(power, numbers.Real) or isinstance(power, bool) or not 0 < power < float("inf"):
            raise ValueError(f"grid_power must be a finite number above 0, got {power!r}")
        counts = self._counts(n, seed)
        if edit is not None and edit.counts != counts.tolist():
            raise ValueError("edit: give n as the edit's atom counts (edit.counts), one per sample")
        noise = generator if generator is not None else torch.Generator().manual_seed(seed + 1)
        if sampler_options is not None:
            options = dict(sampler_options)
        else:  # the pipeline's options belong to its own sampler
            options = dict(self.sampler_options) if method == self.sampler else {}
        context_dim = getattr(self.model, "context_dim", 0)
        if context is not None and len(context) != len(counts):
            raise ValueError(f"{len(context)} context rows for {len(counts)} samples")
        molecules, indices, failures = [], [], {}
        t0 = time.perf_counter()
        for start in range(0, len(counts), batch_size):
            end = min(start + batch_size, len(counts))
            if context is not None:
                ctx = context[start:end].to(self.device)
            else:  # the null label of a conditional network
                ctx = torch.zeros(end - start, context_dim, device=self.device) if context_dim else None
            part = sample(
                self.model,
                self.diffusion,
                counts[start:end],
                steps,
                method,
                [for_samples(term, start, end) for term in guidance],
                ctx,
                noise,
                atom_types=self.atom_types,
                device=self.device,
                progress=progress,
                grid_power=power,
                first_index=start,
                sampler_options=options,
                edit=edit.for_samples(start, end) if edit is not None else None,
            )
            molecules += part.molecules
            indices += part.indices
            failures.update(part.failures)
        seconds = time.perf_counter() - t0
        return SampleResult(molecules, failures, steps, method, power, indices, seconds, counts.tolist())

    def _counts(self, n: int | Sequence[int] | torch.Tensor, seed: int) -> torch.Tensor:
        if isinstance(n, numbers.Integral) and not isinstance(n, bool):  # a numpy integer too
            n = whole_number("n", n, least=1)
            check_sample_count(n, max_samples=None)  # before n atom counts are drawn
            if self.nodes is None:
                raise ValueError(
                    "this pipeline has no node-count distribution: give one atom count per sample"
                )
            return self.nodes.sample(n, torch.Generator().manual_seed(seed))
        if isinstance(n, (bool, str, float)):
            raise ValueError(f"n must be a whole number of molecules or their atom counts, got {n!r}")
        counts = torch.as_tensor(n, dtype=torch.long)
        if counts.dim() != 1 or len(counts) == 0 or bool((counts < 1).any()):
            raise ValueError("atom counts: give a non-empty sequence of positive integers")
        return counts
