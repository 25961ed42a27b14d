"""A checkpoint's saved arguments (its module's ``hyper_parameters``, its DataModule's), checked against the class
they are for before it is built: every key must be an argument the class takes (followed through ``**net_args``
into the net, as ``--model.help`` lists them), every value of the declared type, and every size within
:data:`BOUNDS`, so that a crafted or damaged file gets an error naming the key and the file, never a huge
allocation or a traceback from deep inside a constructor.

A checkpoint never carries a callable or a class (the optimizer and scheduler factories are not saved): an argument
of such a type is refused too, so nothing here resolves a name into code.
"""

from __future__ import annotations

import collections.abc
import functools
import inspect
import math
import types
import typing
from typing import Any

from jsonargparse._parameter_resolvers import get_signature_parameters

from lit_models.cli_parser import readable_type
from lit_models.datamodules.files import DataError

IMAGE_SIDE = 8192  # pixels: a network's input side, a resize target, a test scale
WIDTH = 65536  # channels, hidden units, features per step
COUNT = 100_000  # boxes, proposals and regions per image
LENGTH = 1_000_000  # steps of a sequence, tokens generated

# The sizes a checkpoint may declare, by argument name: (lowest, highest), for a number or each number of a list.
# Sizes that make parameters are also held to the tensors the file carries when the module is built
# (lit_models.inference); these bounds stop what is allocated later (an input, a batch, a generated text).
BOUND_GROUPS = (
    ((1, 1_000_000), "num_classes"),
    ((0.001, 64), "width_mult"),
    ((1, 1024), "num_layers"),
    ((1, WIDTH), "batch_size eval_batch_size"),
    ((1, 10_000_000), "num_samples train_size val_size test_size"),
    ((1, IMAGE_SIDE), "image_size eval_image_size eval_resize_size resize_size crop_size base_size shorter_side "
                      "min_size max_size warp_size test_window train_scales test_scales proposal_width"),
    ((1, WIDTH), "hidden_size embedding_dim representation_size head_channels input_size features growth_rate "
                 "num_init_features"),
    ((1, COUNT), "box_detections_per_img max_proposals rois_per_image rpn_pre_nms_top_n_train "
                 "rpn_post_nms_top_n_train rpn_pre_nms_top_n_test rpn_post_nms_top_n_test"),
    ((1, LENGTH), "seq_len length window generate_length"),
)  # fmt: skip
BOUNDS: dict[str, tuple[float, float]] = {name: bounds for bounds, names in BOUND_GROUPS for name in names.split()}
WHOLE_NUMBER = 2**31  # any other whole number's magnitude
NESTING = 64  # lists and mappings within each other: a stage record nests two levels per earlier stage


def checked_arguments(cls: type, saved: Any, what: str) -> dict[str, Any]:
    """``saved`` as keyword arguments of ``cls``; DataError naming ``what`` (the entry and the file) and the key for
    a key ``cls`` does not take, a value of another type, or a size out of :data:`BOUNDS`."""
    if not isinstance(saved, dict):
        raise DataError(f"{what} is a {type(saved).__name__}, not a mapping of argument names to values.")
    hints = signature_hints(cls)
    for key, value in saved.items():
        if key not in hints:
            raise DataError(
                f"{what} has {key!r}, which {cls.__name__} does not take ({', '.join(sorted(hints))}): the file was "
                "written by another version or altered; nothing was built."
            )
        hint = hints[key]
        if not matches(value, hint):
            raise DataError(
                f"{what}: {key} is {shown(value)} ({type(value).__name__}), where {cls.__name__} takes "
                f"{described(hint)}; nothing was built."
            )
        check_bounds(key, value, what)
    return dict(saved)


@functools.cache
def signature_hints(cls: type) -> dict[str, Any]:
    """Every argument ``cls`` takes and its type, followed through ``**kwargs`` handed on (read from the source once
    per class: jsonargparse parses it)."""
    return {parameter.name: parameter.annotation for parameter in get_signature_parameters(cls)}


def matches(value: Any, hint: Any) -> bool:
    """Whether ``value``, read from a file, is of the type ``hint``: numbers, text, None, literals and their lists,
    tuples, mappings and unions. Any other type (a callable, a class) is never read from a file."""
    if hint is inspect.Parameter.empty or hint is Any:  # an untyped argument takes plain values
        return is_plain(value)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is type(None):
        return value is None
    if hint in (bool, int, str):
        return type(value) is hint
    if hint is float:
        return type(value) in (int, float) and math.isfinite(value)
    if origin is typing.Literal:
        return any(type(value) is type(option) and value == option for option in args)
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, option) for option in args)
    if origin in (list, tuple, collections.abc.Sequence):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(matches(item, arg) for item, arg in zip(value, args, strict=True))
        return all(matches(item, args[0] if args else Any) for item in value)
    if origin in (dict, collections.abc.Mapping):
        key_hint, value_hint = args or (Any, Any)
        pairs = value.items() if isinstance(value, dict) else None
        return pairs is not None and all(matches(k, key_hint) and matches(v, value_hint) for k, v in pairs)
    return False


def is_plain(value: Any, depth: int = 0) -> bool:
    """None, a bool, a whole or finite number, text, or lists, tuples and text-keyed mappings of them, nested no
    deeper than :data:`NESTING` (a file nested deeper is no configuration)."""
    if value is None or type(value) in (bool, int, str):
        return True
    if type(value) is float:
        return math.isfinite(value)
    if depth >= NESTING:
        return False
    if isinstance(value, (list, tuple)):
        return all(is_plain(item, depth + 1) for item in value)
    if isinstance(value, dict):
        return all(type(key) is str and is_plain(item, depth + 1) for key, item in value.items())
    return False


def check_bounds(key: str, value: Any, what: str) -> None:
    """DataError where a number of ``value`` (or of its items) lies outside ``key``'s bounds."""
    low, high = BOUNDS.get(key, (-WHOLE_NUMBER, WHOLE_NUMBER))
    numbers = value if isinstance(value, (list, tuple)) else [value]
    for number in numbers:
        bounded = type(number) is int or (type(number) is float and key in BOUNDS)
        if bounded and not low <= number <= high:
            raise DataError(
                f"{what}: {key} is {shown(number)}, outside {low:,}..{high:,}, the sizes lit-models builds from a "
                "checkpoint; nothing was built."
            )


def described(hint: Any) -> str:
    """A type as a message names it; a factory or class as what a checkpoint never carries."""
    if hint is inspect.Parameter.empty:
        return "plain values"
    text = str(hint)
    return "a factory, which no checkpoint carries" if "Callable" in text else readable_type(text)


def shown(value: Any) -> str:
    """A value for a message, cut short."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
