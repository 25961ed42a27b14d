"""A training DataLoader that a checkpoint continues where it stopped: mid-epoch, with the same samples, the same
augmentations and the same random state for the model (dropout), as if the run had never stopped.

Lightning saves the ``state_dict`` of a training loader that has one in every checkpoint and hands it back to
``load_state_dict`` before the resumed run draws its first batch; a plain DataLoader has none, so a resumed epoch
starts a new pass (another order, batches repeated or skipped) and the model's random stream starts elsewhere.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, IterableDataset, get_worker_info

if TYPE_CHECKING:
    import pytorch_lightning as pl


def random_state() -> dict[str, Any]:
    """The process's random state (torch on the CPU and CUDA, NumPy, Python) as tensors and numbers, so a checkpoint
    holding it still loads with ``torch.load(weights_only=True)`` (Lightning's own collector keeps NumPy arrays)."""
    version, python, gauss = random.getstate()
    _, keys, position, has_gauss, cached = np.random.get_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    numpy = [torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached)]
    return {"torch": torch.get_rng_state(), "cuda": cuda, "numpy": numpy, "python": [version, list(python), gauss]}


def restore_random_state(state: dict[str, Any]) -> None:
    """Put back what :func:`random_state` took (CUDA's only on as many devices as it was taken on)."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), position, has_gauss, cached))
    version, python, gauss = state["python"]
    random.setstate((version, tuple(python), gauss))


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """torch's (CPU), NumPy's and Python's generators seeded with ``seed`` inside. In the main process (no workers)
    they are put back after, as the model draws from them too; a worker draws from them for its samples alone, so
    it saves nothing (NumPy's state alone costs about 90 us a sample to save and put back). CUDA's generator is
    left alone: a DataLoader worker must not initialise CUDA, and transforms draw on the CPU."""
    saved = None if get_worker_info() else (torch.get_rng_state(), np.random.get_state(), random.getstate())
    torch.random.default_generator.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
    try:
        yield
    finally:
        if saved is not None:
            torch.set_rng_state(saved[0])
            np.random.set_state(saved[1])
            random.setstate(saved[2])


class SeededSamples(Dataset):
    """A map-style dataset whose items are ``(index, seed)`` pairs: each sample's augmentation draws from its own
    seed, so it does not depend on which worker loads it, in which order, or what the process drew before (a
    resumed run's workers are new; in the main process the model's dropout shares the generators)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int] | int) -> Any:
        if isinstance(item, int):  # a sampler Lightning put in place of ours (overfit_batches: in order, unseeded)
            return self.dataset[item]
        index, seed = item
        with seeded(seed):
            sample = self.dataset[index]
        if isinstance(sample, dict):  # for a transform after collation (image_folder.decode_batch, on the GPU)
            sample["seed"] = seed
        return sample


class ResumableSampler(DistributedSampler):
    """The training order: each epoch a permutation drawn from ``seed`` and the epoch (``set_epoch``, which Lightning
    calls), this rank's share of it under DDP (a ``DistributedSampler``, so Lightning does not wrap it), each index
    paired with the sample's seed for that epoch (:class:`SeededSamples`). ``skip`` leaves out the first samples of
    the next pass: those a resumed run had already trained on."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.skip = 0

    def __iter__(self) -> Iterator[tuple[int, int]]:
        indices = list(super().__iter__())
        seeds = np.random.default_rng([self.seed, self.epoch]).integers(2**63, size=len(self.dataset))
        skip, self.skip = self.skip, 0
        return iter([(index, int(seeds[index])) for index in indices[skip:]])


class ResumableLoader(DataLoader):
    """The training DataLoader (``loaders.split_loader``) with a ``state_dict``: the order's seed, the epoch, the
    batches this epoch has trained on (the trainer's count: the loader runs ahead of it) and, on one device, the
    random state of the process, for a checkpoint to continue. A map-style dataset is read through
    :class:`ResumableSampler`; an iterable one that serves whole batches (text's token streams) skips them itself
    (its ``skip``). The random state is not restored under DDP: only rank 0's is saved."""

    def __init__(self, *args: Any, trainer: pl.Trainer | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        trainer = self.trainer
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed if trainer is not None else 0
        epoch = trainer.current_epoch if trainer is not None else 0
        if trainer is not None and done >= trainer.num_training_batches:  # saved at the epoch's end: the next one
            epoch, done = epoch + 1, 0
        state = {"epoch": epoch, "batches": done}
        if isinstance(self.sampler, ResumableSampler):
            state["seed"] = self.sampler.seed
        if trainer is None or trainer.world_size == 1:
            state["random"] = random_state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "batches" not in state:  # another loader's (a run on prepared shards): the epoch starts a new pass
            return
        if isinstance(self.sampler, ResumableSampler):
            self.sampler.seed = state.get("seed", self.sampler.seed)
            self.sampler.set_epoch(state["epoch"])
            self.sampler.skip = state["batches"] * self.batch_size
        elif isinstance(self.dataset, IterableDataset) and hasattr(self.dataset, "skip"):
            self.dataset.skip = state["batches"]
        if "random" in state and (self.trainer is None or self.trainer.world_size == 1):
            restore_random_state(state["random"])
