"""The one net every sequence task builds: optional token embedding, an encoder (Markov window, RNN, LSTM or GRU),
optional dropout, and a linear head on every step (language modelling) or on one vector per sequence
(classification, regression)."""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor, nn

from lit_models.nets.checks import check_args
from lit_models.nets.markov import MarkovWindow
from lit_models.nets.recurrent import Recurrent

ARCHITECTURES = ("markov", "rnn", "lstm", "gru")


class SequenceOutput(NamedTuple):
    """outputs: N x T x num_outputs (``per_step``) or N x num_outputs; state: the encoder's final state (Recurrent:
    torch's layout; Markov: N x (window-1) x D inputs), to carry into the next chunk after :func:`detach_state`."""

    outputs: Tensor
    state: Any


def detach_state(state: Any) -> Any:
    """The state (a tensor, a tuple of them, or None) cut from its graph, for truncated back-propagation through
    time: the next chunk starts from its values but gradients stop at the chunk boundary."""
    if state is None:
        return None
    if isinstance(state, Tensor):
        return state.detach()
    return tuple(detach_state(part) for part in state)


class SequenceNet(nn.Module):
    """Embedding or float features -> encoder -> dropout -> linear head.

    ``per_step=True`` (language modelling): logits at every step, N x T x num_outputs; at padded steps the encoder
    output is zero, so the logits there equal the head's bias (mask them in the loss). Causal encoders only.
    ``per_step=False``: one vector per sequence, the encoder output at its last valid step; bidirectional encoders
    give the forward half at the last valid step and the backward half at step 0 (each direction's final output).
    """

    detach_state = staticmethod(detach_state)

    def __init__(
        self,
        architecture: Literal["markov", "rnn", "lstm", "gru"],
        num_outputs: int,
        input_size: int | None = None,
        num_tokens: int | None = None,
        embedding_dim: int = 64,
        hidden_size: int = 128,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        cell: Literal["fused", "manual"] = "fused",
        window: int = 8,
        forget_bias: float | None = 1.0,
        per_step: bool = False,
    ) -> None:
        """Build the net.

        Args:
            architecture: Encoder: "markov" (MLP over a fixed window), "rnn" (Elman, tanh), "lstm" or "gru".
            num_outputs: Head size: classes, the vocabulary (language model) or regression targets.
            input_size: Features per step of float inputs N x T x input_size. Exactly one of this and num_tokens.
            num_tokens: Vocabulary of token-id inputs N x T, embedded first. Exactly one of this and input_size.
            embedding_dim: Width of the token embedding.
            hidden_size: Width of the encoder's hidden state (per direction) or of the Markov MLP.
            num_layers: Recurrent layers, or Markov MLP layers.
            bidirectional: Add a backward direction (recurrent encoders, per_step=False only).
            dropout: Between encoder layers and on the encoder output before the head, in [0, 1).
            cell: Recurrent encoders: "fused" (torch's modules) or "manual" (the hand-written gate cells).
            window: Markov: input steps each output sees, the current one included.
            forget_bias: LSTM forget-gate bias at initialisation (Gers et al. 2000); None keeps torch's init.
            per_step: Head on every step (language modelling) instead of one output per sequence.
        """
        check_args("SequenceNet", [
            ("architecture", architecture, architecture in ARCHITECTURES, f"one of {list(ARCHITECTURES)}"),
            ("num_outputs", num_outputs, num_outputs >= 1, ">= 1"),
            ("input_size / num_tokens", (input_size, num_tokens), (input_size is None) != (num_tokens is None),
             "exactly one set (float features or token ids)"),
            ("input_size", input_size, input_size is None or input_size >= 1, ">= 1"),
            ("num_tokens", num_tokens, num_tokens is None or num_tokens >= 1, ">= 1"),
            ("embedding_dim", embedding_dim, embedding_dim >= 1, ">= 1"),
            ("dropout", dropout, 0 <= dropout < 1, "in [0, 1)"),
            ("bidirectional", bidirectional, not (bidirectional and architecture == "markov"),
             "False for the Markov window (it has no direction)"),
            ("bidirectional", bidirectional, not (bidirectional and per_step),
             "False with per_step (a language model's backward direction would see the next token)"),
        ])  # fmt: skip
        super().__init__()
        self.architecture, self.per_step = architecture, per_step
        self.input_size, self.num_tokens = input_size, num_tokens
        self.embedding = None if num_tokens is None else nn.Embedding(num_tokens, embedding_dim)
        features = embedding_dim if num_tokens is not None else input_size
        if architecture == "markov":
            self.encoder: MarkovWindow | Recurrent = MarkovWindow(features, window, hidden_size, num_layers, dropout)
        else:
            self.encoder = Recurrent(
                architecture, features, hidden_size, num_layers, bidirectional, dropout, cell, forget_bias
            )
        self.directions = 2 if bidirectional else 1
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(self.encoder.output_size, num_outputs)

    def embed(self, inputs: Tensor) -> Tensor:
        """Token ids N x T or features N x T x D -> N x T x D float."""
        if self.embedding is not None:
            if inputs.dim() != 2 or inputs.is_floating_point():
                raise ValueError(
                    f"SequenceNet expects token ids N x T (integers), got {inputs.dtype} {tuple(inputs.shape)}"
                )
            return self.embedding(inputs)
        if inputs.dim() != 3 or inputs.shape[2] != self.input_size or not inputs.is_floating_point():
            raise ValueError(
                f"SequenceNet expects float features N x T x {self.input_size}, got {inputs.dtype} "
                f"{tuple(inputs.shape)}"
            )
        return inputs

    def summary(self, encoded: Tensor, lengths: Tensor | None) -> Tensor:
        """N x T x (H * dirs) -> N x (H * dirs): each direction's output after reading the whole sequence."""
        batch, steps, width = encoded.shape
        if lengths is None:
            last = torch.full((batch,), steps - 1, device=encoded.device)
        else:
            last = torch.as_tensor(lengths, device=encoded.device).long() - 1  # validated by the encoder
        forward = encoded[torch.arange(batch, device=encoded.device), last]  # N x (H * dirs)
        if self.directions == 1:
            return forward
        half = width // 2
        return torch.cat([forward[:, :half], encoded[:, 0, half:]], 1)  # backward half ends at step 0

    def forward(self, inputs: Tensor, lengths: Tensor | None = None, state: Any = None) -> SequenceOutput:
        """Encode and apply the head.

        Args:
            inputs: Token ids N x T (``num_tokens``) or float features N x T x input_size, right-padded.
            lengths: N valid steps per sequence (each in 1..T); None means all T.
            state: The previous chunk's ``SequenceOutput.state`` (detached) or None.
        """
        encoded, state = self.encoder(self.embed(inputs), lengths, state)  # N x T x (H * dirs)
        features = encoded if self.per_step else self.summary(encoded, lengths)
        return SequenceOutput(self.head(self.dropout(features)), state)
