"""The DataLoader every DataModule base builds for its splits: worker set-up and DDP-exact evaluation, once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, IterableDataset

from lit_models.datamodules.resumable import ResumableLoader, ResumableSampler, SeededSamples
from lit_models.preemption import worker_init_fn


def split_batch_size(hparams: Any, train: bool) -> int:
    """The per-device batch size of a split: ``batch_size`` in training, else ``eval_batch_size`` or ``batch_size``."""
    return hparams.batch_size if train else (hparams.eval_batch_size or hparams.batch_size)


def split_loader(
    dataset: Dataset,
    *,
    train: bool,
    batch_size: int | None,
    num_workers: int,
    trainer: pl.Trainer | None = None,
    collate_fn: Callable[[list], Any] | None = None,
    drop_last: bool = False,
) -> DataLoader:
    """A DataLoader over one split: the training split shuffled, the others (val, test, predict) in order.

    Under DDP (``trainer.world_size > 1``) an evaluation split is sharded by ``UnrepeatedDistributedSampler``: each
    rank gets a disjoint shard and their union is the split, every sample exactly once (``DistributedSampler``
    would pad the last rank with repeated samples, counting them twice in the metrics). An ``IterableDataset``
    orders and shards itself (text's ``TokenStreams``): it is given neither shuffling nor a sampler.

    Workers persist across epochs and outlive a job-wide SIGTERM until the trainer has saved (``worker_init_fn``);
    batches are pinned when CUDA is available. ``batch_size`` None: the dataset's items are whole batches. Each
    worker runs torch on one thread (PyTorch's worker loop sets it), so ``num_workers`` workers keep as many cores
    busy and no more; ``prefetch_factor`` stays PyTorch's 2, as 4 measured within the noise of 2
    (``benchmarks/data_speed.py --prefetch-factor 4``).

    The training split's loader is a ``ResumableLoader`` (``resumable.py``): its order is drawn from a seed and the
    epoch, each sample's augmentation from a seed of its own, and a checkpoint holds where the epoch stood, so
    ``fit --ckpt_path`` continues mid-epoch with the batches and random numbers an unstopped run would have had.
    A dataset that names its ``loader_class`` gets it: prepared shards (``shard_dataset.py``) get LitData's
    ``StreamingDataLoader``, whose position Lightning saves in checkpoints (their persistent workers learn each
    epoch from the dataset's shared ``epoch_state``).
    """
    loader_class = getattr(dataset, "loader_class", None)
    options: dict[str, Any] = {}
    if train and loader_class is None:  # ours: a checkpoint continues it mid-epoch (resumable.py)
        loader_class = ResumableLoader
        seed = int(torch.randint(2**31, ()).item())  # from the global generator: seed_everything fixes the order
        # Its own generator: the workers' base seed is not drawn from the one the model's dropout draws from.
        options = {"trainer": trainer, "generator": torch.Generator().manual_seed(seed)}
        if not isinstance(dataset, IterableDataset):
            replicas, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
            options["sampler"] = ResumableSampler(dataset, replicas, rank, seed)
            dataset = SeededSamples(dataset)
    elif not isinstance(dataset, IterableDataset):
        sampler = None
        if not train and trainer is not None and trainer.world_size > 1:
            sampler = UnrepeatedDistributedSampler(
                dataset, num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=False
            )
        options = {"shuffle": train, "sampler": sampler}
    return (loader_class or DataLoader)(
        dataset,
        batch_size=batch_size,
        **options,
        num_workers=num_workers,
        collate_fn=collate_fn,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=num_workers > 0,
        worker_init_fn=worker_init_fn,  # workers outlive a job-wide SIGTERM until the trainer has saved
        drop_last=drop_last,
    )
