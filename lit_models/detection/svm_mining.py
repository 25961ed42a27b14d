"""R-CNN's per-class linear SVMs, trained by hard-negative mining over cached features (Girshick et al. 2014, §2.3
and Appendix B; the released code's ``rcnn_train.m``).

Each class's SVM starts from the negatives of the first block of images, is solved, and then the remaining
images are streamed in order: a negative (IoU under ``svm_neg_iou`` with every box of the class) scoring above
-1 under the current SVM is hard and joins the class's cache; once more than ``retrain_limit`` have joined, the
SVM is solved again on the cache and the easy ones (scoring under -1.2) leave it. A round is one pass over the
images; mining stops after ``rounds`` or after a round that finds no new hard negative. Then every negative
outside the cache scores at most -1, where its loss and gradient are zero: the cache's solution is the solution
over all negatives (the test checks this against a solve over all of them at once).

The solve: the primal objective of an L2-regularised linear SVM with liblinear's bias term (a constant feature
``bias_mult``, regularised with the weights)::

    0.5 |w|^2 + 0.5 (b / bias_mult)^2 + C (pos_weight sum_pos l(1 - z) + sum_neg l(1 + z)),   z = w.x + b

minimised by L-BFGS (``torch.optim.LBFGS``, strong Wolfe line search) from the previous solution. The paper's
code uses liblinear's hinge loss, l(u) = max(0, u), solved in the dual; here l(u) = max(0, u)^2, the squared hinge
(liblinear's "L2-loss SVM"), because it is differentiable, which L-BFGS needs to converge to the optimum rather
than stall on the hinge's kink. Both losses are zero for exactly the examples beyond the margin, so the mining
rule (hard = scoring above -1) is the same. C = 0.001, pos_weight = 2 and bias_mult = 10 are the code's values,
for features scaled to a mean L2 norm of 20 (``rcnn_scale_features``); the scale is folded into the weights
returned.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import Tensor

log = logging.getLogger(__name__)

HARD = -1.0  # a negative scoring above this lies inside the margin (rcnn_train.m: hard_thresh -1.0001)
EASY = -1.2  # after a solve, cached negatives scoring below this leave the cache (evict_thresh)
RETRAIN_LIMIT = 2000  # new hard negatives that trigger the next solve (retrain_limit)
FEATURE_NORM = 20.0  # features are scaled to this mean L2 norm (rcnn_scale_features' target_norm)
BIAS_MULT = 10.0  # liblinear's -B: the bias is a constant feature of this value, regularised like a weight


@dataclass(frozen=True)
class LinearSVM:
    """One class's objective (module docstring) and its solve.

    Args:
        C: Weight of the losses against the regulariser (rcnn_train.m: 0.001).
        pos_weight: Extra weight of the positives' losses (2).
        bias_mult: The bias feature's value (10).
        max_iter: Most L-BFGS iterations per solve.
    """

    C: float = 1e-3
    pos_weight: float = 2.0
    bias_mult: float = BIAS_MULT
    max_iter: int = 500

    def __post_init__(self) -> None:
        if not (self.C > 0 and self.pos_weight > 0 and self.bias_mult > 0 and self.max_iter >= 1):
            raise ValueError(
                f"the SVM's C, pos_weight and bias_mult must be > 0 and max_iter >= 1, got {self.C}, "
                f"{self.pos_weight}, {self.bias_mult} and {self.max_iter}"
            )

    def objective(self, weight: Tensor, bias: Tensor, positives: Tensor, negatives: Tensor) -> Tensor:
        """The objective at (weight D, bias scalar) over P x D positives and M x D negatives."""
        pos_loss = torch.relu(1 - (positives @ weight + bias)).square().sum()
        neg_loss = torch.relu(1 + (negatives @ weight + bias)).square().sum()
        regulariser = 0.5 * (weight.square().sum() + (bias / self.bias_mult).square())
        return regulariser + self.C * (self.pos_weight * pos_loss + neg_loss)

    def solve(
        self, positives: Tensor, negatives: Tensor, start: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, Tensor]:
        """(weight D, bias scalar) minimising the objective, by L-BFGS from ``start`` (else zero)."""
        dim = positives.shape[1]
        theta = positives.new_zeros(dim + 1)  # [w, b / bias_mult]: the bias is regularised as a weight
        if start is not None:
            theta[:dim], theta[dim] = start[0], start[1] / self.bias_mult
        theta.requires_grad_(True)
        optimizer = torch.optim.LBFGS(
            [theta], lr=1, max_iter=self.max_iter, history_size=20, line_search_fn="strong_wolfe",
            tolerance_grad=1e-9, tolerance_change=1e-12,
        )  # fmt: skip

        def closure() -> Tensor:
            optimizer.zero_grad()
            value = self.objective(theta[:dim], theta[dim] * self.bias_mult, positives, negatives)
            value.backward()
            return value

        with torch.enable_grad():
            optimizer.step(closure)
        theta = theta.detach()
        return theta[:dim].clone(), theta[dim] * self.bias_mult


# One image of the cache as mining reads it: N x D scaled features, N x K' bool (a negative of each mined class),
# N int64 keys that name each row across the whole cache.
Block = tuple[Tensor, Tensor, Tensor]


@dataclass
class MinedSVM:
    """One class's SVM and its mining record."""

    positives: Tensor  # P x D
    weight: Tensor  # D
    bias: Tensor  # scalar
    negatives: Tensor  # M x D: the hard negatives cached at the last solve
    keys: Tensor  # M
    pending: list[tuple[Tensor, Tensor]] = field(default_factory=list)  # (features, keys) cached since then
    solves: int = 0
    rounds: int = 0  # passes over the images that added hard negatives
    converged: bool = False  # a pass found none: the cache's solution is the one over all negatives
    history: list[float] = field(default_factory=list)  # the objective after each solve, on the cache

    @property
    def added(self) -> int:
        return sum(len(keys) for _, keys in self.pending)

    def update(self, svm: LinearSVM) -> None:
        """Solve on the cache from the current SVM, then drop the easy negatives."""
        self.negatives = torch.cat([self.negatives, *(features for features, _ in self.pending)])
        self.keys = torch.cat([self.keys, *(keys for _, keys in self.pending)])
        self.pending = []
        self.weight, self.bias = svm.solve(self.positives, self.negatives, (self.weight, self.bias))
        self.history.append(float(svm.objective(self.weight, self.bias, self.positives, self.negatives)))
        self.solves += 1
        keep = self.negatives @ self.weight + self.bias >= EASY
        self.negatives, self.keys = self.negatives[keep], self.keys[keep]

    def take(self, features: Tensor, keys: Tensor, rows: Tensor) -> int:
        """Cache an image's ``rows`` (bool) not cached yet; return how many."""
        rows = rows & ~torch.isin(keys, self.keys)  # other images' keys cannot be among this one's
        self.pending.append((features[rows], keys[rows]))
        return len(self.pending[-1][1])


def mine(
    svm: LinearSVM,
    positives: list[Tensor],
    images: Callable[[], Iterable[Block]],
    rounds: int = 1,
    retrain_limit: int = RETRAIN_LIMIT,
) -> list[MinedSVM]:
    """Hard-negative mining (module docstring) of one SVM per class, all classes in each pass over the images.

    Args:
        svm: The objective and its solver.
        positives: Per class, its P_k x D positives (scaled features).
        images: Yields the cache's images in the same order at every call (one call per round).
        rounds: Most passes over the images (rcnn_train.m: 1).
        retrain_limit: New hard negatives of a class that trigger its next solve.
    """
    if rounds < 1 or retrain_limit < 1:
        raise ValueError(f"mining needs rounds >= 1 and retrain_limit >= 1, got {rounds} and {retrain_limit}")
    mined = [
        MinedSVM(pos, pos.new_zeros(pos.shape[1]), pos.new_zeros(()), pos.new_zeros(0, pos.shape[1]),
                 torch.zeros(0, dtype=torch.int64))
        for pos in positives
    ]  # fmt: skip
    first = True
    for round_index in range(rounds):
        found = [0] * len(mined)
        for features, negative, keys in images():
            if not first:  # N x K': every class's scores at once
                weights = torch.stack([state.weight for state in mined], 1)
                hard = features @ weights + torch.stack([state.bias for state in mined]) > HARD
            for index, state in enumerate(mined):
                # The first image gives every negative, the later ones their hard negatives.
                found[index] += state.take(features, keys, negative[:, index] & (first or hard[:, index]))
                if (first or state.added > retrain_limit) and len(state.negatives) + state.added:
                    state.update(svm)
            first = False
        for index, state in enumerate(mined):
            if state.added:  # the round's last hard negatives
                state.update(svm)
            state.rounds += found[index] > 0
            state.converged = found[index] == 0
        log.info("hard-negative mining, round %d: %s new hard negatives per class", round_index + 1, found)
        if not any(found):
            break
    return mined
