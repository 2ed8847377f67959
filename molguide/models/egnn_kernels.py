"""The fused per-edge autograd functions of the EGNN layer (:mod:`molguide.models.egnn`).

Where the time goes and what is done about it (the same maths throughout):

- The first linear layer of the edge and coordinate MLPs acts on a concatenation
  [h_i, h_j, e_ij]; we compute it as per-node projections W_a h_i + W_b h_j
  gathered onto edges plus W_e e_ij: N instead of E rows through the big matrix.
- What is left is dominated by passes over (E, hidden) tensors. The per-edge part
  of both MLPs is one autograd function each (``EdgeMessages``, ``CoordWeights``)
  with a hand-written backward: the gather-and-add of the first layer, the gated
  sum over neighbours and the sums over edges in the backward pass are single
  ``embedding_bag`` calls, the backward pass works in place on its own buffers,
  and no (E, 2 hidden + 2) concatenation exists: on 2 CPU cores a training step of
  EDM's 256x9 network takes about 0.4x the time of the naive form and two thirds of
  its memory (benchmarks/score_model.py). Weight gradients are skipped when the
  backward pass does not want them (gradients with respect to the input only, as in
  classifier guidance).
- A second derivative through these functions (e.g. a gradient penalty trained
  with ``create_graph=True``) and autocast fall back to the plain autograd form.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F
from torch_geometric.utils import scatter

EDGE_FEATURES = 2  # squared distance now and at the input


class EdgeGraph:
    """Index tensors of one edge set, built once per forward pass and shared by all layers.

    ``embedding_bag`` in sum mode gathers rows and sums them per bag in one pass:
    with bags [i, N + j, 2N, ..., 2N + D - 1] over the rows of [P; Q; W_e^T] and
    weights [1, 1, e_ij] (D edge features) it gives P_i + Q_j + W_e e_ij; with the edges of node i as its bag
    it is the (optionally weighted) sum over neighbours.
    """

    def __init__(self, edge_index: torch.Tensor, num_nodes: int, edge_dim: int = EDGE_FEATURES) -> None:
        self.i, self.j = edge_index[0], edge_index[1]
        self.num_nodes = num_nodes
        n, num_edges = num_nodes, self.i.numel()
        corner = torch.full_like(self.i, 2 * n)
        rows = [self.i, self.j + n] + [corner + k for k in range(edge_dim)]
        self.gather_index = torch.stack(rows, 1).reshape(-1)
        self.gather_offsets = torch.arange(0, len(rows) * num_edges, len(rows), device=self.i.device)
        self.ones = None
        self.by_i = self._segments(self.i)
        self.by_j = self._segments(self.j)

    def _segments(self, index: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """(order or None when already sorted, order as bag input, bag offsets)."""
        sorted_already = index.numel() < 2 or bool((index[1:] >= index[:-1]).all())
        order = None if sorted_already else torch.argsort(index, stable=True)
        counts = torch.bincount(index, minlength=self.num_nodes)
        offsets = torch.cumsum(counts, 0) - counts
        bag_input = torch.arange(index.numel(), device=index.device) if order is None else order
        return order, bag_input, offsets

    def gather_in(self, p: torch.Tensor, q: torch.Tensor, w_e: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """p[i] + q[j] + e @ w_e.T for every edge, in one pass over the output."""
        if self.ones is None or self.ones.dtype != e.dtype:
            self.ones = torch.ones(e.shape[0], 2, dtype=e.dtype, device=e.device)
        table = torch.cat([p, q, w_e.t()])
        weights = torch.cat([self.ones, e], 1).reshape(-1)
        return F.embedding_bag(
            self.gather_index, table, self.gather_offsets, mode="sum", per_sample_weights=weights
        )

    def gather_in_backward(
        self, grad: torch.Tensor, w_e: torch.Tensor, e: torch.Tensor, needs: tuple[bool, ...]
    ) -> tuple[torch.Tensor | None, ...]:
        """Gradients of :meth:`gather_in` with respect to (p, q, w_e, e)."""
        gp = self.sum_over(grad, self.by_i) if needs[0] else None
        gq = self.sum_over(grad, self.by_j) if needs[1] else None
        gw = (e.t() @ grad).t() if needs[2] else None  # faster than grad.t() @ e here
        # grad @ w_e as a linear layer: (E, H) x (H, D) with tiny D is 2-3x slower through mm
        ge = F.linear(grad, w_e.t().contiguous()) if needs[3] else None
        return gp, gq, gw, ge

    def sum_over(self, values: torch.Tensor, segments, weights: torch.Tensor | None = None) -> torch.Tensor:
        """out[n] = sum of weights[k] * values[k] over the edges k of node n (source or target)."""
        order, bag_input, offsets = segments
        if weights is not None and order is not None:
            weights = weights.index_select(0, order)
        return F.embedding_bag(bag_input, values, offsets, mode="sum", per_sample_weights=weights)


def _silu_backward_(grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """grad * silu'(x), written over ``grad`` (a buffer the caller owns)."""
    return torch.ops.aten.silu_backward.grad_input(grad, x, grad_input=grad)


def _needed(ctx, tensors) -> tuple[bool, ...]:
    """Which inputs the running backward pass wants gradients for.

    ``needs_input_grad`` only says which inputs require grad; a gradient taken with
    respect to some tensors only (``torch.autograd.grad(logp, z)`` in classifier
    guidance) needs none of the weight gradients, which are a third of the work.
    """
    out = []
    for needed, x in zip(ctx.needs_input_grad, tensors):
        if needed:
            try:  # the engine's own test, as torch.autograd.graph.register_multi_grad_hook uses it
                needed = torch._C._will_engine_execute_node(torch.autograd.graph.get_gradient_edge(x).node)
            except (AttributeError, RuntimeError):
                needed = True
        out.append(bool(needed))
    return tuple(out)


def _gated_messages(p, q, w_e, w2, b2, w_g, b_g, e, graph):
    """Plain-autograd form of :class:`EdgeMessages` (for double backward and autocast)."""
    a = p.index_select(0, graph.i) + q.index_select(0, graph.j) + e @ w_e.t()
    m = F.silu(F.linear(F.silu(a), w2, b2))
    if w_g is not None:
        m = m * torch.sigmoid(F.linear(m, w_g, b_g))
    return scatter(m, graph.i, dim=0, dim_size=graph.num_nodes, reduce="sum")


def _coord_weights(p, q, w_e, w, b, w_last, e, graph, scale):
    """Plain-autograd form of :class:`CoordWeights`."""
    a = p.index_select(0, graph.i) + q.index_select(0, graph.j) + e @ w_e.t()
    return torch.tanh(F.linear(F.silu(F.linear(F.silu(a), w, b)), w_last)).squeeze(-1) * scale


def _double_backward(ctx, plain, grads, *extra):
    """Backward by recomputing ``plain`` under autograd (keeps second derivatives exact).

    The gradients are taken with respect to fresh views of the inputs: one input can be
    an ancestor of another (e feeds h, h feeds p), and a gradient with respect to the
    inputs themselves would also follow that path, which the outer backward pass
    follows again. The views still connect the result to the inputs for the next
    derivative.
    """
    inputs = ctx.saved_tensors[: ctx.num_inputs]
    wanted = [k for k, x in enumerate(inputs) if x is not None and ctx.needs_input_grad[k]]
    with torch.enable_grad():
        inputs = [x.view_as(x) if k in wanted else x for k, x in enumerate(inputs)]
        out = plain(*inputs, ctx.graph, *extra)
        found = torch.autograd.grad(out, [inputs[k] for k in wanted], grads, create_graph=True)
    result = [None] * ctx.num_inputs
    for k, g in zip(wanted, found):
        result[k] = g
    return result


class EdgeMessages(torch.autograd.Function):
    """agg_i = sum_j gate(m_ij) m_ij with m_ij = silu(W2 silu(p_i + q_j + W_e e_ij) + b2)
    and gate(m) = sigmoid(w_g m + b_g).

    ``w_g``/``b_g`` None: no gate.
    """

    @staticmethod
    def forward(ctx, p, q, w_e, w2, b2, w_g, b_g, e, graph):
        a = graph.gather_in(p, q, w_e, e)
        s1 = F.silu(a)
        pre = torch.mm(s1, w2.t()).add_(b2)  # cheaper than addmm's broadcast copy of the bias
        m = F.silu(pre)
        gate = None
        if w_g is not None:
            gate = torch.sigmoid_(torch.addmv(b_g, m, w_g[0]))
        agg = graph.sum_over(m, graph.by_i, gate)
        ctx.graph, ctx.num_inputs = graph, 8
        ctx.save_for_backward(p, q, w_e, w2, b2, w_g, b_g, e, a, s1, pre, m, gate)
        return agg

    @staticmethod
    def backward(ctx, grad_agg):
        if torch.is_grad_enabled():  # create_graph=True: differentiate the plain form instead
            return (*_double_backward(ctx, _gated_messages, grad_agg), None)
        p, q, w_e, w2, b2, w_g, b_g, e, a, s1, pre, m, gate = ctx.saved_tensors
        graph, needs = ctx.graph, _needed(ctx, (p, q, w_e, w2, b2, w_g, b_g, e))
        grad = grad_agg.contiguous().index_select(0, graph.i)  # d loss / d (gate * m), per edge
        g_wg = g_bg = None
        if gate is not None:
            d_logit = torch.linalg.vecdot(grad, m).mul_(gate * (1 - gate))
            g_wg = (d_logit @ m).unsqueeze(0) if needs[5] else None
            g_bg = d_logit.sum().reshape(1) if needs[6] else None
            grad.mul_(gate.unsqueeze(-1)).addr_(d_logit, w_g[0])
        grad = _silu_backward_(grad, pre)  # d loss / d pre
        g_b2 = grad.sum(0) if needs[4] else None
        g_w2 = grad.t() @ s1 if needs[3] else None
        grad_a = _silu_backward_(torch.mm(grad, w2), a)
        g_p, g_q, g_we, g_e = graph.gather_in_backward(
            grad_a, w_e, e, (needs[0], needs[1], needs[2], needs[7])
        )
        return g_p, g_q, g_we, g_w2, g_b2, g_wg, g_bg, g_e, None


class CoordWeights(torch.autograd.Function):
    """phi_ij = tanh(w_last . silu(W silu(p_i + q_j + W_e e_ij) + b)) * scale, one scalar per edge."""

    @staticmethod
    def forward(ctx, p, q, w_e, w, b, w_last, e, graph, scale):
        a = graph.gather_in(p, q, w_e, e)
        s1 = F.silu(a)
        pre = torch.mm(s1, w.t()).add_(b)
        m = F.silu(pre)
        t = torch.tanh_(m @ w_last[0])
        ctx.graph, ctx.num_inputs, ctx.scale = graph, 7, scale
        ctx.save_for_backward(p, q, w_e, w, b, w_last, e, a, s1, pre, m, t)
        return t * scale

    @staticmethod
    def backward(ctx, grad_phi):
        if torch.is_grad_enabled():
            return (*_double_backward(ctx, _coord_weights, grad_phi, ctx.scale), None, None)
        p, q, w_e, w, b, w_last, e, a, s1, pre, m, t = ctx.saved_tensors
        graph, needs = ctx.graph, _needed(ctx, (p, q, w_e, w, b, w_last, e))
        d_y = grad_phi * ctx.scale * (1 - t * t)
        g_last = (d_y @ m).unsqueeze(0) if needs[5] else None
        grad = _silu_backward_(torch.outer(d_y, w_last[0]), pre)  # d loss / d pre
        g_b = grad.sum(0) if needs[4] else None
        g_w = grad.t() @ s1 if needs[3] else None
        grad_a = _silu_backward_(torch.mm(grad, w), a)
        g_p, g_q, g_we, g_e = graph.gather_in_backward(
            grad_a, w_e, e, (needs[0], needs[1], needs[2], needs[6])
        )
        return g_p, g_q, g_we, g_w, g_b, g_last, g_e, None, None
