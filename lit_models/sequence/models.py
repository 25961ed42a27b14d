"""``lit_models.Markov``, ``RNN``, ``LSTM`` and ``GRU``: one module per sequence architecture on one loop.

Each holds only its architecture's arguments; :class:`~lit_models.sequence.base.SequenceModule` holds the tasks,
truncated BPTT, gradient clipping and generation; :class:`~lit_models.nets.sequence.SequenceNet` the layers.
"""

from __future__ import annotations

from typing import Literal

from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable

from lit_models.nets.sequence import SequenceNet
from lit_models.sequence.base import SequenceModule, Task


class Markov(SequenceModule):
    """A fixed window of the last ``window`` steps, flattened into an MLP (d2l.ai §9.1, "Markov models"): no
    state beyond the window, so a dependency further back than ``window`` steps is out of its reach. With the
    window as long as the sequence it is the plain MLP of the MNIST-1D paper's table."""

    def __init__(
        self,
        num_classes: int,
        task: Task | None = None,
        input_size: int | None = None,
        window: int = 8,
        hidden_size: int = 128,
        num_layers: int = 2,
        dropout: float = 0.0,
        embedding_dim: int = 64,
        gradient_clip_norm: float | None = None,
        temperature: float = 1.0,
        generate_length: int = 200,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        """Build the Markov-window model.

        Args:
            num_classes: Output size: classes, vocabulary or regression targets (set from the data by the CLI).
            task: "classification", "language_model" or "regression"; None: the DataModule's.
            input_size: Features per step; None: the DataModule's (token ids for text).
            window: Steps the model sees: the current one and the window - 1 before it.
            hidden_size: Width of the MLP's hidden layers.
            num_layers: Hidden layers of the MLP.
            dropout: Dropout after each hidden layer.
            embedding_dim: Token embedding size (language models).
            gradient_clip_norm: Clip the gradients' total norm (None: no clipping; an MLP does not explode).
            temperature: predict: sampling temperature of generated text (0: the likeliest token).
            generate_length: predict: tokens generated after each prompt.
            optimizer: Optimizer factory; default SGD(lr=0.01, momentum=0.9).
            lr_scheduler: LR scheduler factory; default none.
        """
        # Set before the base's __init__, which builds the net right away when the task is known.
        self.architecture_args = dict(
            window=window, hidden_size=hidden_size, num_layers=num_layers, dropout=dropout, embedding_dim=embedding_dim
        )
        super().__init__(
            num_classes, task, input_size, gradient_clip_norm, temperature, generate_length, optimizer, lr_scheduler
        )

    def build_net(self, task: str, input_size: int | None) -> SequenceNet:
        return build_sequence_net("markov", self.num_classes, task, input_size, self.architecture_args)


class RecurrentModule(SequenceModule):
    """What RNN, LSTM and GRU share: a recurrent encoder (torch's fused ``nn.RNN``/``nn.LSTM``/``nn.GRU``, or the
    hand-written cells with every gate exposed), gradient-norm clipping on by default."""

    kind: Literal["rnn", "lstm", "gru"]

    def __init__(
        self,
        num_classes: int,
        task: Task | None = None,
        input_size: int | None = None,
        hidden_size: int = 128,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        cell: Literal["fused", "manual"] = "fused",
        embedding_dim: int = 64,
        forget_bias: float = 1.0,
        gradient_clip_norm: float | None = 1.0,
        temperature: float = 1.0,
        generate_length: int = 200,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        """Build the recurrent model.

        Args:
            num_classes: Output size: classes, vocabulary or regression targets (set from the data by the CLI).
            task: "classification", "language_model" or "regression"; None: the DataModule's.
            input_size: Features per step; None: the DataModule's (token ids for text).
            hidden_size: Hidden state size per layer and direction.
            num_layers: Stacked recurrent layers.
            bidirectional: A second pass from the end (not for language models: it would read the next token).
            dropout: Dropout between stacked layers and before the output layer.
            cell: "fused" (torch's cuDNN-style kernels) or "manual" (the lecture's cells, gate by gate; the same
                parameters, so either loads the other's weights).
            embedding_dim: Token embedding size (language models).
            forget_bias: LSTM only: initial bias of the forget gate (Gers et al. 2000; Jozefowicz et al. 2015).
            gradient_clip_norm: Clip the gradients' total norm to this (1.0; Pascanu et al. 2013); None: off.
            temperature: predict: sampling temperature of generated text (0: the likeliest token).
            generate_length: predict: tokens generated after each prompt.
            optimizer: Optimizer factory; default SGD(lr=0.01, momentum=0.9).
            lr_scheduler: LR scheduler factory; default none.
        """
        # Set before the base's __init__, which builds the net right away when the task is known.
        self.architecture_args = dict(
            hidden_size=hidden_size,
            num_layers=num_layers,
            bidirectional=bidirectional,
            dropout=dropout,
            cell=cell,
            embedding_dim=embedding_dim,
            forget_bias=forget_bias,
        )
        super().__init__(
            num_classes, task, input_size, gradient_clip_norm, temperature, generate_length, optimizer, lr_scheduler
        )

    def build_net(self, task: str, input_size: int | None) -> SequenceNet:
        return build_sequence_net(self.kind, self.num_classes, task, input_size, self.architecture_args)


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


def build_sequence_net(architecture: str, num_classes: int, task: str, input_size: int | None, args: dict):
    """The SequenceNet of an architecture for a task: one output per step for a language model, token ids through
    an embedding when there is no ``input_size``."""
    tokens = input_size is None
    return SequenceNet(
        architecture,
        num_outputs=num_classes,
        input_size=input_size,
        num_tokens=num_classes if tokens else None,  # a language model reads and predicts the same vocabulary
        per_step=task == "language_model",
        **args,
    )
