"""The oldest torch the package supports (``torch_compat.OLDEST_TORCH``, NVIDIA's JetPack 6.0 wheels) and the
fallbacks that make it work there.

Two kinds of checks. The audit: every torch name the package touches is listed in ``AUDITED`` with the first torch
release that has it, so a new one cannot slip in unchecked against the floor, and names newer than the floor may
only be touched in ``model/torch_compat.py``; on the installed torch, every name it should have resolves and every
keyword we pass exists (run on the floor torch, that is the real check). The fallbacks: with the newer APIs hidden
(monkeypatched away), ``torch_compat`` gives the same classes and the same tensors as the native ones.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import re
from collections import defaultdict
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from model_fixtures import randomize_, tiny_model

from zoedepth_ros.engine import failures
from zoedepth_ros.engine.runtime import CallKey, CompileError, DepthRunner
from zoedepth_ros.model import ForwardOutput, InferenceResult, ZoeDepth, tiny_config, torch_compat

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "zoedepth_ros"
COMPAT = PACKAGE / "model" / "torch_compat.py"
OLD = "<=1.13"  # long before the floor: not worth a more precise date

# Every torch name the package uses -> the first torch release that has it (as the package uses it: keywords
# included, e.g. torch.load(mmap=) is 2.1). Names newer than the floor are only used in torch_compat.py.
AUDITED: dict[str, str] = {
    "torch.AcceleratorError": "2.8",  # pytorch#152023; torch_compat: () before it
    "torch.Generator": OLD,
    "torch.Size": OLD,
    "torch.Tensor": OLD,
    "torch.__version__": OLD,
    "torch.cuda.get_device_capability": OLD,
    "torch.int64": OLD,
    "torch.matmul": OLD,
    "torch.nn.functional.layer_norm": OLD,
    "torch.onnx.export": "2.5",  # dynamo= since 2.5; torch_compat.onnx_export says so on older torch
    "torch.aminmax": "1.11",
    "torch.arange": OLD,
    "torch.backends.cudnn.benchmark": OLD,
    "torch.bfloat16": OLD,
    "torch.cat": OLD,
    "torch.channels_last": OLD,
    "torch.clamp": OLD,
    "torch.compile": "2.0",  # fullgraph=, dynamic=, backend= since 2.0
    "torch.compiler.is_compiling": "2.3",
    "torch.cos": OLD,
    "torch.cuda.CUDAGraph": "1.10",
    "torch.cuda.Event": OLD,
    "torch.cuda.OutOfMemoryError": "1.13",
    "torch.cuda.Stream": OLD,
    "torch.cuda.current_stream": OLD,
    "torch.cuda.device": OLD,
    "torch.cuda.device_count": OLD,
    "torch.cuda.empty_cache": OLD,
    "torch.cuda.get_device_name": OLD,
    "torch.cuda.graph": "1.10",
    "torch.cuda.is_available": OLD,
    "torch.cuda.is_bf16_supported": "1.10",
    "torch.cuda.max_memory_allocated": OLD,
    "torch.cuda.memory_allocated": OLD,
    "torch.cuda.memory_reserved": OLD,
    "torch.cuda.stream": OLD,
    "torch.cuda.synchronize": OLD,
    "torch.cumsum": OLD,
    "torch.device": OLD,
    "torch.dtype": OLD,
    "torch.empty": OLD,
    "torch.equal": OLD,
    "torch.exp": OLD,
    "torch.flip": OLD,
    "torch.float16": OLD,
    "torch.float32": OLD,
    "torch.float64": OLD,
    "torch.from_numpy": OLD,  # of uint16 arrays: 2.3
    "torch.full": OLD,
    "torch.full_like": OLD,
    "torch.get_num_threads": OLD,
    "torch.inference_mode": "1.9",
    "torch.int16": OLD,
    "torch.int32": OLD,
    "torch.is_grad_enabled": OLD,
    "torch.isfinite": OLD,
    "torch.linspace": OLD,
    "torch.load": "2.1",  # weights_only= 1.13, mmap= 2.1
    "torch.log": OLD,
    "torch.long": OLD,
    "torch.manual_seed": OLD,
    "torch.meshgrid": "1.10",  # indexing=
    "torch.nn": OLD,
    "torch.nn.Conv2d": OLD,
    "torch.nn.ConvTranspose2d": OLD,
    "torch.nn.GELU": OLD,
    "torch.nn.LayerNorm": OLD,
    "torch.nn.Linear": OLD,
    "torch.nn.Module": OLD,
    "torch.nn.ModuleDict": OLD,
    "torch.nn.ModuleList": OLD,
    "torch.nn.Parameter": OLD,
    "torch.nn.ReLU": OLD,
    "torch.nn.Sequential": OLD,
    "torch.nn.Softplus": OLD,
    "torch.nn.TransformerEncoder": OLD,  # enable_nested_tensor=
    "torch.nn.TransformerEncoderLayer": OLD,
    "torch.nn.functional.interpolate": OLD,
    "torch.nn.functional.linear": OLD,
    "torch.nn.functional.pad": OLD,  # reflect on CPU fp16: after 2.3 (torch_compat.reflect_pad)
    "torch.nn.functional.relu": OLD,
    "torch.nn.functional.scaled_dot_product_attention": "2.0",
    "torch.nn.init.constant_": OLD,
    "torch.nn.init.trunc_normal_": OLD,
    "torch.nn.init.zeros_": OLD,
    "torch.no_grad": OLD,
    "torch.ones": OLD,
    "torch.rand": OLD,
    "torch.save": OLD,
    "torch.set_num_threads": OLD,
    "torch.sign": OLD,
    "torch.sin": OLD,
    "torch.softmax": OLD,
    "torch.sort": OLD,
    "torch.stack": OLD,
    "torch.sum": OLD,
    "torch.tensor": OLD,
    "torch.uint16": "2.3",  # encodings: 16UC1 / mono16 images
    "torch.uint8": OLD,
    "torch.version.cuda": OLD,
    "torch.where": OLD,
    "torch.zeros": OLD,
    "torch.zeros_like": OLD,
    # getattr / hasattr with a torch name (feature detection; only in torch_compat.py)
    "torch.OutOfMemoryError": "2.5",  # torch.cuda.OutOfMemoryError before it (the same class since)
}


def release(version: str) -> tuple[int, int]:
    """(major, minor) of "2.3", "<=1.13", "2.13.0+cpu" or NVIDIA's "2.4.0a0+07cecf4168.nv24.05"."""
    m = re.search(r"(\d+)\.(\d+)", version)
    assert m, version
    return int(m[1]), int(m[2])


FLOOR = release(torch_compat.OLDEST_TORCH)


# ---------------------------------------------------------------- the audit


class _Uses(ast.NodeVisitor):
    """Dotted torch names one module touches (import aliases resolved), with their line, and call keywords."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.alias: dict[str, str] = {}
        self.names: dict[str, list[str]] = defaultdict(list)
        self.keywords: dict[str, set[str]] = defaultdict(set)

    def visit_Import(self, node: ast.Import) -> None:
        for a in node.names:
            if a.name == "torch" or a.name.startswith("torch."):
                self.alias[a.asname or "torch"] = a.name if a.asname else "torch"

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.module and (node.module == "torch" or node.module.startswith("torch.")):
            for a in node.names:
                self.alias[a.asname or a.name] = f"{node.module}.{a.name}"
                self.names[f"{node.module}.{a.name}"].append(f"{self.where}:{node.lineno}")

    def dotted(self, node: ast.AST) -> str | None:
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if isinstance(node, ast.Name) and node.id in self.alias:
            return ".".join([self.alias[node.id], *reversed(parts)])
        return None

    def visit_Attribute(self, node: ast.Attribute) -> None:
        name = self.dotted(node)
        if name is None:
            self.generic_visit(node)  # e.g. x.to(torch.float32): look inside
        else:
            self.names[name].append(f"{self.where}:{node.lineno}")

    def visit_Call(self, node: ast.Call) -> None:
        func = self.dotted(node.func)
        if func is not None:
            self.keywords[func].update(k.arg for k in node.keywords if k.arg is not None)
        is_probe = isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr")
        if is_probe and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant):
            owner = self.dotted(node.args[0]) or (
                self.alias.get(node.args[0].id) if isinstance(node.args[0], ast.Name) else None
            )
            if owner is not None:
                self.names[f"{owner}.{node.args[1].value}"].append(f"{self.where}:{node.lineno}")
        self.generic_visit(node)


def package_uses() -> tuple[dict[str, list[str]], dict[str, set[str]]]:
    names: dict[str, list[str]] = defaultdict(list)
    keywords: dict[str, set[str]] = defaultdict(set)
    for path in sorted(PACKAGE.rglob("*.py")):
        uses = _Uses(str(path.relative_to(ROOT)))
        uses.visit(ast.parse(path.read_text(encoding="utf-8")))
        for name, where in uses.names.items():
            names[name] += where
        for name, kws in uses.keywords.items():
            keywords[name] |= kws
    return names, keywords


def resolve(name: str) -> object:
    obj: object = torch
    parts = name.split(".")
    for i, part in enumerate(parts[1:], start=1):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            obj = importlib.import_module(".".join(parts[: i + 1]))  # a submodule not imported yet
    return obj


def test_every_torch_api_the_package_uses_is_audited_against_the_floor():
    names, _ = package_uses()
    unaudited = sorted(set(names) - set(AUDITED))
    assert not unaudited, (
        f"torch APIs without an entry in AUDITED: {[(n, names[n][0]) for n in unaudited]}; look up the first torch "
        f"release that has each (as used here) and add it; if it is newer than {torch_compat.OLDEST_TORCH}, "
        "put a fallback in zoedepth_ros/model/torch_compat.py"
    )
    assert not sorted(set(AUDITED) - set(names)), "AUDITED lists APIs the package no longer uses; drop them"


def test_apis_newer_than_the_floor_are_only_touched_in_torch_compat():
    names, _ = package_uses()
    compat = str(COMPAT.relative_to(ROOT))
    outside = {
        name: [w for w in where if not w.startswith(compat + ":")]
        for name, where in names.items()
        if release(AUDITED.get(name, "99.0")) > FLOOR
    }
    outside = {name: where for name, where in outside.items() if where}
    assert not outside, f"use zoedepth_ros/model/torch_compat.py instead of {outside}"


def test_the_apis_this_torch_should_have_resolve():
    """On the floor torch (CI runs the newest) every name not newer than it is really there."""
    installed = release(torch.__version__)
    missing = []
    for name, first in AUDITED.items():
        if release(first) <= installed:
            try:
                resolve(name)
            except (AttributeError, ImportError):
                missing.append(name)
    assert not missing, f"torch {torch.__version__} lacks {missing}, which AUDITED dates before it"


def test_the_keywords_we_pass_exist_on_this_torch():
    """torch.load(mmap=, weights_only=), torch.compile(fullgraph=, dynamic=), nn layers' device=/dtype=, ...: each a
    named parameter of the installed torch's function (a keyword that a ``**kwargs`` takes counts as missing)."""
    _, keywords = package_uses()
    unknown = {}
    for name, kws in keywords.items():
        try:
            params = inspect.signature(resolve(name)).parameters
        except (TypeError, ValueError):  # C builtins (torch.zeros, ...) have no Python signature
            continue
        if missing := sorted(kws - set(params)):
            unknown[name] = missing
    assert not unknown, f"torch {torch.__version__} does not take these keywords: {unknown}"


def test_setup_declares_the_audited_floor():
    declared = re.findall(r"""["']torch\s*>=\s*([\d.]+)""", (ROOT / "setup.py").read_text(encoding="utf-8"))
    assert declared == [torch_compat.OLDEST_TORCH], f"setup.py: torch>={declared}, audited floor: {FLOOR}"


# ---------------------------------------------------------------- the fallbacks, with the newer APIs hidden


@pytest.fixture
def old_torch(monkeypatch: pytest.MonkeyPatch):
    """torch_compat as it is on a torch without torch.OutOfMemoryError, torch.AcceleratorError and the CPU fp16 /
    bf16 reflection-pad kernels; restored (reloaded against the real torch) afterwards."""
    native = (torch_compat.OutOfMemoryError, torch_compat.ACCELERATOR_ERRORS, torch_compat.CPU_REFLECT_PAD_UPCAST)
    monkeypatch.delattr(torch, "OutOfMemoryError", raising=False)
    monkeypatch.delattr(torch, "AcceleratorError", raising=False)
    compat = importlib.reload(torch_compat)
    monkeypatch.setattr(compat, "CPU_REFLECT_PAD_UPCAST", frozenset({torch.float16, torch.bfloat16}))
    for name in ("OutOfMemoryError", "ACCELERATOR_ERRORS"):
        monkeypatch.setattr(failures, name, getattr(compat, name))
    monkeypatch.setattr("zoedepth_ros.engine.runtime.OutOfMemoryError", compat.OutOfMemoryError)
    yield compat, native
    monkeypatch.undo()
    importlib.reload(torch_compat)


def test_without_torch_out_of_memory_error_the_cuda_one_is_caught_and_classified(old_torch):
    compat, (native_oom, _, _) = old_torch
    assert compat.OutOfMemoryError is torch.cuda.OutOfMemoryError
    assert compat.OutOfMemoryError is native_oom  # recent torch: torch.cuda.OutOfMemoryError is torch.OutOfMemoryError
    assert compat.ACCELERATOR_ERRORS == ()
    oom = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert failures.classify(oom) == "out_of_memory"
    assert failures.classify(RuntimeError("CUDA error: an illegal memory access was encountered")) == "device_error"
    assert failures.classify(RuntimeError("Expected all tensors to be on the same device, cuda:0")) is None

    runner = DepthRunner(tiny_model("n"), torch.device("cpu"), mode="eager")
    key = CallKey((1, 3, 48, 64), torch.float32, True, False, None, False)
    with pytest.raises(torch.cuda.OutOfMemoryError), runner._compiling(key):  # out-of-memory stays itself
        raise oom
    with pytest.raises(CompileError), runner._compiling(key):
        raise RuntimeError("inductor: C++ compile error")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_the_reflect_pad_fallback_gives_the_same_tensor(old_torch, dtype):
    compat, (_, _, native_upcast) = old_torch
    x = torch.randn((2, 3, 7, 9), generator=torch.Generator().manual_seed(0)).to(dtype)
    pads = (4, 4, 3, 3)
    padded = compat.reflect_pad(x, pads)
    assert padded.dtype == dtype
    assert torch.equal(padded, F.pad(x.float(), pads, mode="reflect").to(dtype))
    if dtype not in native_upcast:  # this torch has the kernel: the fallback changes nothing
        assert torch.equal(padded, F.pad(x, pads, mode="reflect"))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_tiny_model_in_low_precision_predicts_the_same_with_every_fallback(old_torch, monkeypatch, rgb, dtype):
    """A whole tiny NK model in fp16 / bf16 on the CPU, fed fp16 / bf16 (its input padding takes the pad fallback),
    through the runner; at a small network size, so that it takes a second."""
    compat, (_, _, native_upcast) = old_torch
    torch.manual_seed(4)
    model = randomize_(ZoeDepth(dataclasses.replace(tiny_config("nk"), net_size=(64, 96))), 4).eval().to(dtype)
    runner = DepthRunner(model, torch.device("cpu"), mode="eager")
    result = runner(rgb.to(dtype), flip_aug=True, per_image=True)
    assert result.depth.dtype == torch.float32 and torch.isfinite(result.depth).all()
    if dtype not in native_upcast:  # this torch has the kernel: compare with it
        monkeypatch.setattr(compat, "CPU_REFLECT_PAD_UPCAST", native_upcast)
        native = runner(rgb.to(dtype), flip_aug=True, per_image=True)
        assert torch.equal(result.depth, native.depth) and torch.equal(result.head_indices, native.head_indices)


def test_records_built_in_a_trace_are_plain_dataclasses(rgb):
    """dynamo in torch 2.3 cannot build a frozen dataclass inside a fullgraph trace (torch_compat's docstring)."""
    assert not ForwardOutput.__dataclass_params__.frozen and not InferenceResult.__dataclass_params__.frozen

    def build(x):
        out = ForwardOutput(x * 2, x.argmax(dim=1), None, None)
        return InferenceResult(out.metric_depth, out.head_index[None], (), False, ("nyu", "kitti"))

    traced = torch.compile(build, backend="eager", fullgraph=True, dynamic=False)(rgb[:, 0])
    assert dataclasses.is_dataclass(traced) and torch.equal(traced.depth, rgb[:, 0] * 2)
