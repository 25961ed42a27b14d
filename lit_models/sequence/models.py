"""``lit_models.Markov``, ``RNN``, ``LSTM`` and ``GRU``: one module per sequence architecture on one loop.

Each holds only its architecture's arguments; :class:`~lit_models.sequence.base.SequenceModule` holds the tasks,
truncated BPTT, gradient clipping and generation; :class:`~lit_models.nets.sequence.SequenceNet` the layers.
"""

from __future__ import annotations

from typing import Any, Literal

from lit_models.sequence.base import SequenceModule


class Markov(SequenceModule):
    """A fixed window of the last ``window`` steps, flattened into an MLP (d2l.ai §9.1, "Markov models"): no
    state beyond the window, so a dependency further back than ``window`` steps is out of its reach. With the
    window as long as the sequence it is the plain MLP of the MNIST-1D paper's table."""

    kind = "markov"

    def __init__(
        self,
        window: int = 8,
        hidden_size: int = 128,
        num_layers: int = 2,
        dropout: float = 0.0,
        embedding_dim: int = 64,
        gradient_clip_norm: float | None = None,
        **loop_args: Any,
    ) -> None:
        """Build the Markov-window model; ``loop_args`` are :class:`SequenceModule`'s (num_classes, task, ...).

        Args:
            window: Steps the model sees: the current one and the window - 1 before it.
            hidden_size: Width of the MLP's hidden layers.
            num_layers: Hidden layers of the MLP.
            dropout: Dropout after each hidden layer.
            embedding_dim: Token embedding size (language models).
            gradient_clip_norm: Clip the gradients' total norm (None: no clipping; an MLP does not explode).
        """
        super().__init__(gradient_clip_norm=gradient_clip_norm, **loop_args)


class RecurrentModule(SequenceModule):
    """What RNN, LSTM and GRU share: a recurrent encoder (torch's fused ``nn.RNN``/``nn.LSTM``/``nn.GRU``, or the
    hand-written cells with every gate exposed), gradient-norm clipping on by default."""

    def __init__(
        self,
        hidden_size: int = 128,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        cell: Literal["fused", "manual"] = "fused",
        embedding_dim: int = 64,
        forget_bias: float = 1.0,
        gradient_clip_norm: float | None = 1.0,
        **loop_args: Any,
    ) -> None:
        """Build the recurrent model; ``loop_args`` are :class:`SequenceModule`'s (num_classes, task, ...).

        Args:
            hidden_size: Hidden state size per layer and direction.
            num_layers: Stacked recurrent layers.
            bidirectional: A second pass from the end (not for language models: it would read the next token).
            dropout: Dropout between stacked layers and before the output layer.
            cell: "fused" (torch's cuDNN-style kernels) or "manual" (the lecture's cells, gate by gate; the same
                parameters, so either loads the other's weights).
            embedding_dim: Token embedding size (language models).
            forget_bias: LSTM only: initial bias of the forget gate (Gers et al. 2000; Jozefowicz et al. 2015).
            gradient_clip_norm: Clip the gradients' total norm to this (1.0; Pascanu et al. 2013); None: off.
        """
        super().__init__(gradient_clip_norm=gradient_clip_norm, **loop_args)


class RNN(RecurrentModule):
    """Elman's recurrent net (tanh): the latent autoregressive model whose hidden state summarises the whole past,
    and whose gradients through many steps vanish or explode (the short-term memory problem)."""

    kind = "rnn"


class LSTM(RecurrentModule):
    """Long short-term memory (Hochreiter & Schmidhuber 1997, with the forget gate of Gers et al. 2000): input,
    forget and output gates around an additive cell state that carries information and gradients across many
    steps."""

    kind = "lstm"


class GRU(RecurrentModule):
    """Gated recurrent unit (Cho et al. 2014): reset and update gates, no separate cell state."""

    kind = "gru"
