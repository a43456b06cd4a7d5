"""The exported computation: ``ZoeDepth.predict`` for one camera size, batch size and set of options.

Everything that depends only on the size is decided here in Python (padding, network size, the BEiT attention
bias), so the graph has static shapes and its constants are data. NK runs both heads and each image takes its own
router's head on the device (``per_image``), so one graph serves any mix of indoor and outdoor images.

Graph contract (``INPUT`` / ``OUTPUTS``): ``image`` float32 (B, 3, H, W) RGB in [0, 1] -> ``depth`` float32
(B, 1, H, W) metres, ``head`` int64 (P, B) index into ``HEADS`` (nyu, kitti) per pass (P = 2 with flip), and for
NK ``head_logits`` float32 (P, B, 2).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from ...model import PRECISIONS, ZoeDepth
from ...model.backbone import static_attention
from ...model.processing import reflect_padding
from ...model.router import HEADS
from ...model.router import ROUTING_TO_HEAD as ROUTINGS

INPUT = "image"
OUTPUTS = ("depth", "head", "head_logits")


@dataclass(frozen=True)
class ExportSpec:
    """What one exported graph is fixed to (besides the weights)."""

    height: int
    width: int
    batch: int = 1
    pad_input: bool = True
    flip_aug: bool = False
    routing: str = "auto"
    precision: str = "fp32"

    def __post_init__(self) -> None:
        if self.height <= 0 or self.width <= 0:
            raise ValueError(f"image size must be positive, got {self.width}x{self.height}")
        if self.batch < 1:
            raise ValueError(f"batch size must be at least 1, got {self.batch}")
        if self.routing not in ROUTINGS:
            raise ValueError(f"unknown routing {self.routing!r}; use one of {', '.join(ROUTINGS)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; use one of {', '.join(PRECISIONS)}")
        if self.pad_input:
            pad_h, pad_w = reflect_padding(self.height, self.width)
            if pad_h >= self.height or pad_w >= self.width:
                raise ValueError(f"a {self.width}x{self.height} image is too small for reflect padding; use --no-pad")

    @property
    def head(self) -> str | None:
        return ROUTINGS[self.routing]

    @property
    def passes(self) -> int:
        return 2 if self.flip_aug else 1

    @property
    def padded_size(self) -> tuple[int, int]:
        pad_h, pad_w = reflect_padding(self.height, self.width) if self.pad_input else (0, 0)
        return self.height + 2 * pad_h, self.width + 2 * pad_w

    def tag(self) -> str:
        """A file-name-safe summary, e.g. ``640x480_b1_pad_noflip_auto_fp32``."""
        return (
            f"{self.width}x{self.height}_b{self.batch}_{'pad' if self.pad_input else 'nopad'}_"
            f"{'flip' if self.flip_aug else 'noflip'}_{self.routing}_{self.precision}"
        )


def output_names(model: ZoeDepth) -> tuple[str, ...]:
    """``head_logits`` only for NK (the one model with a router)."""
    return OUTPUTS if model.config.router is not None else OUTPUTS[:2]


class StaticPredict(nn.Module):
    """``model.predict`` at the spec's size, returning the graph's outputs as plain tensors."""

    def __init__(self, model: ZoeDepth, spec: ExportSpec) -> None:
        super().__init__()
        if spec.routing != "auto" and model.config.router is None:
            raise ValueError(f"routing {spec.routing!r} needs an NK model; this one is {model.config.variant.upper()}")
        self.model = model
        self.spec = spec
        self.head = model.resolve_head(spec.head)
        # a single-head model's index 0 means its own head; the graph reports an index into HEADS
        self.single_head = None if model.config.router is not None else HEADS.index(model.heads[0])

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        s = self.spec
        r = self.model.predict(
            image, pad_input=s.pad_input, flip_aug=s.flip_aug, head=self.head, route_on_device=True, per_image=True
        )
        heads = r.head_indices if self.single_head is None else torch.full_like(r.head_indices, self.single_head)
        outputs = (r.depth.float(), heads.to(torch.int64))
        if r.head_logits:
            outputs += (torch.stack(r.head_logits).float(),)
        return outputs

    def example_input(self) -> torch.Tensor:
        s = self.spec
        return torch.rand(s.batch, 3, s.height, s.width, generator=torch.Generator().manual_seed(0))

    @contextmanager
    def exporting(self) -> Iterator[None]:
        """Fixed attention biases for the network size this spec runs at (see ``backbone.static_attention``)."""
        net_h, net_w = self.model.net_size_for(*self.spec.padded_size)
        patch = self.model.config.backbone.patch_size
        with static_attention(self.model.core.core.pretrained.model, (net_h // patch, net_w // patch)):
            yield
