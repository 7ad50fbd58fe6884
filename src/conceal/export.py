"""ONNX export of what a method releases (the ``apply`` path), for runtimes without torch.

One small wrapper module per method turns its release into a graph of plain tensors:

- concealer: images + the attributes to render (labels and "unspecified" masks) -> released, codes;
- masker: images -> released (the masked images);
- anonymizer: images -> released (the reconstruction, gray in 3 channels), codes.

Every graph takes ``images`` (N, 3, S, S) float32 in [0, 1] (NCHW, RGB) and returns float32 in [0, 1];
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

import numpy as np
import torch
from torch import nn

from .errors import ExportError
from .methods import METHODS, Method, ModelAPI
from .methods.anonymizer import AIA
from .methods.concealer import Concealer, ConcealVAE
from .methods.masker import MaskGenerator

OPSET = 17


class ConcealerGraph(nn.Module):
    """images (N, 3, S, S), labels (N, L) float, unspecified (N, L) bool -> released (N, 3, S, S), codes (N, latent).

    Column j of ``labels``/``unspecified`` is the j-th label of the model's concealed schema, in the
    dataset's units (class index, 0/1, or a number in range; NaN = unknown = unspecified).
    """

    def __init__(self, vae: ConcealVAE):
        super().__init__()
        self.vae = vae
        self.names = vae.concealed.names

    def forward(self, images: torch.Tensor, labels: torch.Tensor, unspecified: torch.Tensor):
        codes = self.vae.release_codes(images)  # μ (after the eraser, if any): what `conceal encode` releases
        columns = {name: labels[:, j] for j, name in enumerate(self.names)}
        masks = {name: unspecified[:, j] for j, name in enumerate(self.names)}
        return self.vae.decode(codes, columns, masks), codes


class MaskerGraph(nn.Module):
    """images (N, 3, S, S) -> released m_topK ⊙ x (N, 3, S, S)."""

    def __init__(self, generator: MaskGenerator):
        super().__init__()
        self.generator = generator

    def forward(self, images: torch.Tensor):
        return self.generator(images)


class AnonymizerGraph(nn.Module):
    """images (N, 3, S, S) -> released reconstruction (N, 3, S, S) (gray, replicated), codes g (N, code_dim)."""

    def __init__(self, aia: AIA):
        super().__init__()
        self.aia = aia

    def forward(self, images: torch.Tensor):
        codes = self.aia.release_codes(images)  # g (after the eraser, if any): what `conceal encode` releases
        # expand() would export as a view the runtime may not copy; repeat gives a real (N, 3, S, S).
        return self.aia.decode(codes).repeat(1, 3, 1, 1), codes


GRAPHS: dict[str, type[nn.Module]] = {
    ConcealVAE.name: ConcealerGraph,
    MaskGenerator.name: MaskerGraph,
    AIA.name: AnonymizerGraph,
}
assert set(GRAPHS) == set(METHODS), "every registered method needs an export graph"


def graph_of(method: Method) -> nn.Module:
    """The method's release as an exportable module, in eval mode."""
    try:
        return GRAPHS[method.name](method.eval()).eval()
    except KeyError:
        raise ExportError(f"no ONNX export for method {method.name!r}") from None


def input_names(method: Method) -> list[str]:
    return ["images", "labels", "unspecified"] if method.name == ConcealVAE.name else ["images"]


def output_names(method: Method) -> list[str]:
    # Not "images": an output named like an input makes the exporter rename the input.
    return ["released", "codes"] if "codes" in method.releases else ["released"]


def example_inputs(method: Method, batch: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random inputs of the graph's shapes: images in [0, 1] and, for the concealer, valid labels."""
    g = torch.Generator().manual_seed(seed)
    s = method.image_size
    inputs = {"images": torch.rand(batch, 3, s, s, generator=g)}
    if method.name == ConcealVAE.name:
        columns = []
        for label in method.concealed:  # type: ignore[attr-defined]
            if label.kind == "continuous":
                lo, hi = label.range
                columns.append(lo + (hi - lo) * torch.rand(batch, generator=g))
            else:
                columns.append(torch.randint(0, label.n_classes, (batch,), generator=g).float())
        inputs["labels"] = torch.stack(columns, dim=1)  # (N, L)
        inputs["unspecified"] = torch.rand(batch, len(columns), generator=g) < 0.3  # (N, L) bool
    return inputs


def api_inputs(model: ModelAPI, images: np.ndarray, **options) -> dict[str, np.ndarray]:
    """What ``model.apply(images, **options)`` feeds the graph, as numpy (the onnxruntime feed).

    images (N, S, S, 3) uint8 -> {"images": (N, 3, S, S) float32, and for a concealer "labels" (N, L)
    float32, "unspecified" (N, L) bool built from ``as_`` exactly as the API does}.
    """
    images = model.check_images(images)
    feed = {"images": np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(255.0)}
    if isinstance(model, Concealer):
        labels, unspecified = model.attribute_tensors(options.get("as_") or {}, len(images))
        names = model.schema.names
        feed["labels"] = torch.stack([labels[n] for n in names], dim=1).cpu().numpy().astype(np.float32)
        feed["unspecified"] = torch.stack([unspecified[n] for n in names], dim=1).cpu().numpy()
    return feed


def describe_inputs(method: Method) -> dict[str, str]:
    """Input name -> what it holds; written into the ONNX metadata and printed by ``conceal export``."""
    s = method.image_size
    out = {"images": f"(N, 3, {s}, {s}) float32 RGB in [0, 1]"}
    if method.name == ConcealVAE.name:
        cols = []
        for label in method.concealed:  # type: ignore[attr-defined]
            if label.kind == "continuous":
                cols.append(f"{label.name} (number in {label.range[0]:g}..{label.range[1]:g})")
            else:
                cols.append(f"{label.name} (class index: {', '.join(f'{i}={c}' for i, c in enumerate(label.classes))})")
        out["labels"] = f"(N, {len(cols)}) float32, columns: " + "; ".join(cols) + "; NaN = unspecified"
        out["unspecified"] = f"(N, {len(cols)}) bool, same columns: true = render this attribute as unspecified"
    return out


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
