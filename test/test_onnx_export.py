"""ONNX export of the whole ``predict`` (``engine.onnx``) on tiny random models.

The graph contract (names, static shapes, dtypes, opset, metadata) read back from the file and from an onnxruntime
session; onnxruntime CPU against the eager ``model.predict`` (depth within 0.1 mm, identical routing, including a
batch whose two images the router sends to different heads); forced indoor / outdoor graphs; where the fp16 graph
computes in fp16 and where it keeps fp32 islands, read from the graph itself; the fp16 graph run by onnx's reference
evaluator within the engine's accuracy guard; and that exporting leaves the model as it was.

Exports are slow (~10 s each), so each case below is exported once per module and shared by its tests.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from model_fixtures import tiny_model

from zoedepth_ros.engine.accuracy import MAX_MEAN_REL_DIFF, mean_relative_difference, probe_images
from zoedepth_ros.engine.onnx import export as X
from zoedepth_ros.engine.onnx.graph import ExportSpec, StaticPredict
from zoedepth_ros.model import InferenceResult, ZoeDepth, precision_of
from zoedepth_ros.model.backbone import Attention
from zoedepth_ros.model.processing import pad_reflect
from zoedepth_ros.model.router import HEADS

DEPTH_ATOL_M = 1e-4  # onnxruntime CPU vs eager torch, fp32 ...
DEPTH_RTOL = 2e-6  # ... or this fraction of the deepest depth, where that is more (K's 80 m range: 7e-5 m measured)
LOGIT_ATOL = 1e-4


@dataclass(frozen=True)
class Case:
    variant: str
    spec: ExportSpec
    scene: str  # "nyu" / "kitti": an image the tiny NK router sends there; "mixed": one of each (nyu first)
    external: bool = False  # write the weights to <file>.data (as a > 2 GB model is)


CASES = {
    "nk_640x480": Case("nk", ExportSpec(480, 640), "kitti"),
    "nk_1280x720_b2": Case("nk", ExportSpec(720, 1280, batch=2, pad_input=False), "mixed"),
    "nk_480x640_b2_pad_flip": Case("nk", ExportSpec(640, 480, batch=2, flip_aug=True), "mixed"),
    "nk_indoor": Case("nk", ExportSpec(480, 640, pad_input=False, flip_aug=True, routing="indoor"), "kitti"),
    "nk_outdoor": Case("nk", ExportSpec(720, 1280, batch=2, routing="outdoor"), "mixed"),
    "n_640x480_b2": Case("n", ExportSpec(480, 640, batch=2), "mixed"),
    "k_480x640_flip_external": Case("k", ExportSpec(640, 480, pad_input=False, flip_aug=True), "nyu", external=True),
    "nk_fp16": Case("nk", ExportSpec(48, 64, pad_input=False, precision="fp16"), "kitti"),
}
FP32_CASES = [name for name, case in CASES.items() if case.spec.precision == "fp32"]

# onnx TensorProto element types
FLOAT, INT64, FLOAT16 = 1, 7, 10


def scene(kind: str, height: int, width: int) -> torch.Tensor:
    """(B, 3, H, W) structured images; "kitti" is the fine-texture probe scene, "nyu" bright smooth blobs (the tiny
    NK router sends them to those heads with a clear margin, which the tests check rather than assume)."""
    probes = probe_images(height, width)
    images = {"kitti": probes[2], "nyu": (0.75 + 0.2 * (probes[1] - 0.5)).clamp(0, 1)}
    if kind == "mixed":
        return torch.cat([images["nyu"], images["kitti"]])
    return images[kind]


def fake_sha(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


@dataclass
class Snapshot:
    """A model's state and output before any export touched it."""

    state: dict[str, torch.Tensor]
    result: InferenceResult


@dataclass
class Exported:
    name: str
    case: Case
    model: ZoeDepth
    path: Path
    result: X.ExportResult
    image: torch.Tensor
    stale_data_removed: bool | None  # a leftover <file>.data was there before a non-external export: gone after?


SNAPSHOT_INPUT = probe_images(48, 64)[0]


def snapshot(model: ZoeDepth) -> Snapshot:
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return Snapshot(state, model.predict(SNAPSHOT_INPUT, pad_input=False, flip_aug=False, per_image=True))


@pytest.fixture(scope="module")
def onnx():
    return pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def ort():
    return pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def models() -> tuple[dict[str, ZoeDepth], dict[str, Snapshot]]:
    made: dict[str, ZoeDepth] = {}
    before: dict[str, Snapshot] = {}
    for variant in ("n", "k", "nk"):
        made[variant] = tiny_model(variant)
        before[variant] = snapshot(made[variant])
    return made, before


@pytest.fixture(scope="module")
def exported(models, tmp_path_factory, onnx):
    """name -> Exported, each case exported once (on first use) into its own folder."""
    try:
        X.check_exporter()
    except X.ExportError as e:
        pytest.skip(str(e))
    done: dict[str, Exported] = {}

    def get(name: str) -> Exported:
        if name in done:
            return done[name]
        case = CASES[name]
        model = models[0][case.variant]
        path = tmp_path_factory.mktemp(name) / f"{name}.onnx"
        stale = path.with_name(path.name + X.DATA_SUFFIX)
        with pytest.MonkeyPatch.context() as mp:
            if case.external:
                mp.setattr(X, "_export_program", _external_data(X._export_program))
            else:
                stale.write_bytes(b"left over from an earlier export with external data")
            result = X.export_onnx(model, case.spec, path, fake_sha(name))
        s = case.spec
        image = scene(case.scene, s.height, s.width)
        assert image.shape[0] == s.batch
        done[name] = Exported(name, case, model, path, result, image, None if case.external else not stale.exists())
        return done[name]

    return get


def _external_data(export_program):
    """The real exporter, saving its weights as external data as it does for a model over protobuf's 2 GB."""

    def export(wrapper):
        program = export_program(wrapper)
        save = program.save
        program.save = lambda destination: save(destination, external_data=True)
        return program

    return export


def reference(e: Exported, head: str | None = None) -> InferenceResult:
    """The eager fused path (host routing, fp32 weights) the graph must reproduce."""
    s = e.case.spec
    return e.model.predict(e.image, pad_input=s.pad_input, flip_aug=s.flip_aug, head=head, per_image=True)


def run_ort(ort, e: Exported) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(e.path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {"image": e.image.numpy()}), strict=True))


def depth_tolerance(depth: torch.Tensor) -> float:
    return max(DEPTH_ATOL_M, DEPTH_RTOL * float(depth.max()))


def graph_heads(r: InferenceResult) -> torch.Tensor:
    """The reference's (P, B) routing as indices into HEADS (the graph's ``head`` convention)."""
    return torch.tensor([[HEADS.index(r.head_names[i]) for i in row] for row in r.head_indices.tolist()])


# ------------------------------------------------------------------------------------------------ contract


def dims(value_info) -> list:
    """A value's shape as ints, or the symbolic names / None where it is not static."""
    return [
        d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in value_info.type.tensor_type.shape.dim
    ]


@pytest.mark.parametrize("name", list(CASES))
def test_graph_contract_and_metadata(name, exported, onnx, ort):
    e = exported(name)
    s, variant = e.case.spec, e.case.variant
    multi = variant == "nk"
    passes = 2 if s.flip_aug else 1
    want = {
        "depth": (FLOAT, [s.batch, 1, s.height, s.width]),
        "head": (INT64, [passes, s.batch]),
    }
    if multi:
        want["head_logits"] = (FLOAT, [passes, s.batch, 2])

    proto = onnx.load(str(e.path), load_external_data=False)
    opset = {o.domain: o.version for o in proto.opset_import}
    assert opset.get("", opset.get("ai.onnx", 0)) >= 17
    g = proto.graph
    initializer_names = {i.name for i in g.initializer}
    inputs = [i for i in g.input if i.name not in initializer_names]
    assert [i.name for i in inputs] == ["image"]
    assert inputs[0].type.tensor_type.elem_type == FLOAT
    assert dims(inputs[0]) == [s.batch, 3, s.height, s.width]
    assert [o.name for o in g.output] == list(want)  # N and K have no head_logits
    for o in g.output:
        assert (o.type.tensor_type.elem_type, dims(o)) == want[o.name], o.name
    symbolic = [(v.name, dims(v)) for v in g.value_info if not all(isinstance(d, int) for d in dims(v))]
    assert not symbolic, f"not static: {symbolic[:5]}"

    session = ort.InferenceSession(str(e.path), providers=["CPUExecutionProvider"])
    assert [(i.name, i.shape, i.type) for i in session.get_inputs()] == [
        ("image", [s.batch, 3, s.height, s.width], "tensor(float)")
    ]
    ort_types = {FLOAT: "tensor(float)", INT64: "tensor(int64)"}
    assert [(o.name, o.shape, o.type) for o in session.get_outputs()] == [
        (k, shape, ort_types[t]) for k, (t, shape) in want.items()
    ]

    meta = {p.key: p.value for p in proto.metadata_props}
    expected = {
        "zoedepth_ros.variant": variant,
        "zoedepth_ros.checkpoint_sha256": fake_sha(name),
        "zoedepth_ros.image_size": f"{s.width}x{s.height}",
        "zoedepth_ros.batch": str(s.batch),
        "zoedepth_ros.pad_input": "true" if s.pad_input else "false",
        "zoedepth_ros.flip_aug": "true" if s.flip_aug else "false",
        "zoedepth_ros.routing": s.routing,
        "zoedepth_ros.precision": s.precision,
        "zoedepth_ros.outputs": ",".join(want),
    }
    assert {k: meta.get(k) for k in expected} == expected
    assert e.result.metadata == meta
    assert e.result.path == e.path


def test_external_data_and_atomic_replace(exported, onnx):
    """Weights beside the file when external; a stale <file>.data of an earlier export removed when not; no
    temporary files left in either folder."""
    ext = exported("k_480x640_flip_external")
    data = ext.path.with_name(ext.path.name + ".data")
    assert ext.result.external_data and data.is_file()
    assert ext.result.bytes == ext.path.stat().st_size + data.stat().st_size
    assert data.stat().st_size > 0.8 * ext.result.bytes  # the weights are there, not in the .onnx
    proto = onnx.load(str(ext.path), load_external_data=False)
    locations = {
        entry.value
        for init in proto.graph.initializer
        if init.data_location == onnx.TensorProto.EXTERNAL
        for entry in init.external_data
        if entry.key == "location"
    }
    assert locations == {data.name}  # relative: the pair can be moved together

    inner = exported("n_640x480_b2")
    assert not inner.result.external_data
    assert inner.stale_data_removed
    assert inner.result.bytes == inner.path.stat().st_size
    for e in (ext, inner):
        assert sorted(p.name for p in e.path.parent.iterdir()) == sorted(
            [e.path.name] + ([data.name] if e is ext else [])
        )


def test_failed_export_leaves_the_old_file(models, tmp_path, monkeypatch):
    pytest.importorskip("onnxscript")  # the metadata names its version
    path = tmp_path / "graph.onnx"
    path.write_bytes(b"the previous graph")

    def broken(wrapper):
        raise RuntimeError("exporter exploded\nwith a long trace")

    monkeypatch.setattr(X, "check_exporter", lambda: None)
    monkeypatch.setattr(X, "_export_program", broken)
    with pytest.raises(X.ExportError, match=r"^ONNX export at 64x48 failed: RuntimeError: exporter exploded$"):
        X.export_onnx(models[0]["nk"], ExportSpec(48, 64, pad_input=False), path)
    assert path.read_bytes() == b"the previous graph"
    assert [p.name for p in tmp_path.iterdir()] == ["graph.onnx"]


# -------------------------------------------------------------------------------------------------- parity


@pytest.mark.parametrize("name", FP32_CASES)
def test_onnxruntime_matches_torch(name, exported, ort):
    e = exported(name)
    s = e.case.spec
    ref = reference(e, head=s.head)
    out = run_ort(ort, e)

    depth_diff = float((torch.from_numpy(out["depth"]) - ref.depth).abs().max())
    print(f"{name}: max |onnxruntime - torch| depth {depth_diff:.2e} m (depth up to {float(ref.depth.max()):.2f} m)")
    assert torch.isfinite(ref.depth).all() and float(ref.depth.min()) > 0
    assert depth_diff <= depth_tolerance(ref.depth)

    heads = torch.from_numpy(out["head"])
    assert heads.dtype == torch.int64
    assert torch.equal(heads, graph_heads(ref))
    if e.case.variant == "n":
        assert torch.equal(heads, torch.zeros(s.passes, s.batch, dtype=torch.int64))
    elif e.case.variant == "k":
        assert torch.equal(heads, torch.ones(s.passes, s.batch, dtype=torch.int64))
    else:
        assert torch.allclose(torch.from_numpy(out["head_logits"]), torch.stack(ref.head_logits), atol=LOGIT_ATOL)

    if e.case.variant == "nk" and s.routing == "auto" and e.case.scene == "mixed":
        # the two images really go to different heads (in every pass), so this batch tests per-image routing
        assert graph_heads(ref).tolist() == [[0, 1]] * s.passes


@pytest.mark.parametrize(("name", "head"), [("nk_indoor", "nyu"), ("nk_outdoor", "kitti")])
def test_forced_routing_graph_is_that_head(name, head, exported, ort):
    """routing indoor / outdoor equals predict(head=...), also for images the router would send elsewhere."""
    e = exported(name)
    auto = reference(e)
    forced = reference(e, head=head)
    assert (graph_heads(auto) != HEADS.index(head)).any()  # the router alone would not have chosen it everywhere
    out = run_ort(ort, e)
    diff = float((torch.from_numpy(out["depth"]) - forced.depth).abs().max())
    print(f"{name}: max |onnxruntime - torch(head={head})| depth {diff:.2e} m")
    assert diff <= depth_tolerance(forced.depth)
    assert (torch.from_numpy(out["head"]) == HEADS.index(head)).all()
    # the router still runs and reports its logits, as predict does with a forced head
    assert torch.allclose(torch.from_numpy(out["head_logits"]), torch.stack(forced.head_logits), atol=LOGIT_ATOL)
    # and the auto depth is measurably different for the images the router sends elsewhere
    other = graph_heads(auto)[0] != HEADS.index(head)
    assert float((auto.depth[other] - forced.depth[other]).abs().max()) > 100 * DEPTH_ATOL_M


# ----------------------------------------------------------------------------------------------- precision


LOW_PRECISION = ("model.core.core.pretrained.",)  # the BEiT encoder and its reassemble stages
FP32_ISLANDS = (
    "model.core.core.scratch.",
    "model.conv2.",
    "model.seed_bin_regressors.",
    "model.seed_projector.",
    "model.projectors.",
    "model.attractors.",
    "model.conditional_log_binomial.",
    "model.patch_transformer.",
    "model.mlp_classifier.",
)
WEIGHTED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
PASS_THROUGH = ("Transpose", "Cast", "Identity", "Reshape")


def value_types(onnx, proto) -> dict[str, int]:
    """Element type of every value in the graph (shape inference fills any the exporter left out)."""
    inferred = onnx.shape_inference.infer_shapes(proto)
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.input, *g.output, *g.value_info]}
    types.update({i.name: i.data_type for i in g.initializer})
    return types


def weight_names(onnx, proto, params: dict[str, torch.Tensor]) -> dict[str, str | None]:
    """For each weighted node: the model parameter its weight input is, or None for activation x activation.

    The weight is followed back through pass-through ops to an initializer, which is named after the parameter or,
    where the exporter folded a transpose into a new constant, matched to the parameter by its values.
    """
    from onnx import numpy_helper

    producers = {out: n for n in proto.graph.node for out in n.output}
    initializers = {i.name: i for i in proto.graph.initializer}
    by_value: dict[tuple, str] = {}
    for name, p in params.items():
        for t in (p, p.t()) if p.ndim == 2 else (p,):
            a = t.contiguous().numpy()
            by_value[(a.dtype.str, a.shape, a.tobytes())] = name
    found: dict[str, str | None] = {}
    for node in proto.graph.node:
        if node.op_type not in WEIGHTED_OPS:
            continue
        value = node.input[1]
        while value not in initializers and value in producers and producers[value].op_type in PASS_THROUGH:
            value = producers[value].input[0]
        if value not in initializers:
            found[node.name] = None
            continue
        if value in params:
            found[node.name] = value
            continue
        a = numpy_helper.to_array(initializers[value])
        found[node.name] = by_value.get((a.dtype.str, a.shape, a.tobytes()), f"<unmatched {value}>")
    return found


def test_fp16_graph_keeps_fp32_islands(exported, onnx):
    e = exported("nk_fp16")
    cfg = e.model.config
    proto = onnx.load(str(e.path))
    types = value_types(onnx, proto)
    net = X.model_in_precision(e.model, "fp16")  # the weights the graph was made from
    params = {f"model.{k}": v for k, v in net.state_dict().items()}
    weights = weight_names(onnx, proto, params)
    nodes = {n.name: n for n in proto.graph.node}

    per_group: dict[str, list[int]] = {g: [] for g in LOW_PRECISION + FP32_ISLANDS}
    activation_matmuls: list[int] = []
    for node_name, weight in weights.items():
        computes_in = types[nodes[node_name].output[0]]
        if weight is None:
            activation_matmuls.append(computes_in)
            continue
        group = next((g for g in per_group if weight.startswith(g)), None)
        assert group is not None, f"{node_name}: weight {weight} belongs to no known stage"
        per_group[group].append(computes_in)
    assert all(per_group.values()), {g: len(v) for g, v in per_group.items()}  # every stage was found
    for group, computed in per_group.items():
        want = FLOAT16 if group in LOW_PRECISION else FLOAT
        assert set(computed) == {want}, f"{group}: {computed}"
    # attention score and value products: fp16 in the encoder (then an fp32 softmax), fp32 in the router
    assert sorted(activation_matmuls) == sorted(
        [FLOAT16] * 2 * cfg.backbone.depth + [FLOAT] * 2 * cfg.router.num_layers
    )

    norms = [n for n in proto.graph.node if n.op_type == "LayerNormalization"]
    softmaxes = [n for n in proto.graph.node if n.op_type == "Softmax"]
    assert len(norms) == 2 * cfg.backbone.depth + 2 * cfg.router.num_layers  # no norm decomposed out of sight
    assert len(softmaxes) >= cfg.backbone.depth + cfg.router.num_layers
    for node in norms + softmaxes:
        assert (types[node.input[0]], types[node.output[0]]) == (FLOAT, FLOAT), node.name
    assert any(t == FLOAT16 for t in types.values())


def test_fp32_graph_has_no_fp16(exported, onnx):
    e = exported("nk_640x480")
    proto = onnx.load(str(e.path))
    types = value_types(onnx, proto)
    assert len(types) > 100
    assert FLOAT16 not in types.values()
    casts = [a.i for n in proto.graph.node if n.op_type == "Cast" for a in n.attribute if a.name == "to"]
    assert FLOAT16 not in casts


def test_fp16_graph_within_the_accuracy_guard(exported, onnx):
    """onnx's reference evaluator (numpy, exact fp16 semantics) on the fp16 graph against fp32 eager torch."""
    from onnx.reference import ReferenceEvaluator

    e = exported("nk_fp16")
    ref = reference(e)
    evaluator = ReferenceEvaluator(onnx.load(str(e.path)))
    depth, heads, logits = evaluator.run(None, {"image": e.image.numpy()})
    rel = mean_relative_difference(ref.depth, torch.from_numpy(depth))
    print(f"nk_fp16: mean relative depth difference to fp32 torch {rel:.2e}")
    assert rel <= MAX_MEAN_REL_DIFF
    assert rel > 0  # it did compute in fp16
    assert torch.equal(torch.from_numpy(heads), graph_heads(ref))
    assert logits.shape == (1, 1, 2)


# ------------------------------------------------------------------------------------------- model intact


def test_export_leaves_the_model_unchanged(exported, models):
    """static_attention is undone and the weights untouched: predict is bitwise what it was before any export."""
    exported("nk_640x480")
    exported("nk_fp16")  # converts a copy, never the fp32 model
    model, before = models[0]["nk"], models[1]["nk"]
    attention = [m for m in model.modules() if isinstance(m, Attention)]
    assert len(attention) == model.config.backbone.depth
    assert all(a.static_bias is None and a.explicit is False for a in attention)
    assert precision_of(model) == "fp32"
    state = model.state_dict()
    assert state.keys() == before.state.keys()
    assert all(torch.equal(state[k], before.state[k]) for k in state)
    after = model.predict(SNAPSHOT_INPUT, pad_input=False, flip_aug=False, per_image=True)
    assert torch.equal(after.depth, before.result.depth)
    assert torch.equal(after.head_indices, before.result.head_indices)
    assert torch.equal(torch.stack(after.head_logits), torch.stack(before.result.head_logits))


# ---------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"height": 0, "width": 640}, "size must be positive"),
        ({"height": 480, "width": -1}, "size must be positive"),
        ({"height": 480, "width": 640, "batch": 0}, "batch size must be at least 1"),
        ({"height": 480, "width": 640, "routing": "sideways"}, "unknown routing 'sideways'"),
        ({"height": 480, "width": 640, "precision": "int8"}, "unknown precision 'int8'"),
        ({"height": 4, "width": 640}, "too small for reflect padding"),
        ({"height": 480, "width": 4}, "too small for reflect padding"),
    ],
)
def test_export_spec_rejects(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ExportSpec(**kwargs)


def test_export_spec_padding_limit_is_predicts():
    """The smallest size the spec accepts with padding is the smallest that predict's reflect padding accepts."""
    with pytest.raises(ValueError):
        pad_reflect(torch.zeros(1, 3, 4, 640))
    pad_reflect(torch.zeros(1, 3, 5, 640))
    assert ExportSpec(5, 640).padded_size[0] > 5
    assert ExportSpec(4, 640, pad_input=False).padded_size == (4, 640)


@pytest.mark.parametrize("variant", ["n", "k"])
@pytest.mark.parametrize("routing", ["indoor", "outdoor"])
def test_routing_needs_an_nk_model(variant, routing, models):
    with pytest.raises(ValueError, match="needs an NK model"):
        StaticPredict(models[0][variant], ExportSpec(48, 64, routing=routing))
    StaticPredict(models[0]["nk"], ExportSpec(48, 64, routing=routing))  # the NK model takes it
