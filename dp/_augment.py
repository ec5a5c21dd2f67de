"""Augmented views of image batches, for augmentation multiplicity (De et al. 2022).

:func:`augment_views` turns a batch of ``B`` images into ``B * views`` randomly augmented
copies (each sample's views consecutive): a random crop of the image padded by reflection
(a shift of up to ``padding`` pixels each way) and a random horizontal flip. Both keep a
28x28 grayscale medical image plausible (no colour jitter, no rotation of anatomy beyond a
mirror image). The augmentation is data-independent randomness: it touches no privacy
parameter, and under DP-SGD the views of one sample are averaged into one gradient before
clipping (:class:`dp.SampleLevelDPClient` with ``augmult``), so one sample still
contributes one clipped gradient per step.
"""

from __future__ import annotations

import torch
from torch.nn import functional

from dp._errors import InvalidDPConfigError

__all__ = ["augment_views"]


def augment_views(
    features: torch.Tensor,
    *,
    views: int,
    padding: int = 2,
    flip: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``views`` random crop-and-flip copies of each image of ``features`` (N, C, H, W).

    Returns a tensor of shape ``(N * views, C, H, W)`` whose rows ``i * views`` to
    ``(i + 1) * views - 1`` are the views of image ``i``. ``generator`` (tests) seeds the
    crops and flips; otherwise torch's global generator is used.
    """
    if isinstance(views, bool) or not isinstance(views, int) or views < 1:
        raise InvalidDPConfigError(f"views must be an int >= 1, got {views!r}")
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise InvalidDPConfigError(f"padding must be an int >= 0, got {padding!r}")
    if features.dim() != 4:
        raise InvalidDPConfigError(
            f"augmentation needs images (N, C, H, W), got a tensor of shape {tuple(features.shape)}"
        )
    count, _, height, width = features.shape
    if padding >= min(height, width):
        raise InvalidDPConfigError(f"padding must be < the image side, got {padding}")
    repeated = features.repeat_interleave(views, dim=0)
    total = count * views
    if total == 0:
        return repeated
    device = features.device
    if padding:
        padded = functional.pad(repeated, (padding,) * 4, mode="reflect")
        shifts = torch.randint(
            0, 2 * padding + 1, (total, 2), generator=generator, device=_generator_device(generator)
        ).to(device)
        rows = shifts[:, 0, None] + torch.arange(height, device=device)  # (total, H)
        cols = shifts[:, 1, None] + torch.arange(width, device=device)  # (total, W)
        index = torch.arange(total, device=device)[:, None, None]
        # (total, H, W, C) -> (total, C, H, W)
        repeated = padded.permute(0, 2, 3, 1)[index, rows[:, :, None], cols[:, None, :]]
        repeated = repeated.permute(0, 3, 1, 2).contiguous()
    if flip:
        mirror = torch.rand(total, generator=generator, device=_generator_device(generator)) < 0.5
        mirror = mirror.to(device)
        repeated = torch.where(mirror[:, None, None, None], repeated.flip(-1), repeated)
    return repeated


def _generator_device(generator: torch.Generator | None) -> torch.device:
    """The device random numbers of ``generator`` are drawn on (CPU for the global one)."""
    return generator.device if generator is not None else torch.device("cpu")
