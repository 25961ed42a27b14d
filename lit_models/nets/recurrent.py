"""Stacked, optionally bidirectional RNN / LSTM / GRU over padded batches, fused (torch's cuDNN-capable modules) or
manual (a Python loop over time of the hand-written gates of :mod:`lit_models.nets.recurrent_cells`).

Both modes hold the same parameters, torch's module under the name ``rnn`` (``rnn.weight_ih_l0``,
``rnn.weight_hh_l0_reverse``, ``rnn.bias_ih_l1``, ...): the manual mode reads them instead of calling the module, so
one state dict loads into either mode with ``strict=True``, and into a bare ``nn.LSTM`` after stripping ``rnn.``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from lit_models.nets.checks import check_args
from lit_models.nets.recurrent_cells import (
    GATES,
    GRUCell,
    LSTMCell,
    RNNCell,
    gru_gates,
    lstm_gates,
    rnn_gates,
    set_forget_bias,
)

# h: (layers * directions) x N x H, or (h, c) for the LSTM; torch's layout.
RecurrentState = Tensor | tuple[Tensor, Tensor]

STEPS = {"rnn": rnn_gates, "lstm": lstm_gates, "gru": gru_gates}


def check_lengths(owner: str, lengths: Tensor | None, batch: int, steps: int) -> Tensor | None:
    """Lengths N (int64, on their own device) of right-padded sequences, each in 1..T, or a ValueError naming the
    first bad index."""
    if lengths is None:
        return None
    lengths = torch.as_tensor(lengths)
    if lengths.shape != (batch,) or lengths.is_floating_point() or lengths.is_complex():
        raise ValueError(
            f"{owner} lengths must be an integer tensor of shape ({batch},), one per sequence; got "
            f"{lengths.dtype} {tuple(lengths.shape)}"
        )
    lengths = lengths.long()
    bad = ((lengths < 1) | (lengths > steps)).nonzero()
    if len(bad):
        index = int(bad[0, 0])
        raise ValueError(
            f"{owner} lengths[{index}] = {int(lengths[index])} is outside 1..{steps} (T, the padded length): every "
            "sequence needs at least one step; drop empty sequences from the batch"
        )
    return lengths


def valid_steps(lengths: Tensor, steps: int) -> Tensor:
    """N x T bool, True at steps t < lengths[n]."""
    return torch.arange(steps, device=lengths.device) < lengths[:, None]


class Recurrent(nn.Module):
    """Elman RNN (tanh), LSTM with forget gate, or GRU (torch's form) over N x T x D batches.

    Deviation from torch's initialisation (LSTM only): the forget gate's bias starts at ``forget_bias`` (1: Gers
    et al. 2000; Jozefowicz et al. 2015), put in ``bias_ih`` with the ``bias_hh`` slice at 0: an open forget gate
    keeps the cell state, and its gradient, across many steps. On the adding problem at T = 200
    (configs/sequence/lstm_adding.yaml) it still sat at the baseline MSE 0.17 after 5,000 steps, then reached 0.005
    by 6,200. Every other weight keeps torch's U(-1/sqrt(H), 1/sqrt(H)).

    Padding: with ``lengths``, outputs are exactly zero at steps t >= lengths[n], and the final state is each
    sequence's own: the forward direction's after its last valid step, the backward direction's after reading
    step 0 having started at the last valid step. The fused mode packs the batch
    (``pack_padded_sequence(enforce_sorted=False)``); the manual mode keeps the state unchanged at padded steps.

    Truncated BPTT: pass the returned state (detached) as ``state`` of the next chunk; chunks then give the same
    outputs as one pass over the whole sequence (unidirectional only: a backward direction would need the future).

    Dropout, as torch's: on every layer's output except the last, in training mode only.
    """

    def __init__(
        self,
        kind: Literal["rnn", "lstm", "gru"],
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        cell: Literal["fused", "manual"] = "fused",
        forget_bias: float | None = 1.0,
    ) -> None:
        """Build the layers.

        Args:
            kind: "rnn" (Elman, tanh), "lstm" or "gru".
            input_size: D, features of one input step.
            hidden_size: H, width of each direction's hidden state.
            num_layers: Stacked recurrent layers; layer l+1 reads layer l's outputs.
            bidirectional: Add a backward direction per layer; outputs are H * 2 wide (forward half first).
            dropout: Dropout on every layer's output but the last, in [0, 1).
            cell: "fused" runs torch's ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU``; "manual" a Python loop over time of
                the hand-written gates (same parameters and results, slower; for teaching and inspection).
            forget_bias: LSTM forget-gate bias at initialisation; None keeps torch's uniform init.
        """
        check_args("Recurrent", [
            ("kind", kind, kind in GATES, f"one of {sorted(GATES)}"),
            ("input_size", input_size, input_size >= 1, ">= 1"),
            ("hidden_size", hidden_size, hidden_size >= 1, ">= 1"),
            ("num_layers", num_layers, num_layers >= 1, ">= 1"),
            ("dropout", dropout, 0 <= dropout < 1, "in [0, 1)"),
            ("cell", cell, cell in ("fused", "manual"), "'fused' or 'manual'"),
        ])  # fmt: skip
        super().__init__()
        self.kind, self.cell, self.forget_bias = kind, cell, forget_bias
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.directions = 2 if bidirectional else 1
        self.output_size = hidden_size * self.directions
        self.dropout = dropout
        fused = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[kind]
        extra = {"nonlinearity": "tanh"} if kind == "rnn" else {}
        # torch warns about dropout with one layer, where it has nothing to act on.
        self.rnn = fused(
            input_size,
            hidden_size,
            num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
            bidirectional=bidirectional,
            **extra,
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.rnn.reset_parameters()
        if self.kind == "lstm" and self.forget_bias is not None:
            for suffix in self.suffixes():
                rnn = self.rnn
                set_forget_bias(getattr(rnn, f"bias_ih{suffix}"), getattr(rnn, f"bias_hh{suffix}"), self.forget_bias)

    def suffixes(self) -> list[str]:
        """Parameter-name suffixes in torch's state order: _l0, _l0_reverse, _l1, ..."""
        return [f"_l{layer}{'_reverse' * d}" for layer in range(self.num_layers) for d in range(self.directions)]

    def layer_cell(self, layer: int = 0, direction: int = 0) -> RNNCell | LSTMCell | GRUCell:
        """A hand-written cell holding a copy of one layer's (and direction's) weights, to look inside a trained
        model: its ``gates(x, state)`` returns every gate of one step (direction 1 is the backward one)."""
        if not (0 <= layer < self.num_layers and 0 <= direction < self.directions):
            raise ValueError(
                f"Recurrent has {self.num_layers} layer(s) and {self.directions} direction(s); "
                f"got layer {layer}, direction {direction}"
            )
        input_size = self.input_size if layer == 0 else self.output_size
        cell = {"rnn": RNNCell, "lstm": LSTMCell, "gru": GRUCell}[self.kind](input_size, self.hidden_size)
        suffix = self.suffixes()[layer * self.directions + direction]
        cell.load_state_dict({name: getattr(self.rnn, f"{name}{suffix}") for name in cell.state_dict()})  # copies
        return cell

    def check_state(self, state: RecurrentState, batch: int) -> RecurrentState:
        shape = (self.num_layers * self.directions, batch, self.hidden_size)
        lstm = self.kind == "lstm"
        parts = state if lstm and isinstance(state, (tuple, list)) and len(state) == 2 else (state,)
        if (lstm and len(parts) != 2) or not all(isinstance(p, Tensor) and p.shape == shape for p in parts):
            got = [tuple(p.shape) if isinstance(p, Tensor) else type(p).__name__ for p in parts]
            want = f"(h, c), each {shape}" if lstm else f"h {shape}"
            raise ValueError(f"Recurrent ({self.kind}) state must be {want} (layers * directions, N, H); got {got}")
        return tuple(parts) if lstm else state

    def forward(
        self, x: Tensor, lengths: Tensor | None = None, state: RecurrentState | None = None
    ) -> tuple[Tensor, RecurrentState]:
        """Run every layer and direction.

        Args:
            x: N x T x D float inputs, right-padded.
            lengths: N valid steps per sequence (each in 1..T); None means all T.
            state: Initial state in torch's layout (h (layers * directions) x N x H, LSTM (h, c)); None is zeros.

        Returns:
            outputs N x T x (H * directions), zero at padded steps; final state in the layout of ``state``.
        """
        if x.dim() != 3 or x.shape[2] != self.input_size:
            raise ValueError(f"Recurrent expects x N x T x {self.input_size}, got {tuple(x.shape)}")
        lengths = check_lengths("Recurrent", lengths, x.shape[0], x.shape[1])
        if state is not None:
            state = self.check_state(state, x.shape[0])
        if self.cell == "fused":
            return self.fused(x, lengths, state)
        return self.manual(x, lengths, state)

    def fused(self, x: Tensor, lengths: Tensor | None, state: RecurrentState | None) -> tuple[Tensor, RecurrentState]:
        if lengths is None:
            return self.rnn(x, state)
        # Packing needs the lengths on the CPU (one device sync); the module permutes the state to the sorted order
        # and back itself.
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        outputs, state = self.rnn(packed, state)
        outputs, _ = pad_packed_sequence(outputs, batch_first=True, total_length=x.shape[1])  # zeros when padded
        return outputs, state

    def manual(self, x: Tensor, lengths: Tensor | None, state: RecurrentState | None) -> tuple[Tensor, RecurrentState]:
        batch, steps, _ = x.shape
        lstm = self.kind == "lstm"
        step = STEPS[self.kind]
        valid = None if lengths is None else valid_steps(lengths.to(x.device), steps)  # N x T
        if state is None:
            zeros = x.new_zeros(self.num_layers * self.directions, batch, self.hidden_size)
            state = (zeros, zeros) if lstm else zeros
        h0, c0 = state if lstm else (state, state)  # each (L * dirs) x N x H
        final_h, final_c = [], []
        layer_input = x  # N x T x D, then N x T x (H * dirs)
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(self.directions):
                index = layer * self.directions + direction
                suffix = f"_l{layer}{'_reverse' * direction}"
                weight_ih, weight_hh, bias_ih, bias_hh = (
                    getattr(self.rnn, f"{name}{suffix}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
                )
                # N x T x G*H: the input's share of every gate for all steps in one product; only the recurrent
                # product must wait for the previous step.
                projected = F.linear(layer_input, weight_ih, bias_ih)
                carried = (h0[index], c0[index]) if lstm else h0[index]
                hidden: list = [None] * steps  # N x H per step, filled in time order of this direction
                # The backward direction runs t = T-1 .. 0; with its state held at padded steps it effectively starts
                # each sequence at its own last valid step.
                for t in range(steps - 1, -1, -1) if direction else range(steps):
                    gates = step(projected[:, t], carried, weight_hh, bias_hh)
                    new = (gates["hidden"], gates["cell"]) if lstm else gates["hidden"]
                    if valid is not None:
                        keep = valid[:, t, None]  # N x 1: padded sequences keep their state
                        new = (
                            tuple(torch.where(keep, a, b) for a, b in zip(new, carried, strict=True))
                            if lstm
                            else torch.where(keep, new, carried)
                        )
                    carried = new
                    hidden[t] = gates["hidden"]
                out = torch.stack(hidden, 1)  # N x T x H
                outputs.append(out if valid is None else out * valid[..., None])
                final_h.append(carried[0] if lstm else carried)
                final_c.append(carried[1] if lstm else carried)
            layer_input = torch.cat(outputs, 2)  # N x T x (H * dirs), forward half first as torch
            if layer < self.num_layers - 1 and self.dropout > 0:
                layer_input = F.dropout(layer_input, self.dropout, self.training)
        h_n = torch.stack(final_h)  # (L * dirs) x N x H
        return layer_input, ((h_n, torch.stack(final_c)) if lstm else h_n)
