"""Hand-written recurrent cells that expose every gate as the lecture draws it (d2l.ai ch. 9-10).

Elman, "Finding Structure in Time", Cognitive Science 1990 (RNN, tanh); Hochreiter & Schmidhuber, "Long Short-Term
Memory", Neural Computation 1997, with the forget gate of Gers, Schmidhuber & Cummins, "Learning to Forget",
Neural Computation 2000 (LSTM); Cho et al., "Learning Phrase Representations using RNN Encoder-Decoder", EMNLP 2014
(GRU).

Parameters are named, shaped and ordered as torch's ``nn.RNNCell`` / ``nn.LSTMCell`` / ``nn.GRUCell``
(``weight_ih`` G*H x D, ``weight_hh`` G*H x H, ``bias_ih`` and ``bias_hh`` G*H, gates stacked in torch's order),
so a state dict moves between them. The gate arithmetic lives in the functions :func:`rnn_gates`,
:func:`lstm_gates` and :func:`gru_gates`, which take the input already projected (``x W_ih^T + b_ih``): the cells
call them one step at a time, and :class:`lit_models.nets.recurrent.Recurrent` (``cell="manual"``) projects a
whole sequence with one matrix product and then calls them step by step with the parameters of torch's module.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_models.nets.checks import check_args

GATES = {"rnn": 1, "lstm": 4, "gru": 3}  # G: stacked gate blocks in weight_ih / weight_hh


def rnn_gates(input_proj: Tensor, h: Tensor, weight_hh: Tensor, bias_hh: Tensor) -> dict[str, Tensor]:
    """Elman step: h' = tanh(W_ih x + b_ih + W_hh h + b_hh).

    Args:
        input_proj: N x H, the input already through ``W_ih x + b_ih``.
        h: N x H previous hidden state.
        weight_hh: H x H.
        bias_hh: H.
    """
    return {"hidden": torch.tanh(input_proj + F.linear(h, weight_hh, bias_hh))}


def lstm_gates(
    input_proj: Tensor, state: tuple[Tensor, Tensor], weight_hh: Tensor, bias_hh: Tensor
) -> dict[str, Tensor]:
    """LSTM step with a forget gate; gates in torch's order input i, forget f, cell candidate g, output o.

    c' = f * c + i * g (the additive memory path that carries gradients over long spans), h' = o * tanh(c').

    Args:
        input_proj: N x 4H, the input already through ``W_ih x + b_ih``.
        state: (h, c), each N x H.
        weight_hh: 4H x H.
        bias_hh: 4H.
    """
    h, c = state
    i, f, g, o = (input_proj + F.linear(h, weight_hh, bias_hh)).chunk(4, dim=1)  # each N x H
    i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
    cell = f * c + i * g
    return {"input": i, "forget": f, "candidate": g, "output": o, "cell": cell, "hidden": o * torch.tanh(cell)}


def gru_gates(input_proj: Tensor, h: Tensor, weight_hh: Tensor, bias_hh: Tensor) -> dict[str, Tensor]:
    """GRU step in torch's form; gates in torch's order reset r, update z, new n.

    n = tanh(W_in x + b_in + r * (W_hn h + b_hn)) puts the reset gate after the recurrent product (Cho et al.
    2014 and d2l reset h before it: r * h inside W_hn; torch's form lets cuDNN fuse the products, and it is what
    the state dicts of torch's GRU mean). h' = (1 - z) * n + z * h.

    Args:
        input_proj: N x 3H, the input already through ``W_ih x + b_ih``.
        h: N x H previous hidden state.
        weight_hh: 3H x H.
        bias_hh: 3H.
    """
    x_r, x_z, x_n = input_proj.chunk(3, dim=1)  # each N x H
    h_r, h_z, h_n = F.linear(h, weight_hh, bias_hh).chunk(3, dim=1)
    r = torch.sigmoid(x_r + h_r)
    z = torch.sigmoid(x_z + h_z)
    n = torch.tanh(x_n + r * h_n)
    return {"reset": r, "update": z, "candidate": n, "hidden": (1 - z) * n + z * h}


def set_forget_bias(bias_ih: Tensor, bias_hh: Tensor, value: float) -> None:
    """LSTM forget-gate bias (slice H:2H) = value, split as torch sums it: all in ``bias_ih``, none in ``bias_hh``."""
    hidden = bias_ih.shape[0] // 4
    with torch.no_grad():
        bias_ih[hidden : 2 * hidden] = value
        bias_hh[hidden : 2 * hidden] = 0.0


class _Cell(nn.Module):
    """Parameters of one cell, laid out and initialised as torch's cells: U(-1/sqrt(H), 1/sqrt(H)) everywhere."""

    kind = "rnn"

    def __init__(self, input_size: int, hidden_size: int) -> None:
        """Build the cell.

        Args:
            input_size: D, features of one input step.
            hidden_size: H, width of the hidden state.
        """
        name = type(self).__name__
        check_args(name, [
            ("input_size", input_size, input_size >= 1, ">= 1"),
            ("hidden_size", hidden_size, hidden_size >= 1, ">= 1"),
        ])  # fmt: skip
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        rows = GATES[self.kind] * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(rows, input_size))
        self.weight_hh = nn.Parameter(torch.empty(rows, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(rows))
        self.bias_hh = nn.Parameter(torch.empty(rows))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -bound, bound)

    def project(self, x: Tensor) -> Tensor:
        """N x D -> N x G*H, the input's share of every gate."""
        if x.dim() != 2 or x.shape[1] != self.input_size:
            raise ValueError(f"{type(self).__name__} expects input N x {self.input_size}, got {tuple(x.shape)}")
        return F.linear(x, self.weight_ih, self.bias_ih)

    def zeros(self, x: Tensor) -> Tensor:
        return x.new_zeros(x.shape[0], self.hidden_size)


class RNNCell(_Cell):
    """Elman's cell, h' = tanh(W_ih x + b_ih + W_hh h + b_hh); torch's ``nn.RNNCell(nonlinearity="tanh")``."""

    kind = "rnn"

    def gates(self, x: Tensor, state: Tensor | None = None) -> dict[str, Tensor]:
        """x N x D, state h N x H (zeros if None) -> {"hidden": h' N x H}."""
        return rnn_gates(self.project(x), self.zeros(x) if state is None else state, self.weight_hh, self.bias_hh)

    def forward(self, x: Tensor, state: Tensor | None = None) -> Tensor:
        return self.gates(x, state)["hidden"]


class LSTMCell(_Cell):
    """LSTM cell with a forget gate (Gers et al. 2000); torch's ``nn.LSTMCell`` but for the forget-gate bias.

    Deviation from torch's initialisation: the forget gate's bias starts at ``forget_bias`` (1 by default, as
    Gers et al. 2000 and Jozefowicz et al. 2015 recommend; Keras's default), so the cell starts by remembering.
    It sits in ``bias_ih`` and the ``bias_hh`` slice is 0; ``forget_bias=None`` keeps torch's uniform init.
    """

    kind = "lstm"

    def __init__(self, input_size: int, hidden_size: int, forget_bias: float | None = 1.0) -> None:
        """Build the cell.

        Args:
            input_size: D, features of one input step.
            hidden_size: H, width of the hidden and cell states.
            forget_bias: Initial forget-gate bias; None keeps torch's default uniform initialisation.
        """
        self.forget_bias = forget_bias  # before the base __init__, whose reset_parameters() reads it
        super().__init__(input_size, hidden_size)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if self.forget_bias is not None:
            set_forget_bias(self.bias_ih, self.bias_hh, self.forget_bias)

    def gates(self, x: Tensor, state: tuple[Tensor, Tensor] | None = None) -> dict[str, Tensor]:
        """x N x D, state (h, c) each N x H (zeros if None) -> {"input", "forget", "candidate", "output", "cell",
        "hidden"}, each N x H."""
        state = (self.zeros(x), self.zeros(x)) if state is None else state
        return lstm_gates(self.project(x), state, self.weight_hh, self.bias_hh)

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        gates = self.gates(x, state)
        return gates["hidden"], gates["cell"]


class GRUCell(_Cell):
    """Gated recurrent unit (Cho et al. 2014) in torch's form (see :func:`gru_gates`); torch's ``nn.GRUCell``."""

    kind = "gru"

    def gates(self, x: Tensor, state: Tensor | None = None) -> dict[str, Tensor]:
        """x N x D, state h N x H (zeros if None) -> {"reset", "update", "candidate", "hidden"}, each N x H."""
        return gru_gates(self.project(x), self.zeros(x) if state is None else state, self.weight_hh, self.bias_hh)

    def forward(self, x: Tensor, state: Tensor | None = None) -> Tensor:
        return self.gates(x, state)["hidden"]
