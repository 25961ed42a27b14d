"""GoogLeNet (Inception v1), Szegedy et al. 2015, "Going deeper with convolutions".

Two variants share one module tree:

* ``"paper"``: the network of the paper's Table 1 / Figure 3 (conv + bias + ReLU, real 5x5 convs, LRN).
* ``"torchvision"``: the layer set of ``torchvision.models.googlenet`` (conv-BN-ReLU, "5x5" as 3x3), with
  the same state-dict keys and shapes, so a torchvision checkpoint loads with ``strict=True``.

``forward`` always returns :class:`GoogLeNetOutputs`, in train and eval mode alike.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from torch import Tensor, nn

__all__ = ["GoogLeNet", "GoogLeNetOutputs"]

# Table 1 of the paper: #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj.
_INCEPTION_CFG: dict[str, tuple[int, int, int, int, int, int]] = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}

_VARIANTS = ("paper", "torchvision")


class GoogLeNetOutputs(NamedTuple):
    """Main logits and the two auxiliary heads' logits (``None`` when the net has no aux heads).

    Field names and order follow ``torchvision.models.GoogLeNetOutputs``: ``aux_logits2`` is the head on
    inception 4d, ``aux_logits1`` the head on inception 4a.
    """

    logits: Tensor
    aux_logits2: Tensor | None
    aux_logits1: Tensor | None


class _ConvUnit(nn.Module):
    """Conv followed by ReLU; with ``batch_norm`` a bias-free conv, BatchNorm (eps 1e-3) and ReLU."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        # The bias would be cancelled by the BN mean subtraction, and torchvision's keys have none.
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, stride=stride, padding=padding, bias=not batch_norm)
        # eps 1e-3 is torchvision's value (inherited from the TF Inception ports); keep it for equal outputs.
        self.bn: nn.Module = nn.BatchNorm2d(out_ch, eps=0.001) if batch_norm else nn.Identity()
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.bn(self.conv(x)))


class _Inception(nn.Module):
    """Four parallel branches concatenated on channels: 1x1 | 1x1->3x3 | 1x1->5x5 | maxpool->1x1.

    Without ``reductions`` the 3x3 and 5x5 convolutions read the block's whole input (the 1x1 reductions of the
    paper's Figure 2(b) removed); the pool projection stays, so the output width is the same.
    """

    def __init__(
        self,
        in_ch: int,
        ch1x1: int,
        ch3x3red: int,
        ch3x3: int,
        ch5x5red: int,
        ch5x5: int,
        pool_proj: int,
        batch_norm: bool,
        kernel5: int,
        reductions: bool = True,
    ) -> None:
        super().__init__()
        self.branch1 = _ConvUnit(in_ch, ch1x1, 1, batch_norm=batch_norm)
        reduce3, reduce5 = (ch3x3red, ch5x5red) if reductions else (in_ch, in_ch)
        self.branch2 = nn.Sequential(
            *([_ConvUnit(in_ch, ch3x3red, 1, batch_norm=batch_norm)] if reductions else []),
            _ConvUnit(reduce3, ch3x3, 3, padding=1, batch_norm=batch_norm),
        )
        self.branch3 = nn.Sequential(
            *([_ConvUnit(in_ch, ch5x5red, 1, batch_norm=batch_norm)] if reductions else []),
            _ConvUnit(reduce5, ch5x5, kernel5, padding=kernel5 // 2, batch_norm=batch_norm),
        )
        # Stride-1 pool keeps the spatial size so the four branches can be concatenated.
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True),
            _ConvUnit(in_ch, pool_proj, 1, batch_norm=batch_norm),
        )
        self.out_channels = ch1x1 + ch3x3 + ch5x5 + pool_proj

    def forward(self, x: Tensor) -> Tensor:
        # N x (ch1x1 + ch3x3 + ch5x5 + pool_proj) x H x W
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], dim=1)


class _AuxHead(nn.Module):
    """Auxiliary classifier: pool to 4x4, 1x1 conv 128, FC 1024, dropout, linear."""

    def __init__(
        self,
        in_ch: int,
        num_classes: int,
        conv_ch: int,
        fc_width: int,
        dropout: float,
        batch_norm: bool,
    ) -> None:
        super().__init__()
        # The paper's 5x5/3 average pool maps 14x14 to 4x4; an adaptive pool gives 4x4 for any input size.
        self.pool = nn.AdaptiveAvgPool2d((4, 4))
        self.conv = _ConvUnit(in_ch, conv_ch, 1, batch_norm=batch_norm)
        self.fc1 = nn.Linear(conv_ch * 16, fc_width)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(fc_width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(self.pool(x))  # N x 128 x 4 x 4
        x = self.relu(self.fc1(torch.flatten(x, 1)))  # N x 1024
        return self.fc2(self.dropout(x))  # N x num_classes


class GoogLeNet(nn.Module):
    """GoogLeNet / Inception v1 (Szegedy et al. 2015) with auxiliary heads in train and eval mode.

    ``forward`` always returns :class:`GoogLeNetOutputs`; the aux heads are computed whenever
    ``aux_logits=True`` (in eval too, so validation can report them) and are ``None`` otherwise.
    How much the aux losses count is the training task's business, not the net's.

    Deviations from the paper, both variants:

    * The aux heads' 5x5 stride-3 average pool is an ``AdaptiveAvgPool2d((4, 4))``: identical for the
      paper's 14x14 maps, and it keeps small inputs (>= 32x32) working. The main head's 7x7 average pool is
      likewise a global (adaptive) average pool.
    * Max-pools use ``ceil_mode=True`` without padding (as torchvision), which gives the paper's map sizes
      (112, 56, 28, 14, 7 for a 224 input) and still works down to 32x32 inputs (1x1 maps at the end).
    * No input normalisation inside the net (torchvision's ``transform_input`` is not reproduced): that is
      the data pipeline's job.
    * ``width_mult`` (not in the paper) scales every conv's channel count and the aux FC width.

    ``variant="paper"``: conv + bias + ReLU without batch norm, real 5x5 convs in the 5x5 branches, local
    response normalisation after the first max-pool and after the 3x3 conv of the stem (Figure 3). The
    paper gives no LRN constants; the AlexNet / Caffe ``bvlc_googlenet`` ones are used
    (size 5, alpha 1e-4, beta 0.75, k 1). The max-pool after inception 4e is 3x3 stride 2 as in Table 1.
    Weights use Kaiming-normal (fan_in) init (see ``_init_weights``); the paper trained with DistBelief
    and gives no init.

    ``variant="torchvision"``: the layer set of ``torchvision.models.googlenet``: conv-BN(eps 1e-3)-ReLU
    units, no LRN, the pool after 4e is 2x2 stride 2, and the "5x5" branch is a 3x3 conv. That last one
    is a known torchvision quirk (its weights were trained that way); it is kept so torchvision state
    dicts load with ``strict=True``. torchvision trains with main-head dropout 0.2; pass ``dropout=0.2`` to
    match it (the default here is the paper's 0.4).
    """

    def __init__(
        self,
        num_classes: int = 1000,
        aux_logits: bool = True,
        variant: Literal["paper", "torchvision"] = "paper",
        width_mult: float = 1.0,
        dropout: float = 0.4,
        aux_dropout: float = 0.7,
        reductions: bool = True,
    ) -> None:
        """Build the network.

        Args:
            num_classes: Number of output classes of the main and auxiliary heads.
            aux_logits: Build the two auxiliary classifiers (on inception 4a and 4d). Their logits are
                returned in train and eval mode; with ``False`` those fields are ``None``.
            variant: ``"paper"`` for the 2015 network (no batch norm, 5x5 convs, LRN) or ``"torchvision"``
                for torchvision's layer set and state-dict layout (batch norm, 3x3 in the "5x5" branch).
            width_mult: Multiplier on every conv's channel count and on the aux FC width (each rounded,
                at least 1); 1.0 is the paper's width, small values build tiny nets for tests.
            dropout: Dropout probability before the main classifier (paper: 0.4, torchvision: 0.2).
            aux_dropout: Dropout probability in the auxiliary heads (paper: 0.7).
            reductions: The 1x1 convolutions that reduce the input of each Inception block's 3x3 and 5x5
                convolutions (Figure 2(b)); ``False`` removes them, the ablation that shows what they save.
        """
        super().__init__()
        self.torchvision_name = "googlenet" if variant == "torchvision" else None  # the paper's has no weights
        if variant not in _VARIANTS:
            raise ValueError(f"variant must be one of {list(_VARIANTS)}, got {variant!r}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if not width_mult > 0:
            raise ValueError(f"width_mult must be > 0, got {width_mult}")
        for name, p in (("dropout", dropout), ("aux_dropout", aux_dropout)):
            if not 0.0 <= p < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {p}")
        self.aux_logits = aux_logits
        self.variant = variant

        def ch(c: int) -> int:
            return max(1, int(round(c * width_mult)))

        bn = variant == "torchvision"
        kernel5 = 5 if variant == "paper" else 3
        # Comments give shapes for a 224x224 input at width_mult 1.
        self.conv1 = _ConvUnit(3, ch(64), 7, stride=2, padding=3, batch_norm=bn)  # N x 64 x 112 x 112
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)  # N x 64 x 56 x 56
        self.lrn1: nn.Module = self._lrn() if variant == "paper" else nn.Identity()
        self.conv2 = _ConvUnit(ch(64), ch(64), 1, batch_norm=bn)  # N x 64 x 56 x 56
        self.conv3 = _ConvUnit(ch(64), ch(192), 3, padding=1, batch_norm=bn)  # N x 192 x 56 x 56
        self.lrn2: nn.Module = self._lrn() if variant == "paper" else nn.Identity()
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)  # N x 192 x 28 x 28

        in_ch = ch(192)
        blocks: dict[str, _Inception] = {}
        for name, cfg in _INCEPTION_CFG.items():
            blocks[name] = _Inception(in_ch, *(ch(c) for c in cfg), bn, kernel5, reductions)
            in_ch = blocks[name].out_channels
        self.inception3a = blocks["3a"]  # N x 256 x 28 x 28
        self.inception3b = blocks["3b"]  # N x 480 x 28 x 28
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)  # N x 480 x 14 x 14
        self.inception4a = blocks["4a"]  # N x 512 x 14 x 14
        self.inception4b = blocks["4b"]  # N x 512 x 14 x 14
        self.inception4c = blocks["4c"]  # N x 512 x 14 x 14
        self.inception4d = blocks["4d"]  # N x 528 x 14 x 14
        self.inception4e = blocks["4e"]  # N x 832 x 14 x 14
        # Table 1 says 3x3/2; torchvision uses 2x2/2 (same 7x7 output at 224, different windows).
        pool4_k = 3 if variant == "paper" else 2
        self.maxpool4 = nn.MaxPool2d(pool4_k, stride=2, ceil_mode=True)  # N x 832 x 7 x 7
        self.inception5a = blocks["5a"]  # N x 832 x 7 x 7
        self.inception5b = blocks["5b"]  # N x 1024 x 7 x 7

        self.aux1: _AuxHead | None = None
        self.aux2: _AuxHead | None = None
        if aux_logits:
            aux_args = dict(conv_ch=ch(128), fc_width=ch(1024), dropout=aux_dropout, batch_norm=bn)
            self.aux1 = _AuxHead(self.inception4a.out_channels, num_classes, **aux_args)
            self.aux2 = _AuxHead(self.inception4d.out_channels, num_classes, **aux_args)

        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(self.inception5b.out_channels, num_classes)
        self._init_weights()

    @staticmethod
    def _lrn() -> nn.LocalResponseNorm:
        # Caffe bvlc_googlenet / AlexNet constants; the paper states none. torch divides alpha by size
        # like Caffe does, so these are the Caffe numbers verbatim.
        return nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=1.0)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                if self.variant == "torchvision":
                    # torchvision's scheme: BN renormalises every conv output, so the tiny std is harmless.
                    nn.init.trunc_normal_(m.weight, mean=0.0, std=0.01, a=-2.0, b=2.0)
                elif isinstance(m, nn.Conv2d):
                    # No BN in the paper variant: std 0.01 would shrink activations layer after layer in a
                    # 22-layer ReLU net, so use He init. fan_in mode keeps the forward scale ~1 (rms 2-3.5
                    # through the net at 224); fan_out would blow it up at the wide-to-narrow 1x1 reduces.
                    nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                else:
                    nn.init.normal_(m.weight, mean=0.0, std=0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> GoogLeNetOutputs:
        # N x 3 x 224 x 224
        x = self.maxpool1(self.conv1(x))  # N x 64 x 56 x 56
        x = self.lrn1(x)
        x = self.conv3(self.conv2(x))  # N x 192 x 56 x 56
        x = self.maxpool2(self.lrn2(x))  # N x 192 x 28 x 28
        x = self.inception3b(self.inception3a(x))  # N x 480 x 28 x 28
        x = self.maxpool3(x)  # N x 480 x 14 x 14
        x = self.inception4a(x)  # N x 512 x 14 x 14
        aux1 = self.aux1(x) if self.aux1 is not None else None
        x = self.inception4d(self.inception4c(self.inception4b(x)))  # N x 528 x 14 x 14
        aux2 = self.aux2(x) if self.aux2 is not None else None
        x = self.maxpool4(self.inception4e(x))  # N x 832 x 7 x 7
        x = self.inception5b(self.inception5a(x))  # N x 1024 x 7 x 7
        x = torch.flatten(self.avgpool(x), 1)  # N x 1024
        logits = self.fc(self.dropout(x))  # N x num_classes
        return GoogLeNetOutputs(logits, aux2, aux1)
