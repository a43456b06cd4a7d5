"""Write one ONNX file for (weights, ``ExportSpec``): the graph contract, static shapes, metadata, atomic.

The file is self-describing: ``metadata_props`` hold the variant, the checkpoint's SHA-256, the size, batch,
options, precision and the versions that made it, so that any runtime (or a person) can tell what it computes
without our Python code. Weights go to ``<file>.data`` beside it when the model would pass protobuf's 2 GB limit
(BEiT-L with its per-size attention biases does); the two files then belong together.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from ... import __version__
from ...model import ZoeDepth, precision_of, set_precision
from ...model.torch_compat import ONNX_DYNAMO_EXPORT, onnx_export
from .graph import INPUT, ExportSpec, StaticPredict, output_names

OPSET = 18  # >= 17 (LayerNormalization); what TensorRT 8.6+ and onnxruntime 1.16+ parse
DATA_SUFFIX = ".data"

log = logging.getLogger(__name__)


class ExportError(RuntimeError):
    """The model could not be exported (a missing library, an old torch, or the exporter failed)."""


@dataclass(frozen=True)
class ExportResult:
    path: Path
    seconds: float
    bytes: int  # the .onnx plus its external data
    external_data: bool
    metadata: dict[str, str]


def check_exporter() -> None:
    """ExportError naming what to install when this environment cannot export."""
    if not ONNX_DYNAMO_EXPORT:
        raise ExportError(
            f"exporting needs torch's torch.export-based ONNX exporter (torch >= 2.5; this is {torch.__version__}): "
            "export on a machine with a newer torch and copy the .onnx file (README, 'ONNX Runtime and TensorRT')"
        )
    for name in ("onnx", "onnxscript"):
        try:
            __import__(name)
        except ImportError:
            raise ExportError(f"exporting needs the {name} package: pip install onnx onnxscript") from None


def metadata_for(model: ZoeDepth, spec: ExportSpec, checkpoint_sha256: str) -> dict[str, str]:
    import onnxscript

    return {
        "zoedepth_ros.variant": model.config.variant,
        "zoedepth_ros.checkpoint_sha256": checkpoint_sha256,
        "zoedepth_ros.image_size": f"{spec.width}x{spec.height}",
        "zoedepth_ros.batch": str(spec.batch),
        "zoedepth_ros.pad_input": str(spec.pad_input).lower(),
        "zoedepth_ros.flip_aug": str(spec.flip_aug).lower(),
        "zoedepth_ros.routing": spec.routing,
        "zoedepth_ros.precision": spec.precision,
        "zoedepth_ros.net_size": "x".join(map(str, reversed(model.net_size_for(*spec.padded_size)))),
        "zoedepth_ros.outputs": ",".join(output_names(model)),
        "zoedepth_ros.heads": "nyu,kitti",
        "zoedepth_ros.version": __version__,
        "zoedepth_ros.torch": torch.__version__,
        "zoedepth_ros.onnxscript": onnxscript.__version__,
    }


def model_in_precision(model: ZoeDepth, precision: str) -> ZoeDepth:
    """``model`` itself when already in ``precision``, else a converted copy (the fp32 weights stay intact)."""
    if precision_of(model) == precision:
        return model
    return set_precision(copy.deepcopy(model), precision)


def export_onnx(
    model: ZoeDepth, spec: ExportSpec, path: str | os.PathLike[str], checkpoint_sha256: str = ""
) -> ExportResult:
    """Export ``model`` (fp32 or already in ``spec.precision``) to ``path`` for ``spec``; replaces ``path``.

    Written in a temporary folder beside ``path`` and moved into place, data first, so that a reader never sees
    a half-written file. Raises ValueError for a spec this model cannot run (routing on an N / K model, a size
    too elongated for the network) and ExportError (the exporter's own message as the cause) for any other
    failure.
    """
    check_exporter()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    net = model_in_precision(model, spec.precision)
    wrapper = StaticPredict(net, spec).eval()
    metadata = metadata_for(model, spec, checkpoint_sha256)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".export-") as tmp:
        staged = Path(tmp) / path.name
        try:
            with _quiet_exporter():
                program = _export_program(wrapper)
                program.model.metadata_props.update(metadata)
                program.save(staged)
        except ExportError:
            raise
        except Exception as e:
            first = (str(e).strip().splitlines() or [""])[0]
            raise ExportError(f"ONNX export at {spec.width}x{spec.height} failed: {type(e).__name__}: {first}") from e
        finally:
            del wrapper, net
        data = staged.with_name(staged.name + DATA_SUFFIX)
        external = data.exists()
        size = staged.stat().st_size + (data.stat().st_size if external else 0)
        target_data = path.with_name(path.name + DATA_SUFFIX)
        if external:
            os.replace(data, target_data)
        else:
            with contextlib.suppress(FileNotFoundError):
                target_data.unlink()
        os.replace(staged, path)
    seconds = time.monotonic() - t0
    log.info("exported %s (%.0f MB%s) in %.0f s", path, size / 1e6, ", external data" if external else "", seconds)
    return ExportResult(path, seconds, size, external, metadata)


def _export_program(wrapper: StaticPredict):
    """torch.onnx.export (torch.export based) of the wrapper, quietly: its progress lines are not ours."""
    example = wrapper.example_input().to(next(wrapper.parameters()).device)
    with wrapper.exporting(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return onnx_export(
            wrapper,
            (example,),
            opset_version=OPSET,
            input_names=[INPUT],
            output_names=list(output_names(wrapper.model)),
            verbose=False,
        )


@contextlib.contextmanager
def _quiet_exporter():
    """Send the exporter's stdout progress ("[torch.onnx] ...") to the debug log instead of the terminal."""
    buffer = io.StringIO()
    # onnx_ir warns that a constant output (the head of an N / K or forced-routing graph) is not deduplicated;
    # the exporter's registry, that torchvision (which this package never uses) is absent
    loggers = [logging.getLogger(name) for name in ("onnx_ir", "torch.onnx")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(buffer):
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
    for line in buffer.getvalue().splitlines():
        log.debug("%s", line)


def remove_export(path: str | os.PathLike[str]) -> None:
    """Delete an exported file and its external data (if any)."""
    path = Path(path)
    for p in (path, path.with_name(path.name + DATA_SUFFIX)):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


__all__ = ["DATA_SUFFIX", "OPSET", "ExportError", "ExportResult", "ExportSpec", "export_onnx", "remove_export"]
