"""Load weights into a plain net: a local file (torchvision state dict or lit-models checkpoint), or torchvision's
weights by name (``IMAGENET1K_V1``, ``DEFAULT``) through its weights API into torch's cache."""

from __future__ import annotations

import os
import re
import urllib.error
from pathlib import Path

import torch
import torchvision
from torch import nn

# torchvision's DenseNet files keep the old names "norm.1", "conv.2" that its loader renames (densenet.py).
DENSENET_OLD_NAMES = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.([12]\.\w+)$")


def head_parameter_names(net: nn.Module, num_classes: int) -> set[str]:
    """Parameters of every Linear layer that outputs class scores (main and auxiliary heads)."""
    return {
        f"{name}.{param}"
        for name, module in net.named_modules()
        if isinstance(module, nn.Linear) and module.out_features == num_classes
        for param in ("weight", "bias")
    }


def load_weights(net: nn.Module, path: str | os.PathLike, num_classes: int) -> list[str]:
    """Copy the tensors of ``path`` into ``net``; return the names of head tensors left at their initialisation.

    ``path`` is a torchvision state dict (``torch.save(model.state_dict())``), a lit-models Lightning checkpoint
    (its ``state_dict`` with the ``net.`` prefix), or the name of torchvision's weights for the net's architecture
    (``IMAGENET1K_V1``, ``DEFAULT``: see :func:`torchvision_state`). A classifier head whose size differs (e.g.
    ImageNet's 1000 classes into a 10-class model) is skipped so it can be trained anew; any other mismatch is an
    error naming the tensors, since silently partial loading hides wrong-architecture mistakes.
    """
    state = read_state(net, path)
    own = net.state_dict()
    heads = head_parameter_names(net, num_classes)
    skipped = [k for k in heads if k in state and state[k].shape != own[k].shape]
    for key in skipped:
        del state[key]
    missing = sorted(set(own) - set(state) - set(skipped))
    unexpected = sorted(set(state) - set(own))
    wrong_shape = sorted(k for k in set(state) & set(own) if state[k].shape != own[k].shape)
    if missing or unexpected or wrong_shape:
        raise ValueError(
            f"{path} does not fit this network: missing {missing[:8]}{'…' if len(missing) > 8 else ''}, "
            f"unexpected {unexpected[:8]}{'…' if len(unexpected) > 8 else ''}, different shape {wrong_shape[:8]}. "
            "Check that depth/variant/width arguments match the architecture the file was saved from."
        )
    net.load_state_dict(state, strict=False)
    return sorted(skipped)


def read_state(net: nn.Module, source: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict a weights argument names: a file, or torchvision's weights by name."""
    path = Path(source).expanduser()
    if path.is_file():
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = {k.removeprefix("net."): v for k, v in state["state_dict"].items() if k.startswith("net.")}
        if not isinstance(state, dict):
            raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict or a checkpoint.")
        return state
    if re.fullmatch(r"[A-Z][A-Z0-9_]*", str(source)):
        return torchvision_state(net, str(source))
    raise FileNotFoundError(
        f"weights {source!r}: no such file, and not a torchvision weights name (such as IMAGENET1K_V1 or DEFAULT)."
    )


def torchvision_state(net: nn.Module, name: str) -> dict[str, torch.Tensor]:
    """torchvision's ``name`` weights for the net's architecture (``net.torchvision_name``: resnet50, vgg16_bn,
    ...), read from torch's cache ($TORCH_HOME/hub/checkpoints), downloaded there first when missing."""
    architecture = getattr(net, "torchvision_name", None)
    if architecture is None:
        raise ValueError(
            f"{type(net).__name__} with these arguments has no torchvision counterpart, so no weights by name: "
            "use variant='torchvision' (AlexNet, GoogLeNet), or pass a weight file."
        )
    choices = torchvision.models.get_model_weights(architecture)
    try:
        weights = choices.DEFAULT if name == "DEFAULT" else choices[name]
    except KeyError:
        raise ValueError(
            f"torchvision has no {name} weights for {architecture}: choose one of "
            f"{['DEFAULT', *(member.name for member in choices)]}, or pass a weight file."
        ) from None
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
    try:
        state = weights.get_state_dict(progress=False)
    except (urllib.error.URLError, OSError, RuntimeError) as error:
        raise FileNotFoundError(
            f"{architecture} weights {weights} are not in torch's cache ({cached}) and could not be downloaded "
            f"({error}). On a machine with network access, download {weights.url} and put the file at {cached} "
            "(set TORCH_HOME to use another cache folder)."
        ) from None
    if architecture.startswith("densenet"):
        state = {DENSENET_OLD_NAMES.sub(r"\1\2", key): value for key, value in state.items()}
    return state
