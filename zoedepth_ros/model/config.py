"""Frozen architecture configs for ZoeDepth, with the official presets and a tiny test preset.

Every field reaches the maths; constants the official code ignores its own config for (the attractor
strength that is effectively 300, the attractor kind) live as named constants in ``metric_bins.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

VARIANTS = ("n", "k", "nk")
BIN_CENTER_TYPES = ("softplus", "normed")


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ValueError(message)


@dataclass(frozen=True)
class BackboneConfig:
    """BEiT ViT with per-block relative position bias (MiDaS 'beitl16_384')."""

    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    mlp_dim: int = 4096
    patch_size: int = 16
    pretrain_grid: int = 24  # patch grid the relative-position table was trained on (384 / 16)

    def __post_init__(self) -> None:
        _check(
            self.embed_dim > 0 and self.num_heads > 0 and self.embed_dim % self.num_heads == 0,
            f"embed_dim {self.embed_dim} must be a positive multiple of num_heads {self.num_heads}",
        )
        _check(self.depth >= 4 and self.depth % 4 == 0, f"depth must be a multiple of 4, got {self.depth}")
        _check(
            self.mlp_dim > 0 and self.patch_size > 0 and self.pretrain_grid > 0,
            "mlp_dim, patch_size and pretrain_grid must be positive",
        )

    @property
    def hook_blocks(self) -> tuple[int, int, int, int]:
        """Blocks whose outputs feed the decoder: 5, 11, 17, 23 for 24 blocks (evenly spaced)."""
        q = self.depth // 4
        return (q - 1, 2 * q - 1, 3 * q - 1, 4 * q - 1)


@dataclass(frozen=True)
class DecoderConfig:
    """DPT reassemble + fusion decoder and MiDaS relative-depth head."""

    level_dims: tuple[int, int, int, int] = (256, 512, 1024, 1024)  # reassembled widths per level
    features: int = 256  # fusion width
    head_dim: int = 128  # first conv of the relative head (features // 2 upstream)
    relative_dim: int = 32  # the 32-channel activation ZoeDepth feeds to its metric head

    def __post_init__(self) -> None:
        _check(len(self.level_dims) == 4 and all(d > 0 for d in self.level_dims), "level_dims needs 4 positive widths")
        _check(min(self.features, self.head_dim, self.relative_dim) > 0, "decoder widths must be positive")


@dataclass(frozen=True)
class BinHead:
    """One metric-bins head: its domain name and the depth range its bins are built for."""

    name: str
    min_depth: float
    max_depth: float

    def __post_init__(self) -> None:
        _check(self.name in ("nyu", "kitti"), f"head name must be 'nyu' or 'kitti', got {self.name!r}")
        _check(0 < self.min_depth < self.max_depth, f"need 0 < min_depth < max_depth for head {self.name}")


@dataclass(frozen=True)
class MetricConfig:
    """Metric bins module: seed bins, projectors, attractors and conditional log-binomial."""

    heads: tuple[BinHead, ...] = (BinHead("nyu", 1e-3, 10.0),)
    bin_centers: str = "softplus"
    n_bins: int = 64
    bin_embedding_dim: int = 128
    n_attractors: tuple[int, ...] = (16, 8, 4, 1)
    seed_mlp_dim: int = 256
    projector_mlp_dim: int = 128
    attractor_mlp_dim: int = 128
    clb_hidden_dim: int = 80  # (in + condition) // bottleneck_factor upstream: 161 // 2 (N), 160 // 4 (NK)
    use_relative_depth: bool = True  # N/K concatenate MiDaS relative depth to the 32-channel activation
    min_temp: float = 0.0212
    max_temp: float = 50.0

    def __post_init__(self) -> None:
        _check(self.bin_centers in BIN_CENTER_TYPES, f"bin_centers must be one of {BIN_CENTER_TYPES}")
        _check(len(self.heads) in (1, 2), "one or two bin heads are supported")
        _check(len({h.name for h in self.heads}) == len(self.heads), "head names must be unique")
        _check(
            len(self.n_attractors) == 4 and all(n > 0 for n in self.n_attractors),
            "n_attractors needs 4 positive counts (one per decoder level)",
        )
        _check(
            min(
                self.n_bins,
                self.bin_embedding_dim,
                self.seed_mlp_dim,
                self.projector_mlp_dim,
                self.attractor_mlp_dim,
                self.clb_hidden_dim,
            )
            > 0,
            "metric head widths must be positive",
        )
        _check(0 < self.min_temp < self.max_temp, "need 0 < min_temp < max_temp")


@dataclass(frozen=True)
class RouterConfig:
    """NK latent classifier: a small post-norm transformer over the bottleneck plus an MLP."""

    embed_dim: int = 128
    num_heads: int = 4
    num_layers: int = 4
    ffn_dim: int = 1024

    def __post_init__(self) -> None:
        _check(self.embed_dim % 2 == 0, "router embed_dim must be even (sin/cos halves)")
        _check(self.embed_dim % self.num_heads == 0, "router embed_dim must be a multiple of num_heads")
        _check(self.num_layers > 0 and self.ffn_dim > 0, "router needs layers and a positive ffn_dim")


@dataclass(frozen=True)
class ZoeDepthConfig:
    """A whole ZoeDepth model. ``net_size`` is the (H, W) the input is resized around."""

    variant: str = "nk"
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    metric: MetricConfig = field(default_factory=MetricConfig)
    router: RouterConfig | None = None
    net_size: tuple[int, int] = (384, 512)
    keep_aspect: bool = True  # official "infer" mode; "eval" mode resizes to exactly net_size

    def __post_init__(self) -> None:
        _check(self.variant in VARIANTS, f"variant must be one of {VARIANTS}, got {self.variant!r}")
        multi = len(self.metric.heads) == 2
        _check(multi == (self.variant == "nk"), "variant 'nk' needs two heads, 'n'/'k' one")
        _check(multi == (self.router is not None), "a router is needed exactly when there are two heads")
        _check((self.metric.bin_centers == "normed") == (self.variant == "k"), "only variant 'k' uses normed bins")
        if multi:
            _check([h.name for h in self.metric.heads] == ["nyu", "kitti"], "NK heads must be ordered nyu, kitti")
        _check(
            len(self.net_size) == 2 and all(s > 0 and s % 32 == 0 for s in self.net_size),
            f"net_size must be two positive multiples of 32, got {self.net_size}",
        )

    @property
    def head_names(self) -> tuple[str, ...]:
        return tuple(h.name for h in self.metric.heads)


# Official presets (ZoeD_M12_*). ZoeD_K deliberately uses max_depth 80 m: the official "infer" config builds
# it with 10 m (no dataset passed), which clips outdoor depth ~10x too small (ZoeDepth issues #28, #139).
ZOED_N = ZoeDepthConfig(variant="n")
ZOED_K = ZoeDepthConfig(
    variant="k",
    metric=MetricConfig(heads=(BinHead("kitti", 1e-3, 80.0),), bin_centers="normed"),
    net_size=(384, 768),
)
ZOED_NK = ZoeDepthConfig(
    variant="nk",
    metric=MetricConfig(
        heads=(BinHead("nyu", 1e-3, 10.0), BinHead("kitti", 1e-3, 80.0)),
        n_attractors=(16, 16, 16, 16),  # upstream passes the list position as n_bins; every level gets 16
        seed_mlp_dim=64,
        projector_mlp_dim=64,
        clb_hidden_dim=40,
        use_relative_depth=False,
    ),
    router=RouterConfig(),
)
PRESETS = {"n": ZOED_N, "k": ZOED_K, "nk": ZOED_NK}


def tiny_config(variant: str = "nk") -> ZoeDepthConfig:
    """A few-MB model with the official layout and attractor counts, for tests and CPU smoke runs."""
    base = PRESETS[variant]
    rel_dim = 8
    metric = replace(
        base.metric,
        n_bins=16,
        bin_embedding_dim=16,
        seed_mlp_dim=16,
        projector_mlp_dim=16,
        attractor_mlp_dim=16,
        clb_hidden_dim=(rel_dim + int(base.metric.use_relative_depth) + 16) // (2 if variant != "nk" else 4),
    )
    return replace(
        base,
        backbone=BackboneConfig(embed_dim=32, depth=4, num_heads=2, mlp_dim=64),
        decoder=DecoderConfig(level_dims=(16, 32, 64, 64), features=32, head_dim=16, relative_dim=rel_dim),
        metric=metric,
        router=RouterConfig(embed_dim=16, num_heads=4, num_layers=2, ffn_dim=32) if variant == "nk" else None,
    )
