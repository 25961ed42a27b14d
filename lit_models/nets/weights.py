"""Load a local weight file (torchvision state dict or lit-models checkpoint) into a plain net."""

from __future__ import annotations

import os

import torch
from torch import nn


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

    Accepts a torchvision state dict (``torch.save(model.state_dict())``) or a lit-models Lightning checkpoint
    (its ``state_dict`` with the ``net.`` prefix). A classifier head whose size differs (e.g. ImageNet's 1000
    classes into a 10-class model) is skipped so it can be trained anew; any other mismatch is an error naming
    the tensors, since silently partial loading hides wrong-architecture mistakes.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file {path} does not exist.")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = {k.removeprefix("net."): v for k, v in state["state_dict"].items() if k.startswith("net.")}
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict or a checkpoint.")
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
