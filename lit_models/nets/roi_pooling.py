"""``torchvision.ops.roi_pool`` on every CPU core.

torchvision's CPU kernel walks the RoIs one after another on a single thread (its CUDA kernel runs them all at
once), while the convolutions around it use all of torch's intra-op threads. At test, SPPNet and Fast R-CNN pool
~1,000-2,000 feature-map windows per image. :func:`roi_pool` splits the RoIs into one share per thread and runs
torchvision's op on each share at once (the op releases the GIL): the same tensor and the same gradients (tested).
On 2 cores, 1,322 windows of one shapes scene (128 channels, 16 x 16 map) took 8.3 instead of 12.7 ms to 4 x 4 and
27 instead of 49 ms to 7 x 7. The list-of-boxes form is converted as torchvision's private
``convert_boxes_to_roi_format`` does, so that the shares can be cut from one K x 5 tensor.

:func:`roi_pool_windows` gives the feature-map cells the op reads for each RoI, so that RoIs on the same cells can be
pooled once.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import torch
from torch import Tensor
from torchvision import ops

# Below this many RoIs per thread the threads' start-up costs more than the loop they share.
MIN_ROIS_PER_THREAD = 128


def roi_pool(features: Tensor, boxes: Tensor | list[Tensor], output_size: int, spatial_scale: float) -> Tensor:
    """``torchvision.ops.roi_pool(features, boxes, output_size, spatial_scale)`` (same arguments: N x C x h x w
    maps; a K x 5 tensor of (image index, x1, y1, x2, y2) or a list of each image's boxes), with the RoIs shared
    among ``torch.get_num_threads()`` threads on CPU."""
    rois = boxes if isinstance(boxes, Tensor) else _with_image_index(boxes)
    # A graph being exported holds one roi_pool: its number of RoIs is not known before it runs.
    if features.device.type != "cpu" or torch.compiler.is_exporting():
        return ops.roi_pool(features, rois, output_size, spatial_scale)
    threads = min(torch.get_num_threads(), len(rois) // MIN_ROIS_PER_THREAD)
    if threads <= 1:
        return ops.roi_pool(features, rois, output_size, spatial_scale)
    # Grad and inference modes are per thread: the workers take the caller's.
    grad_enabled, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()

    def pool(share: Tensor) -> Tensor:
        with torch.inference_mode(inference), torch.set_grad_enabled(grad_enabled):
            return ops.roi_pool(features, share, output_size, spatial_scale)

    with ThreadPoolExecutor(threads) as executor:
        return torch.cat(list(executor.map(pool, rois.chunk(threads))))


def _with_image_index(boxes: list[Tensor]) -> Tensor:
    """Each image's R_i x 4 boxes -> one sum(R_i) x 5 tensor led by the image's index (torchvision's RoI format)."""
    return torch.cat([torch.cat([torch.full_like(box[:, :1], i), box], 1) for i, box in enumerate(boxes)])


def roi_pool_windows(rois: Tensor, spatial_scale: float) -> Tensor:
    """R x 4 RoIs -> the R x 4 feature-map cells ``torchvision.ops.roi_pool`` quantises them to: C's ``round`` of
    each coordinate times the scale, halves away from zero (``torch.round`` would round them to even)."""
    scaled = (rois * spatial_scale).abs()
    floor = scaled.floor()
    rounded = torch.where(scaled - floor == 0.5, floor + 1, scaled.round())
    return (rounded * rois.sign()).to(torch.int64)
