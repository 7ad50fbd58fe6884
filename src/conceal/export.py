"""ONNX export of what a method releases (the ``apply`` path), for runtimes without torch.

Each method declares its release as a ``ReleaseGraph`` (``Method.Graph``, beside the method in its own
module): a module of plain tensors with its named inputs. This module exports any of them alike.

Every graph takes ``images`` (N, 3, S, S) float32 in [0, 1] (NCHW, RGB) (the concealer also the attributes
to render) and returns float32 ``released`` in [0, 1], then ``codes`` for a method that releases codes;
rounding to uint8 is the caller's, as in ``ModelAPI``. The batch axis is dynamic. The masker's top-K% is a
hard selection: where two pixels' mask values differ by less than float rounding (~1e-7), onnxruntime
and torch may release a different one of the two. What each input means
(label order and encoding) is written into the file's metadata, so the .onnx file documents itself.

The legacy TorchScript exporter is used (``dynamo=False``): it needs neither onnxscript nor
``torch.export``'s tracing of these models, exports a tiny model in well under a second, and is still
shipped by every torch the project allows (``torch<=2.13.0``).
"""

from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from .errors import ExportError

if TYPE_CHECKING:  # export works on any method's Graph and sits below the methods (their APIs use it)
    from .methods import Method, ModelAPI

OPSET = 17




def graph_of(method: Method) -> nn.Module:
    """The method's release as an exportable module, in eval mode."""
    return method.Graph(method.eval()).eval()


def input_names(method: Method) -> list[str]:
    return list(method.Graph.inputs)


def output_names(method: Method) -> list[str]:
    # Not "images": an output named like an input makes the exporter rename the input.
    return ["released", "codes"] if "codes" in method.releases else ["released"]


def example_inputs(method: Method, batch: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random valid inputs of the graph's shapes (images in [0, 1], and e.g. the concealer's labels)."""
    return method.Graph.example_inputs(method, batch, torch.Generator().manual_seed(seed))


def api_inputs(model: ModelAPI, images: np.ndarray, **options) -> dict[str, np.ndarray]:
    """What ``model.apply(images, **options)`` feeds the graph, as numpy (the onnxruntime feed): images
    (N, S, S, 3) uint8 -> {"images": (N, 3, S, S) float32, and the graph's other inputs, built as the API does}."""
    return model.method.Graph.api_feed(model, model.check_images(images), **options)


def describe_inputs(method: Method) -> dict[str, str]:
    """Input name -> what it holds; written into the ONNX metadata and printed by ``conceal export``."""
    return method.Graph.describe_inputs(method)


def _export(method: Method, target, opset: int = OPSET) -> None:
    """The method's release graph (dynamic batch) into ``target`` (a path or a binary file object)."""
    graph = graph_of(method)
    example = example_inputs(method, 2)
    ins, outs = input_names(method), output_names(method)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer warnings say nothing here
        torch.onnx.export(
            graph, tuple(example[n] for n in ins), target, dynamo=False, opset_version=opset,
            input_names=ins, output_names=outs, dynamic_axes={n: {0: "N"} for n in ins + outs},
        )


def export_onnx(method: Method, path: str | Path, opset: int = OPSET) -> Path:
    """Write the method's release graph to ``path`` (dynamic batch), with self-describing metadata."""
    try:
        import onnx
    except ImportError:
        raise ExportError("ONNX export needs the export extra: pip install 'conceal[export]'") from None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir():
        raise ExportError(f"{path} is a folder: give the .onnx file's name")
    tmp = path.with_name(f".{path.name[:32]}.{os.getpid()}.tmp")  # short: a long output name still fits
    try:
        _export(method, str(tmp), opset)
        proto = onnx.load(str(tmp))
        meta = {
            "conceal.method": method.name,
            "conceal.image_size": str(method.image_size),
            "conceal.inputs": json.dumps(describe_inputs(method)),
            "conceal.outputs": json.dumps(output_names(method)),
        }
        for key, value in meta.items():
            proto.metadata_props.add(key=key, value=value)
        onnx.save(proto, str(tmp))
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)  # a failed export leaves nothing behind
    return path


def onnx_session(path: str | Path | bytes, threads: int | None = None):
    """An onnxruntime CPU session on ``path`` (or a serialised model), with ``threads`` intra-op threads (default: torch's)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ExportError("running ONNX models needs the export extra: pip install 'conceal[export]'") from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    model = path if isinstance(path, bytes) else str(path)
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


class OnnxRelease:
    """The method's release graph on onnxruntime, exported in memory: what ``ModelAPI.apply`` runs where
    onnxruntime is the faster backend (``Method.fastest_backend``). Export it after any inference folds
    (``blocks.fold_for_inference``): onnxruntime runs the graph it is given."""

    def __init__(self, method: Method, threads: int | None = None):
        try:
            import onnxruntime  # noqa: F401  (onnx_session raises the one-line error; checked before exporting)
        except ImportError:
            raise ExportError("the onnxruntime backend needs the export extra: pip install 'conceal[export]'") from None
        buffer = io.BytesIO()
        _export(method, buffer)
        self.session = onnx_session(buffer.getvalue(), threads)

    def released(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        """The graph's inputs (``api_inputs``) -> released images (N, 3, S, S) float32 in [0, 1]."""
        return self.session.run(["released"], feed)[0]


def max_difference(method: Method, session, batch: int = 3, seed: int = 0) -> float:
    """Largest |onnxruntime - torch| over every output, on random inputs of ``batch`` rows."""
    inputs = example_inputs(method, batch, seed)
    with torch.inference_mode():
        expected = graph_of(method)(*(inputs[n] for n in input_names(method)))
    expected = expected if isinstance(expected, tuple) else (expected,)
    got = session.run(None, {n: inputs[n].numpy() for n in input_names(method)})
    return max(float(np.abs(g - e.numpy()).max()) for g, e in zip(got, expected))
