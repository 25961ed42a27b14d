"""Processes started by torchrun (``torchrun --nproc_per_node 2 -m lit_models fit ...``, or any launcher of
torch.distributed.elastic) run as one DDP run: Lightning reads each one's rank from torchrun's variables (its
TorchElasticEnvironment), and here the trainer's ``devices`` and ``num_nodes`` are made to agree with the processes
torchrun started, and commands that work in one process refuse to run once per process.

Nothing but the standard library is imported (``lit_models.errors`` too): ``lit-models`` checks the launch before
it imports anything heavy.
"""

from __future__ import annotations

import os
from typing import Any

from lit_models.errors import UsageError, fail

# The single-device settings of the recipes and of Lightning's defaults: under torchrun they take its process count,
# since one process per device training alone, each into its own run folder, is never what such a launch means.
SINGLE_DEVICE = (1, "1", "auto", None)


def launched() -> tuple[int, int] | None:
    """(processes per node, nodes) that torchrun started this process among, or None outside torchrun."""
    if os.environ.get("TORCHELASTIC_RUN_ID") is None:  # what torch.distributed.is_torchelastic_launched() reads
        return None
    world = int(os.environ["WORLD_SIZE"])
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    return per_node, world // per_node


def follow_launch(trainer: Any) -> None:
    """Under torchrun, set the trainer configuration's (a jsonargparse Namespace) ``devices`` and ``num_nodes`` to
    the processes torchrun started, where they are left at one device on one node; raise UsageError (on rank 0; the
    other ranks exit quietly with the same status) where they name another number of processes."""
    started = launched()
    if started is None:
        return
    per_node, nodes = started
    devices, num_nodes = trainer.get("devices"), trainer.get("num_nodes", 1)
    if devices in SINGLE_DEVICE and num_nodes == 1:
        trainer["devices"], trainer["num_nodes"] = per_node, nodes
        return
    count = device_count(devices)
    if count is None or (count, num_nodes) == (per_node, nodes):
        return  # a form only Lightning counts (-1: every GPU): it checks the total when the run starts
    leave_the_message_to_rank_zero()
    raise UsageError(
        f"torchrun started {per_node} process(es) per node on {nodes} node(s), but the trainer has devices={devices} "
        f"and num_nodes={num_nodes}: give --trainer.devices {per_node} --trainer.num_nodes {nodes}, or leave "
        "--trainer.devices at 1 or auto to take torchrun's processes."
    )


def device_count(devices: Any) -> int | None:
    """How many devices per node ``devices`` names (``2``, ``"2"``, ``[0, 1]``, ``"0,1"``), None where Lightning
    decides (``-1``, ``"auto"``)."""
    if isinstance(devices, (list, tuple)):
        return len(devices)
    if isinstance(devices, str) and "," in devices:
        return len([part for part in devices.split(",") if part.strip()])
    if isinstance(devices, (int, str)) and str(devices).isdigit():
        return int(devices)
    return None


def refuse_in_many_processes(command: str) -> None:
    """End ``command`` when torchrun started it in several processes: each would do the same work and write the
    same files; only rank 0 says so."""
    started = launched()
    if started is None or started[0] * started[1] == 1:
        return
    leave_the_message_to_rank_zero()
    fail(
        f"lit-models {command} runs in one process: start it without torchrun (torchrun is for fit, validate, test "
        "and predict --config)."
    )


def leave_the_message_to_rank_zero() -> None:
    """On every rank but 0, end the command with the error's status and no message: rank 0 prints it, once."""
    if int(os.environ.get("RANK", 0)) != 0:
        raise SystemExit(2)
