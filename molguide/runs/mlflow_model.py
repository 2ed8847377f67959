"""A molguide network as an MLflow ``python_function`` model (see
:mod:`molguide.runs.model_registry`, which logs and registers them).

Imported only where a model is logged or loaded: it imports ``mlflow.pyfunc``.
"""

from __future__ import annotations

import warnings

from mlflow.pyfunc import PythonModel  # imported first: importing MLflow resets warning filters

from molguide.runs.model_registry import ARTIFACT_KEY, PROPERTY_KINDS, SCORE_KINDS

with warnings.catch_warnings():  # MLflow asks for type hints it would then enforce on the frame
    warnings.filterwarnings("ignore", message=".*type hints.*", category=UserWarning)

    class MolguideNetworkModel(PythonModel):
        """A molguide network as an MLflow ``python_function`` model.

        ``predict`` of a score network: a DataFrame with ``n`` (molecules) and ``seed`` per
        row -> one row per molecule with its ``smiles`` and 3D ``molblock``. Of an evaluator:
        a DataFrame with 3D ``molblock`` s -> the property per molecule. Guidance networks act
        inside the sampler; load them with ``molguide.load(..., guidance=["models:/..."])``.
        """

        def load_context(self, context) -> None:
            from molguide.storage.trained_run import read_network

            self.trained = read_network(context.artifacts[ARTIFACT_KEY])

        def predict(self, context, model_input, params=None):
            import pandas as pd

            kind = self.trained.kind
            if kind in SCORE_KINDS:
                return self._generate(model_input)
            if kind in PROPERTY_KINDS:
                return pd.DataFrame({self.trained.property: self._predict_property(model_input)})
            raise ValueError(
                f"a {kind} network steers sampling and has no predict of its own; load it with "
                "molguide.load(generator, guidance=['models:/...'])"
            )

        def _generate(self, frame):
            import pandas as pd
            from rdkit import Chem

            from molguide.generation.designer import Designer
            from molguide.storage.trained_run import TrainedRun

            designer = Designer(TrainedRun({"score": self.trained}, self.trained.source))
            rows = []
            for n, seed in zip(frame["n"], frame["seed"]):
                for mol in designer.generate(int(n), seed=int(seed)):
                    smiles = mol.GetProp("smiles") if mol.HasProp("smiles") else ""
                    rows.append({"smiles": smiles, "molblock": Chem.MolToMolBlock(mol, kekulize=False)})
            return pd.DataFrame(rows, columns=["smiles", "molblock"])

        def _predict_property(self, frame):
            from rdkit import Chem

            from molguide.data.io import molecule_from_rdkit
            from molguide.data.molecules import MoleculeSet
            from molguide.models.predictor import predict_property

            molecules = []
            for k, block in enumerate(frame["molblock"]):
                mol = Chem.MolFromMolBlock(block, removeHs=False, sanitize=False)
                if mol is None or mol.GetNumConformers() == 0:
                    raise ValueError(f"molblock {k}: not a 3D MDL mol block")
                molecule, problem = molecule_from_rdkit(mol, f"molblock {k}")
                if molecule is None:
                    raise ValueError(f"molblock {k}: {problem}")
                molecules.append(molecule)
            record = self.trained.record
            return predict_property(
                self.trained.network,
                MoleculeSet.from_molecules(molecules),
                record.mean,
                record.std,
                record.onehot_scale,
            )
