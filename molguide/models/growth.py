"""Function-preserving growth of an EGNN score network: wider and deeper, same outputs.

A trained EGNN of width H and depth L is copied into a fresh network of width H' >= H
and depth L' >= L so that the bigger network computes exactly the same function at the
start, then trains from there (Net2Net-style warm start, Chen et al. 2016):

- every weight block that maps the old channels to the old channels is copied;
- a weight that feeds an *old* output channel from a *new* input channel is zero, so
  the new channels cannot change what the old ones compute; the new output channels
  (new rows) keep the fresh network's random initialisation, so they carry signal and
  their consumers' zero weights receive gradients from the first step;
- the appended layers are identity maps: the last linear layer of their residual node
  update and their coordinate head are zero (the EGNN's h += node_mlp(...) and
  x += sum(unit * tanh(phi) * range) then add nothing).

The grown network must differ from the source only in ``hidden`` and ``num_layers``;
anything else (coordinate range, parameterisation, atom types) would change the function.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from molguide.models.score import ScoreNetwork

# Growth may change only these backbone sizes; everything else must match.
GROWABLE = ("hidden", "num_layers")
# Parameters of an appended EGNN layer that are zeroed to make it an identity map.
_IDENTITY_ZEROS = ("node_mlp.2.weight", "node_mlp.2.bias", "coord_out.3.weight")


def _sizes(config: Mapping) -> tuple[int, int]:
    kwargs = config.get("backbone_kwargs", {})
    return int(kwargs.get("hidden", 64)), int(kwargs.get("num_layers", 4))


def growth_problem(source: Mapping, target: Mapping) -> str | None:
    """Why a network of config ``source`` cannot grow into one of config ``target``; None if it can."""
    if source.get("backbone") != "egnn" or target.get("backbone") != "egnn":
        return (
            f"only EGNN networks grow (source {source.get('backbone')!r}, target {target.get('backbone')!r})"
        )
    for key in sorted(set(source) | set(target)):
        if key != "backbone_kwargs" and source.get(key) != target.get(key):
            return f"{key} differs ({source.get(key)!r} there, {target.get(key)!r} here)"
    src_kw, tgt_kw = source.get("backbone_kwargs", {}), target.get("backbone_kwargs", {})
    for key in sorted((set(src_kw) | set(tgt_kw)) - set(GROWABLE)):
        if src_kw.get(key) != tgt_kw.get(key):
            return f"backbone_kwargs.{key} differs ({src_kw.get(key)!r} there, {tgt_kw.get(key)!r} here)"
    (h0, l0), (h1, l1) = _sizes(source), _sizes(target)
    if h1 < h0 or l1 < l0:
        return f"the network can only grow, not shrink ({h0}x{l0} there, {h1}x{l1} here)"
    return None


def _grown_dim(small: int, big: int, hidden: int, new_hidden: int, name: str) -> int:
    """How many blocks of hidden channels a dimension holds (0: not a hidden dimension)."""
    if small == big:
        return 0
    blocks = small // hidden
    if small % hidden or big != blocks * new_hidden:
        raise ValueError(
            f"{name}: cannot map a dimension of {small} onto {big} (hidden {hidden}->{new_hidden})"
        )
    return blocks


def _old_positions(blocks: int, hidden: int, new_hidden: int) -> torch.Tensor:
    """Indices, in the grown dimension, of the old channels of each hidden block."""
    return torch.cat([torch.arange(hidden) + b * new_hidden for b in range(blocks)])


def _grow_tensor(
    small: torch.Tensor, init: torch.Tensor, hidden: int, new_hidden: int, name: str
) -> torch.Tensor:
    out = init.detach().clone()
    if small.dim() == 0 or small.shape == init.shape:
        return small.detach().clone().to(out.dtype)
    rows_blocks = _grown_dim(small.shape[0], init.shape[0], hidden, new_hidden, name)
    rows = _old_positions(rows_blocks, hidden, new_hidden) if rows_blocks else torch.arange(small.shape[0])
    if small.dim() == 1:
        out[rows] = small.to(out.dtype)
        return out
    cols_blocks = _grown_dim(small.shape[1], init.shape[1], hidden, new_hidden, name)
    cols = _old_positions(cols_blocks, hidden, new_hidden) if cols_blocks else torch.arange(small.shape[1])
    out[rows] = 0.0  # old outputs read nothing from the new inputs...
    out[rows.unsqueeze(1), cols.unsqueeze(0)] = small.to(out.dtype)  # ...and all they read before
    return out


def grow_state(
    state: Mapping[str, torch.Tensor], source_config: Mapping, network: ScoreNetwork
) -> dict[str, torch.Tensor]:
    """Weights for ``network`` (a fresh, bigger EGNN score network) that compute what the
    network of ``source_config`` with weights ``state`` computes; see the module docstring.

    New channels and layers take their values from ``network``'s own initialisation, so
    seed the network's construction for a reproducible result.
    """
    problem = growth_problem(source_config, network.config)
    if problem:
        raise ValueError(f"cannot grow the network: {problem}")
    (hidden, layers), (new_hidden, _) = _sizes(source_config), _sizes(network.config)
    grown = {}
    for name, init in network.state_dict().items():
        if name in state:
            grown[name] = _grow_tensor(state[name], init, hidden, new_hidden, name)
            continue
        # Only the appended layers are new: anything else missing means another architecture.
        parts = name.split(".")
        if not (name.startswith("backbone.layers.") and int(parts[2]) >= layers):
            raise ValueError(f"cannot grow the network: {name} is not in the source weights")
        grown[name] = torch.zeros_like(init) if ".".join(parts[3:]) in _IDENTITY_ZEROS else init.clone()
    unused = sorted(set(state) - set(grown))
    if unused:
        raise ValueError(
            f"cannot grow the network: the source has weights the target lacks ({unused[0]}, ...)"
        )
    return grown


def _same_egnn_except(source: Mapping, target: Mapping, free: set[str], what: str) -> None:
    """ValueError unless both configs are one EGNN's that differ only in the keys ``free``."""
    for key in sorted((set(source) | set(target)) - free):
        if source.get(key) != target.get(key):
            there, here = source.get(key), target.get(key)
            raise ValueError(f"cannot {what}: {key} differs ({there!r} there, {here!r} here)")
    if target["backbone"] != "egnn":
        raise ValueError(f"cannot {what} to a {target['backbone']!r} network (EGNN only)")


def add_context(
    state: Mapping[str, torch.Tensor], source_config: Mapping, network: ScoreNetwork
) -> dict[str, torch.Tensor]:
    """Weights for ``network``, a conditional copy (``context_dim`` C > 0) of the
    unconditional EGNN score network of ``source_config``, that compute what the source
    computes whatever the context: the input embedding's C context columns (after the
    atom types and t) are zero, every other weight is copied. Classifier-free guidance
    fine-tuned from these weights starts with no guidance (conditional = unconditional)
    and learns only the difference."""
    target = dict(network.config)
    width = int(target.get("context_dim", 0))
    if int(source_config.get("context_dim", 0)) != 0 or width < 1:
        raise ValueError("cannot add a context: the source must be unconditional and the target conditional")
    _same_egnn_except(source_config, target, {"context_dim"}, "add a context")
    start = int(target["num_atom_types"]) + 1  # inputs: atom types, t, context, ...

    def place(old: torch.Tensor, grown: torch.Tensor) -> bool:
        if grown.shape[1] != old.shape[1] + width:
            return False
        grown[:, :start] = old[:, :start]
        grown[:, start + width :] = old[:, start:]
        return True

    return _copy_with_new_inputs(state, network, "add a context", place)


def _copy_with_new_inputs(state: Mapping[str, torch.Tensor], network: ScoreNetwork, what: str, place) -> dict:
    """``network``'s weights from ``state``: every tensor copied as it is, except the input
    embedding, where ``place(old, grown)`` lays the old columns into a zero tensor of the new
    shape (False: it does not fit); any other difference is a ValueError naming ``what``."""
    out = {}
    for name, init in network.state_dict().items():
        old = state.get(name)
        if old is None:
            raise ValueError(f"cannot {what}: {name} is not in the source weights")
        if old.shape == init.shape:
            out[name] = old.detach().clone().to(init.dtype)
            continue
        grown = torch.zeros_like(init)
        if name != "backbone.embed.weight" or not place(old.to(init.dtype), grown):
            raise ValueError(
                f"cannot {what}: {name} has shape {tuple(old.shape)} there, {tuple(init.shape)} here"
            )
        out[name] = grown
    return out


def add_fixed_flag(
    state: Mapping[str, torch.Tensor], source_config: Mapping, network: ScoreNetwork
) -> dict[str, torch.Tensor]:
    """Weights for ``network``, a copy of the EGNN score network of ``source_config`` that
    also reads a fixed-atom flag (``fixed_atoms``, its last input column), computing what the
    source computes whatever the flag: that column's weights are zero, every other weight is
    copied. Training to keep atoms (docs/edit.md) starts from the shipped generator this way."""
    target = dict(network.config)
    if source_config.get("fixed_atoms") or not target.get("fixed_atoms"):
        raise ValueError("cannot add a fixed-atom flag: the source must lack it and the target have it")
    _same_egnn_except(source_config, target, {"fixed_atoms"}, "add a fixed-atom flag")

    def place(old: torch.Tensor, grown: torch.Tensor) -> bool:
        if grown.shape[1] != old.shape[1] + 1:
            return False
        grown[:, :-1] = old
        return True

    return _copy_with_new_inputs(state, network, "add a fixed-atom flag", place)


# An added atom type's initial logit (x0 networks): e^-10 of the old types' mass, so the
# grown network predicts the old types as before while the new logit still learns.
NEW_TYPE_LOGIT = -10.0


def add_atom_types(
    state: Mapping[str, torch.Tensor], source_config: Mapping, network: ScoreNetwork
) -> dict[str, torch.Tensor]:
    """Weights for ``network``, a copy of the EGNN score network of ``source_config`` with
    more atom-type channels (new elements appended after the source's), that computes what
    the source computes on the source's elements: the new types' input columns (one-hot and,
    with self-conditioning, its estimate) are zero (a fixed-atom flag keeps its weights),
    their output rows are zero (an eps network predicts no noise for them at first) with
    bias :data:`NEW_TYPE_LOGIT` (an x0 network's logits, so the old types keep their
    probabilities). Fine-tuning the shipped QM9 generator (an x0 network) on molecules with
    sulfur or chlorine starts from these weights. For an eps network only the outputs are
    preserved: its sampler's new channels start as noise the network does not yet remove,
    so sample only after fine-tuning."""
    target = dict(network.config)
    old_k, new_k = int(source_config.get("num_atom_types", 5)), int(target["num_atom_types"])
    if new_k <= old_k:
        raise ValueError(f"cannot add atom types: {old_k} there, {new_k} here")
    _same_egnn_except(source_config, target, {"num_atom_types", "atom_types"}, "add atom types")
    middle = 1 + int(target.get("context_dim", 0))  # the columns of t and the context
    out = {}
    for name, init in network.state_dict().items():
        old = state.get(name)
        if old is None:
            raise ValueError(f"cannot add atom types: {name} is not in the source weights")
        if old.shape == init.shape:
            out[name] = old.detach().clone().to(init.dtype)
        elif name == "backbone.embed.weight":  # columns: types, t, context, self-conditioning types
            grown = torch.zeros_like(init)
            grown[:, :old_k] = old[:, :old_k]
            grown[:, new_k : new_k + middle] = old[:, old_k : old_k + middle]
            rest = old[:, old_k + middle :]  # the previous estimate's types, then a fixed-atom flag
            if target.get("self_condition"):
                grown[:, new_k + middle : new_k + middle + old_k] = rest[:, :old_k]
                rest = rest[:, old_k:]
            if rest.shape[1]:
                grown[:, -rest.shape[1] :] = rest
            out[name] = grown
        elif name == "backbone.readout.weight":
            grown = torch.zeros_like(init)
            grown[:old_k] = old
            out[name] = grown
        elif name == "backbone.readout.bias":
            grown = torch.full_like(init, NEW_TYPE_LOGIT if target.get("parameterisation") == "x0" else 0.0)
            grown[:old_k] = old
            out[name] = grown
        else:
            raise ValueError(
                f"cannot add atom types: {name} has shape {tuple(old.shape)} there, {tuple(init.shape)} here"
            )
    return out
