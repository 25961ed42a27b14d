"""The sequence loop shared by the Markov window, RNN, LSTM and GRU modules: one task each run, chosen by the data.

Three tasks (``task``), each with its loss, metrics and headline validation metric:

* ``classification``: one label per sequence; cross-entropy; micro top-1 (and top-5) accuracy ``val/acc_top1``.
* ``language_model``: the next token at every step; cross-entropy; perplexity and bits per token (bits per
  character at character level) ``val/bits_per_token``. Truncated back-propagation through time: the text comes
  as contiguous chunks of parallel streams (the DataModule), and the state at the end of one batch starts the next,
  detached so gradients stop at the chunk boundary. Each stage carries its own state, reset at each epoch's start;
  checkpoints hold the training state, so a run resumed mid-epoch continues from it.
* ``regression``: real targets per sequence; mean squared error ``val/mse``.

The net (:class:`lit_models.nets.sequence.SequenceNet`) depends on the task (one output per step for a language
model) and on the input (features per step, or token ids through an embedding). Both come from the DataModule when
the module's ``task`` is None: the net is then built in ``setup``, before a checkpoint's weights are loaded, and
the resolved values are saved with the hyperparameters, so ``load_from_checkpoint`` rebuilds the same net.
"""

from __future__ import annotations

import inspect
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from pytorch_lightning.utilities import move_data_to_device
from torch import Tensor, nn

from lit_models.datamodules.spec import DataSpec
from lit_models.metrics import sequence_metrics
from lit_models.nets.sequence import SequenceNet, SequenceOutput, detach_state
from lit_models.pictures import Sample
from lit_models.predictions import ClassPrediction, Prediction, TextPrediction, ValuesPrediction
from lit_models.task import TaskModule
from lit_models.writers import SequenceWriter

Task = Literal["classification", "language_model", "regression"]
TASKS = ("classification", "language_model", "regression")
STAGES = ("train", "val", "test")
NET_PARAMETERS = set(inspect.signature(SequenceNet).parameters)
IGNORE = -100  # target of padded steps: cross-entropy and the metrics skip it
MONITORS = {  # the headline validation metric of each task, and whether lower is better
    "classification": ("val/acc_top1", "max"),
    "language_model": ("val/bits_per_token", "min"),
    "regression": ("val/mse", "min"),
}


def padded_targets(target: Tensor, lengths: Tensor | None) -> Tensor:
    """N x T next-token targets with the steps past each sequence's length set to IGNORE."""
    if lengths is None:
        return target
    steps = torch.arange(target.shape[1], device=target.device)
    return target.masked_fill(steps[None] >= lengths.to(target.device)[:, None], IGNORE)


class SequenceModule(TaskModule):
    """The loop of every sequence architecture; a subclass builds its :class:`SequenceNet` in :meth:`build_net`.

    Args:
        num_classes: Output size: classes, vocabulary size (language model) or regression targets (set from the
            data by the CLI).
        task: "classification", "language_model" or "regression"; None: the DataModule's.
        input_size: Features per step of float inputs; None: the DataModule's (token ids for a language model).
        gradient_clip_norm: Clip the gradients' total norm to this when the Trainer sets no clipping of its own
            (``gradient_clip_val``); None: no clipping.
        temperature: predict: sampling temperature of generated text (0: always the likeliest token).
        generate_length: predict: tokens generated after each prompt.
    """

    prediction_writer = SequenceWriter
    kind: Literal["markov", "rnn", "lstm", "gru"]  # SequenceNet's architecture, set by each module

    def __init__(
        self,
        num_classes: int,
        task: Task | None = None,
        input_size: int | None = None,
        gradient_clip_norm: float | None = None,
        temperature: float = 1.0,
        generate_length: int = 200,
        bias_lr_mult: float = 1.0,
        bias_weight_decay: bool = True,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        norm_weight_decay: float | None = None,
    ) -> None:
        """Set up the loop; the net is built now when ``task`` is given, else from the data in ``setup``."""
        if gradient_clip_norm is not None and gradient_clip_norm <= 0:
            raise ValueError(f"gradient_clip_norm must be > 0 or null, got {gradient_clip_norm}")
        if temperature < 0 or generate_length < 1:
            raise ValueError(f"temperature must be >= 0 and generate_length >= 1, got {temperature}, {generate_length}")
        super().__init__(num_classes, bias_lr_mult, bias_weight_decay, optimizer, lr_scheduler, norm_weight_decay)
        self.gradient_clip_norm = gradient_clip_norm
        self.temperature, self.generate_length = temperature, generate_length
        self.task: str | None = None
        self.input_size: int | None = None
        self.carried: dict[str, Any] = {}  # stage -> the state the next language-model batch starts from
        if task is not None:
            self.build(task, input_size)

    def build_net(self, task: str, input_size: int | None) -> SequenceNet:
        """The architecture's net for this task and input (token ids when ``input_size`` is None)."""
        return build_sequence_net(self.kind, self.num_classes, task, input_size, self.hparams)

    def build(self, task: str, input_size: int | None) -> None:
        name = type(self).__name__
        if task not in TASKS:
            raise ValueError(f"{name} task must be one of {TASKS}, got {task!r}")
        if input_size is None and task != "language_model":
            raise ValueError(
                f"{name} needs input_size (features per step) for {task}; token inputs are for language models."
            )
        if task == "classification" and self.num_classes < 2:
            raise ValueError(f"{name} classification needs num_classes >= 2, got {self.num_classes}")
        self.task, self.input_size = task, input_size
        # A checkpoint rebuilds this same net from hparams; loggers record hparams_initial, which must agree
        # with the DataModule's own ``task`` hyperparameter where it has one.
        for hparams in (self.hparams, getattr(self, "_hparams_initial", None)):
            if hparams is not None:
                hparams.update(task=task, input_size=input_size)
        self.net = self.build_net(task, input_size)
        # One collection per stage ("train_metrics" ...: ModuleDict keys may not shadow Module.train).
        self.metrics = nn.ModuleDict(
            {f"{s}_metrics": sequence_metrics(task, self.num_classes, s, IGNORE) for s in STAGES}
        )
        self.monitor, self.monitor_mode = MONITORS[task]

    def use_data(self, spec: DataSpec) -> None:
        """As every family does, after building the net for the data's task and input where none was given."""
        if self.net is None:
            if spec.inputs == "images":
                raise ValueError(
                    f"{type(self).__name__} reads sequences, but the data serves images: use a sequence DataModule "
                    "(ArrayDataModule, MNIST1DDataModule, AddingProblemDataModule, TextDataModule)."
                )
            self.build(spec.task, spec.input_size)
        super().use_data(spec)

    def check_data(self, spec: DataSpec) -> None:
        # Another task first: it is why the output sizes differ too.
        if (spec.task, spec.input_size) != (self.task, self.input_size):
            raise ValueError(
                f"{type(self).__name__} was built for task {self.task!r} with input_size {self.input_size}, but "
                f"the data serves task {spec.task!r} with input_size {spec.input_size}: make them agree "
                "(or leave the model's task and input_size out of the config to take the data's)."
            )
        super().check_data(spec)

    def set_generation(self, temperature: float | None = None, generate_length: int | None = None) -> None:
        """Change how a language model samples text for this run (None keeps the setting)."""
        if self.task != "language_model":
            super().set_generation(temperature=temperature, generate_length=generate_length)
        if temperature is not None:
            self.temperature = temperature
        if generate_length is not None:
            self.generate_length = generate_length

    def export_graph(self) -> tuple[nn.Module, Tensor, str]:
        """The net over whole sequences (no carried state)."""
        net, example, _ = super().export_graph()
        if self.task == "language_model":
            return net, example, "token ids N x T -> next-token scores N x T x V"
        return net, example, f"features N x T x {self.input_size} -> outputs N x K"

    def forward(self, inputs: Tensor, lengths: Tensor | None = None, state: Any = None) -> SequenceOutput:
        return self.net(inputs, lengths, state)

    # ------------------------------------------------------------------------------------------ training

    def step(self, batch: dict[str, Any], stage: str) -> Tensor:
        inputs, lengths, target = batch["inputs"], batch.get("lengths"), batch["target"]
        count = len(inputs)
        metrics = self.metrics[f"{stage}_metrics"]
        if self.task == "language_model":
            output = self.net(inputs, lengths, self.carried.get(stage))
            self.carried[stage] = detach_state(output.state)  # truncated BPTT: gradients stop at the chunk's start
            target = padded_targets(target, lengths)
            logits = output.outputs  # N x T x V
            loss = F.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=IGNORE)
            metrics.update(logits.detach(), target)
        else:
            predicted = self.net(inputs, lengths).outputs  # N x num_classes
            if self.task == "classification":
                loss = F.cross_entropy(predicted, target)
            else:
                loss = F.mse_loss(predicted, target.to(predicted.dtype))
            metrics.update(predicted.detach(), target)
        on_step = stage == "train"
        self.log(f"{stage}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=True, sync_dist=True, batch_size=count)
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=stage != "train", batch_size=count)
        return loss

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        return self.step(batch, "train")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.step(batch, "test")

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if batch_idx == 0:  # the streams start again from their beginnings (a resumed epoch starts further on)
            self.carried.pop("train", None)
        elif "train" in self.carried:  # a state restored from a checkpoint is on the CPU: to the batches' device
            self.carried["train"] = move_data_to_device(self.carried["train"], self.device)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        # A run resumed mid-epoch continues the streams from this state, as the unstopped run would have.
        checkpoint["carried_state"] = self.carried.get("train")

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        if checkpoint.get("carried_state") is not None:
            self.carried["train"] = checkpoint["carried_state"]

    def on_validation_epoch_start(self) -> None:
        self.carried.pop("val", None)

    def on_test_epoch_start(self) -> None:
        self.carried.pop("test", None)

    def configure_gradient_clipping(
        self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None, gradient_clip_algorithm=None
    ) -> None:
        if gradient_clip_val is None and self.gradient_clip_norm is not None:
            gradient_clip_val, gradient_clip_algorithm = self.gradient_clip_norm, "norm"
        self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)

    # ------------------------------------------------------------------------------------------ pictures

    @torch.no_grad()
    def show(self, batch: dict[str, Any], count: int, prompt_length: int = 40, length: int = 80) -> list[Sample]:
        """Classification and regression: each sequence's input steps as curves, captioned with the prediction and
        the truth (classes green when right, red when wrong). Language model: the start of each of the first
        ``count`` evaluation streams continued by the model, sampled at ``temperature`` from a seed fixed by the
        prompt, so epochs differ only by the model (training's random numbers are left as they were).

        Args:
            batch: An evaluation batch.
            count: Sequences wanted.
            prompt_length: Language model: tokens of each stream used as the prompt.
            length: Language model: tokens generated after each prompt (at most ``generate_length``).
        """
        inputs, lengths = batch["inputs"][:count], batch.get("lengths")
        lengths = lengths[:count].tolist() if lengths is not None else [inputs.shape[1]] * len(inputs)
        names = self.display_names
        if self.task == "language_model":
            decode = self.decode
            devices = [self.device] if self.device.type == "cuda" else []
            shown = []
            with torch.random.fork_rng(devices=devices):
                for row, steps in zip(inputs, lengths, strict=True):
                    prompt = row[: min(steps, prompt_length)][None]  # 1 x P
                    torch.manual_seed(int(prompt.sum()))  # the same draws for this prompt every epoch
                    generated = self.generate(prompt, min(length, self.generate_length))
                    shown.append(Sample(text=decode(generated.tolist()), caption=decode(prompt[0].tolist())))
            return shown
        outputs = self.net(inputs, batch["lengths"][:count] if "lengths" in batch else None).outputs
        target = batch["target"][:count]
        shown = []
        for index, steps in enumerate(lengths):
            series = inputs[index, :steps].float().cpu()  # T x input_size
            if self.task == "classification":
                prob, guess = torch.softmax(outputs[index], dim=0).max(dim=0)
                guess, truth = int(guess), int(target[index])
                caption = f"{names[guess]} {float(prob):.2f}\ntrue: {names[truth]}"
                shown.append(Sample(series=series, caption=caption, colour="green" if guess == truth else "red"))
                continue
            values = zip(outputs[index].tolist(), target[index].tolist(), strict=True)
            lines = [f"{names[k]}: {guess:.3g} (true {truth:.3g})" for k, (guess, truth) in enumerate(values)]
            shown.append(Sample(series=series, caption="\n".join(lines[:3])))
        return shown

    # ------------------------------------------------------------------------------------------ prediction

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[Prediction]:
        if self.task == "language_model":
            prompt = batch["prompt"]  # 1 x P token ids
            generated = self.decode(self.generate(prompt, self.generate_length).tolist())
            return [TextPrediction(name=str(batch_idx), prompt=batch["text"], generated=generated)]
        outputs = self.net(batch["inputs"], batch.get("lengths")).outputs
        count = len(outputs)
        indices = batch["index"].tolist() if "index" in batch else range(batch_idx * count, (batch_idx + 1) * count)
        names = self.display_names
        if self.task == "regression":
            values = outputs.tolist()
            return [
                ValuesPrediction(name=str(i), index=i, values=v, targets=names)
                for i, v in zip(indices, values, strict=True)
            ]
        top_probs, top_indices = torch.softmax(outputs, dim=1).topk(min(5, self.num_classes), dim=1)
        return [
            ClassPrediction(name=str(i), index=i, classes=[names[k] for k in top], indices=top, probs=probs)
            for i, top, probs in zip(indices, top_indices.tolist(), top_probs.tolist(), strict=True)
        ]

    def decode(self, ids: list[int]) -> str:
        """The text of a language model's token ids, by the data's vocabulary."""
        if self.data_spec is not None:
            return self.data_spec.decode(ids)
        return "".join(self.display_names[i] for i in ids)

    @torch.no_grad()
    def generate(self, prompt: Tensor, length: int, temperature: float | None = None) -> Tensor:
        """1 x P prompt token ids -> the next ``length`` token ids, each sampled from the softmax of the logits
        divided by the temperature (0: the likeliest), the state carried from token to token."""
        temperature = self.temperature if temperature is None else temperature
        output = self.net(prompt)
        state, logits = output.state, output.outputs[:, -1]  # 1 x V
        tokens = []
        for _ in range(length):
            if temperature == 0:
                token = logits.argmax(-1, keepdim=True)  # 1 x 1
            else:
                token = torch.multinomial(torch.softmax(logits / temperature, -1), 1)
            tokens.append(token)
            output = self.net(token, None, state)
            state, logits = output.state, output.outputs[:, -1]
        return torch.cat(tokens, 1)[0]


def build_sequence_net(architecture: str, num_classes: int, task: str, input_size: int | None, hparams: Any):
    """The SequenceNet of an architecture for a task: one output per step for a language model, token ids through
    an embedding when there is no ``input_size``; the module's own arguments (``hparams``) that SequenceNet takes
    (hidden_size, num_layers, ...) pass through."""
    tokens = input_size is None
    given = {
        "architecture": architecture,
        "num_outputs": num_classes,
        "input_size": input_size,
        "num_tokens": num_classes if tokens else None,  # a language model reads and predicts the same vocabulary
        "per_step": task == "language_model",
    }
    shape = {name: value for name, value in hparams.items() if name in NET_PARAMETERS and name not in given}
    return SequenceNet(**given, **shape)
