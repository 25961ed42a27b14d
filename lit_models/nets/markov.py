"""The lecture's Markov model (d2l.ai 9.1): step t sees only the last ``window`` observations (a tau-th order
Markov assumption), through an MLP; no recurrence, so every step is computed at once."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lit_models.nets.checks import check_args
from lit_models.nets.recurrent import check_lengths, valid_steps


class MarkovWindow(nn.Module):
    """Per-step MLP over the concatenation of inputs t-window+1 .. t (oldest first).

    Steps before the start of the sequence are zeros, or the carried ``state``: the last window-1 valid inputs of
    the previous chunk, so a text cut into chunks gives the same outputs as the whole text (the model's "state" is
    its window). d2l feeds the window to a linear model or an MLP and predicts x_t from x_{t-tau} .. x_{t-1}; here
    step t's window ends at x_t itself, so a head on step t predicts x_{t+1}, as a language model's does.
    """

    def __init__(
        self, input_size: int, window: int, hidden_size: int, num_layers: int = 1, dropout: float = 0.0
    ) -> None:
        """Build the MLP.

        Args:
            input_size: D, features of one input step.
            window: tau, input steps each output sees (the current one included).
            hidden_size: H, width of every MLP layer and of the outputs.
            num_layers: Linear + ReLU layers of the MLP.
            dropout: Dropout between the MLP's layers (not after the last), in [0, 1).
        """
        check_args("MarkovWindow", [
            ("input_size", input_size, input_size >= 1, ">= 1"),
            ("window", window, window >= 1, ">= 1"),
            ("hidden_size", hidden_size, hidden_size >= 1, ">= 1"),
            ("num_layers", num_layers, num_layers >= 1, ">= 1"),
            ("dropout", dropout, 0 <= dropout < 1, "in [0, 1)"),
        ])  # fmt: skip
        super().__init__()
        self.input_size, self.window, self.hidden_size = input_size, window, hidden_size
        self.output_size = hidden_size
        layers: list[nn.Module] = []
        width = window * input_size
        for index in range(num_layers):
            layers += [nn.Linear(width, hidden_size), nn.ReLU(inplace=True)]
            if index < num_layers - 1:  # always present (p may be 0) so the state-dict names do not depend on it
                layers.append(nn.Dropout(dropout))
            width = hidden_size
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: Tensor, lengths: Tensor | None = None, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Run the MLP on every step's window.

        Args:
            x: N x T x D float inputs, right-padded.
            lengths: N valid steps per sequence (each in 1..T); None means all T.
            state: N x (window-1) x D inputs preceding x (oldest first); None is zeros.

        Returns:
            outputs N x T x H, zero at padded steps; state N x (window-1) x D, the last window-1 valid inputs of
            each sequence (reaching back into the given state when a sequence is shorter than that).
        """
        if x.dim() != 3 or x.shape[2] != self.input_size:
            raise ValueError(f"MarkovWindow expects x N x T x {self.input_size}, got {tuple(x.shape)}")
        batch, steps, features = x.shape
        lengths = check_lengths("MarkovWindow", lengths, batch, steps)
        history = (batch, self.window - 1, features)
        if state is None:
            state = x.new_zeros(history)
        elif not isinstance(state, Tensor) or state.shape != history:
            got = tuple(state.shape) if isinstance(state, Tensor) else type(state).__name__
            raise ValueError(f"MarkovWindow state must be N x (window-1) x D = {history}, got {got}")
        padded = torch.cat([state, x], 1)  # N x (window-1+T) x D; padded[:, j] is x[:, j - window + 1]
        windows = padded.unfold(1, self.window, 1)  # N x T x D x window, a view
        windows = windows.transpose(2, 3).reshape(batch, steps, self.window * features)  # oldest step first
        outputs = self.mlp(windows)  # N x T x H
        last = torch.full((batch,), steps, device=x.device) if lengths is None else lengths.to(x.device)
        if lengths is not None:
            outputs = outputs * valid_steps(last, steps)[..., None]
        # Sequence n's last window-1 valid inputs sit at padded[:, lengths[n] .. lengths[n] + window - 2].
        index = last[:, None] + torch.arange(self.window - 1, device=x.device)  # N x (window-1)
        new_state = padded.gather(1, index[..., None].expand(-1, -1, features))
        return outputs, new_state
