"""`zoo export DIR --onnx`: an ONNX Runtime model that carries the checkpoint's stored weights themselves.

The dense graph comes from torch's ONNX exporter (`torch.onnx.export(dynamo=True)`) run on the model loaded in
materialize mode. Every compressed module's weight is then found in that graph (by value: the exporter
renames and transposes initializers) and replaced by the codec's own codes (`Codec.block_codes`, the codec
registry's export hook): 2-, 4- or 8-bit codes with one scale per block of 16-256 weights of a row, in the
layout of ONNX Runtime's block-quantized operators. int8 with one scale per row, int4 with one per group,
2:4 + int4 (a pruned weight is code 0), binary and ternary all fit, and the stored values come back exactly:
the file keeps one scale per group (float16 where that holds it exactly, as zoo stores it), which nodes the
session folds repeat over the group's blocks. 3-bit codes are written as 4-bit.

Linear layers compute with the chosen `kernel`:

  int8   (the default) nodes whose inputs are all initializers decode the codes and put each row on one
         int8 grid, as zoo's kernel mode does (loaders/kernels.py); ONNX Runtime computes them once, when the
         session starts (constant folding), so the file keeps the stored codes. The matmuls are int8 x int8
         as ONNX Runtime's own quantize_dynamic graph has them: activations quantized per tensor on the fly
         (zoo's kernel mode quantizes them per token), once for the layers that share an input (query, key,
         value: DynamicQuantizeLinear, then MatMulIntegerToFloat each), else `DynamicQuantizeMatMul`, the
         layer's bias inside the node. The fastest of the three on x86 CPUs for batches.
  nbits  `MatMulNBits` (com.microsoft) on the codes, activations quantized to int8 per block.
  exact  `MatMulNBits` with float32 activations: the outputs of materialize mode, to float rounding.

Embeddings are `GatherBlockQuantized` (com.microsoft) on 4- or 8-bit codes, decoding only the rows looked up.
Everything else (norms, biases, heads kept in float) stays in the dense graph, in float32. A codec with no
block layout (k-means codebooks, Kronecker factors) or a model whose graph the rewrite cannot follow is
refused with ExportError naming the modules; nothing is written then.

Before the folder is moved into place, onnxruntime runs it on a few sentences against zoo's materialize mode:
`exact` must agree to 1e-4 of the largest output; int8 and nbits, which quantize activations, must keep a
cosine of at least 0.95 (that catches a broken export; the figure is reported). The ONNX model's metadata
records the checkpoint's manifest hash (`zoo.manifest_sha256`). The folder is what optimum's ORTModel classes
load (model.onnx, config.json without the zoo manifest, the tokenizer files); it needs onnxruntime, not zoo.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import shutil
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from zoo.formats import Checkpoint, companion_files
from zoo.formats.codecs import BlockCodes, block_codes, codec_for
from zoo.formats.writer import ensure_writable, replace_dir, write_file_atomic, write_output_mark

from .errors import ExportError, ExportUnavailable

ONNX_FILE = "model.onnx"
KERNELS = ("int8", "nbits", "exact")
DEFAULT_KERNEL = "int8"
# the outputs optimum's ORTModel classes read, by the architecture's suffix
_OUTPUTS = {
    "ForSequenceClassification": ("logits",),
    "ForTokenClassification": ("logits",),
    "ForMaskedLM": ("logits",),
    "ForImageClassification": ("logits",),
}
_TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_MS = "com.microsoft"
_MS_OPS = ("MatMulNBits", "GatherBlockQuantized", "DynamicQuantizeMatMul", "MatMulIntegerToFloat")
# onnxruntime's checks of the written model against zoo's materialize mode
EXACT_TOLERANCE = 1e-4  # kernel 'exact': max |onnx - zoo| over max |zoo|
# int8 and nbits quantize activations, so their outputs differ from materialize mode's by design; the check
# catches a broken export (a cosine far below 1), and reports the figure. How close they come, and what that
# does to accuracy, is measured in bench/results/speed.md.
MIN_COSINE = 0.95
MAX_PROTO_BYTES = 2_000_000_000  # protobuf's limit; larger models keep their weights in model.onnx.data


@dataclass
class ExportResult:
    path: Path
    onnx_nbytes: int  # model.onnx (and its external data, if any)
    checkpoint_nbytes: int  # the checkpoint's weight files
    kernel: str
    outputs: tuple[str, ...]
    ops: dict[str, str]  # compressed module -> what carries it in the graph ("MatMulNBits, 4-bit codes, block 128")
    unused: list[str] = field(default_factory=list)  # compressed modules the exported outputs do not use
    checked: dict[str, float] | None = None  # onnxruntime vs zoo: max_rel_diff, cosine; None: not run
    manifest_sha256: str = ""


def _need(module: str):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as exc:
        raise ExportUnavailable(
            f"the ONNX export needs {module.split('.')[0]}, which is not installed",
            hint="pip install 'zoo-compress[onnx]' (onnx, onnxscript and onnxruntime)",
        ) from exc


def _outputs_for(model) -> tuple[str, ...]:
    name = type(model).__name__
    if getattr(model.config, "is_encoder_decoder", False):
        raise ExportError(
            f"{name} is an encoder-decoder model; the ONNX export writes encoder models only",
            hint="`zoo unpack` gives a dense model other exporters take",
        )
    for suffix, outputs in _OUTPUTS.items():
        if name.endswith(suffix):
            return outputs
    if name.endswith("Model"):
        return ("last_hidden_state",)
    raise ExportError(
        f"{name} cannot be exported to ONNX yet",
        hint="the export writes encoder models (feature extraction) and their sequence, token, masked-LM and "
        "image classification heads; `zoo unpack` gives a dense model other exporters take",
    )


def _inputs_for(model) -> tuple[tuple[str, ...], tuple[torch.Tensor, ...], dict[str, dict[int, str]]]:
    """Input names, example tensors and their dynamic axes: the text inputs the model's forward takes, or its
    pixel values."""
    params = inspect.signature(model.forward).parameters
    config = model.config
    if model.main_input_name == "input_ids":
        names = tuple(n for n in _TEXT_INPUTS if n in params)
        ids = torch.randint(0, int(config.vocab_size), (2, 16), generator=torch.Generator().manual_seed(0))
        tensors = tuple(
            ids if n == "input_ids" else torch.ones_like(ids) if n == "attention_mask" else torch.zeros_like(ids)
            for n in names
        )
        return names, tensors, {n: {0: "batch_size", 1: "sequence_length"} for n in names}
    if model.main_input_name == "pixel_values":
        size = config.image_size if isinstance(config.image_size, int) else config.image_size[0]
        pixels = torch.randn(
            2, int(config.num_channels), int(size), int(size), generator=torch.Generator().manual_seed(0)
        )
        return ("pixel_values",), (pixels,), {"pixel_values": {0: "batch_size"}}
    raise ExportError(
        f"{type(model).__name__} takes {model.main_input_name!r}; the ONNX export writes text and image models only"
    )


class _Outputs(torch.nn.Module):
    """The model returning the named outputs as a tuple (the graph's outputs); its inputs are the graph's."""

    def __init__(self, model, outputs: tuple[str, ...]):
        super().__init__()
        self.model, self.outputs = model, outputs

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, pixel_values=None):
        given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        given["pixel_values"] = pixel_values
        out = self.model(**{k: v for k, v in given.items() if v is not None}, return_dict=True)
        return tuple(out[name] for name in self.outputs)


@dataclass
class _Target:
    name: str  # the module
    kind: str  # "linear" or "embedding"
    stored: dict[str, torch.Tensor]
    codec: Any
    shape: tuple[int, int]
    weight: torch.Tensor  # decoded, float32 (rows, cols)


def _targets(model) -> tuple[list[_Target], list[str]]:
    """The compressed modules of a model loaded in materialize mode, and (as messages) those that cannot be
    exported."""
    from zoo.loaders.runtime import ZooEmbedding, ZooLinear, ZooModule

    targets, refused = [], []
    for name, module in model.named_modules():
        if not isinstance(module, ZooModule):
            continue
        if not isinstance(module, (ZooLinear, ZooEmbedding)) or len(module.weight_shape) != 2:
            refused.append(f"{name} ({type(module).__name__}: only linear layers and embeddings are exported)")
            continue
        if module.owner is not None:  # a tied weight (an MLM decoder): its owner's codes carry both uses
            continue
        codec = module.codec
        if codec.codec == "dense":  # kept as floats: it stays in the dense graph
            continue
        shape = (int(module.weight_shape[0]), int(module.weight_shape[1]))
        stored = module.stored()
        allowed = (4, 8) if isinstance(module, ZooEmbedding) else None
        if block_codes(stored, codec, shape, allowed) is None:
            why = "stored as factors" if codec_for(codec).factored else "no block layout ONNX Runtime computes with"
            refused.append(f"{name} ({codec.describe()}: {why})")
            continue
        kind = "embedding" if isinstance(module, ZooEmbedding) else "linear"
        weight = module.dense_weight().detach().to(torch.float32).reshape(shape)
        targets.append(_Target(name, kind, stored, codec, shape, weight))
    return targets, refused


def _digest(array) -> str:
    return hashlib.sha256(array.tobytes()).hexdigest()


def _pack(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """uint8 codes (rows, n), n a multiple of 8 // bits, packed low bits first (ONNX Runtime's order)."""
    per = 8 // bits
    rows, n = codes.shape
    c = codes.reshape(rows, n // per, per).to(torch.int32)
    shifts = torch.arange(per, dtype=torch.int32) * bits
    return (c << shifts).sum(-1).to(torch.uint8)


class _Graph:
    """The exported graph, rewritten in place: initializers by name, consumers of each value."""

    def __init__(self, model_proto):
        self.onnx = _need("onnx")
        self.numpy_helper = _need("onnx.numpy_helper")
        self.model = model_proto
        self.graph = model_proto.graph
        self.inits = {i.name: i for i in self.graph.initializer}
        self.codes: dict[str, tuple[str, str, BlockCodes]] = {}  # module -> its codes, scales (_module_codes)
        self.prologue: list = []  # nodes on initializers only (the session folds them), placed first

    def consumers(self, value: str) -> list:
        return [n for n in self.graph.node if value in n.input]

    def array(self, name: str):
        return self.numpy_helper.to_array(self.inits[name])

    def add_init(self, tensor: torch.Tensor, name: str) -> str:
        self.graph.initializer.append(self.numpy_helper.from_array(tensor.contiguous().numpy(), name))
        return name

    def replace(self, old, new_nodes: list) -> None:
        nodes = list(self.graph.node)
        i = nodes.index(old)
        del self.graph.node[:]
        self.graph.node.extend(nodes[:i] + new_nodes + nodes[i + 1 :])

    def drop_unused_inits(self) -> None:
        used = {v for n in self.graph.node for v in n.input} | {o.name for o in self.graph.output}
        keep = [i for i in self.graph.initializer if i.name in used]
        del self.graph.initializer[:]
        self.graph.initializer.extend(keep)
        self.inits = {i.name: i for i in keep}

    def const(self, tensor: torch.Tensor, name: str) -> str:
        """A constant of the rewrite (shapes, shifts) as an initializer, once per name."""
        if name not in self.inits:
            self.inits[name] = self.numpy_helper.from_array(tensor.contiguous().numpy(), name)
            self.graph.initializer.append(self.inits[name])
        return name

    def node(self, op: str, inputs: list[str], outputs: list[str], name: str, **attrs):
        domain = _MS if op in _MS_OPS else ""
        return self.onnx.helper.make_node(op, inputs, outputs, name=name, domain=domain, **attrs)


def _module_codes(g: _Graph, t: _Target) -> tuple[str, str, BlockCodes]:
    """The module's codes and block scales, made once however many nodes read them (a tied table: the embedding's
    gather and the decoder's matmul): (codes, scales, BlockCodes), the codes an initializer of uint8 (rows,
    blocks * block * bits / 8), packed low bits first, the last block of a row padded with code 0; the scales
    a value of float32 (rows, blocks). The file stores one scale per group, in float16 where that holds them
    exactly (zoo stores them so), and nodes the session folds repeat it over the group's blocks."""
    if t.name not in g.codes:
        codes = block_codes(t.stored, t.codec, t.shape, (4, 8) if t.kind == "embedding" else None)
        assert codes is not None, "checked by _targets"
        n, k = t.shape
        blocks = -(-k // codes.block)
        padded = torch.full((n, blocks * codes.block), 1 << (codes.bits - 1), dtype=torch.uint8)
        padded[:, :k] = codes.codes
        packed = g.add_init(_pack(padded, codes.bits), f"zoo.{t.name}.codes")
        half = codes.scale.to(torch.float16)
        exact = bool(torch.equal(half.to(torch.float32), codes.scale))
        stored = g.add_init(half if exact else codes.scale, f"zoo.{t.name}.scales")
        p = f"zoo.{t.name}.block_scales"
        scales = stored
        if exact:
            scales = f"{p}.float"
            g.prologue.append(g.node("Cast", [stored], [scales], scales, to=g.onnx.TensorProto.FLOAT))
        repeat = codes.group // codes.block
        if repeat > 1:
            groups = codes.scale.shape[1]
            shape = g.const(torch.tensor([n, groups, repeat]), f"{p}.expand")
            g.prologue += [
                g.node("Unsqueeze", [scales, g.const(torch.tensor([-1]), "zoo.last_axis")], [f"{p}.e"], f"{p}.e"),
                g.node("Expand", [f"{p}.e", shape], [f"{p}.x"], f"{p}.x"),
                g.node("Reshape", [f"{p}.x", g.const(torch.tensor([n, -1]), f"{p}.rows")], [f"{p}.r"], f"{p}.r"),
                g.node(
                    "Slice",
                    [
                        f"{p}.r",
                        g.const(torch.tensor([0]), "zoo.zero1"),
                        g.const(torch.tensor([blocks]), f"{p}.end"),
                        g.const(torch.tensor([1]), "zoo.one1"),
                    ],
                    [p],
                    p,
                ),
            ]
            scales = p
        g.codes[t.name] = (packed, scales, codes)
    return g.codes[t.name]


def _linear_nodes(
    g: _Graph, t: _Target, prefix: str, x: str, out: str, kernel: str, bias: str | None = None
) -> tuple[list, str]:
    """Nodes computing out = x W^T (+ bias) from the module's codes, with the chosen kernel."""
    packed, scales, codes = _module_codes(g, t)
    n, k = t.shape
    blocks = -(-k // codes.block)
    what = f"{codes.bits}-bit codes, block {codes.block}"
    nodes: list = []
    if kernel != "int8":  # MatMulNBits reads B as (N, blocks, bytes per block), its scales flat
        level = 0 if kernel == "exact" else 4
        attrs = {"K": k, "N": n, "bits": codes.bits, "block_size": codes.block, "accuracy_level": level}
        b = f"{prefix}.b"
        product = f"{prefix}.product" if bias else out
        nodes += [
            g.node("Reshape", [packed, g.const(torch.tensor([n, blocks, -1]), f"{prefix}.b_shape")], [b], b),
            g.node("Reshape", [scales, g.const(torch.tensor([-1]), "zoo.flat")], [f"{prefix}.s"], f"{prefix}.s"),
            g.node("MatMulNBits", [x, b, f"{prefix}.s"], [product], prefix, **attrs),
        ]
        if bias:
            nodes.append(g.node("Add", [product, bias], [out], f"{prefix}.bias"))
        return nodes, f"MatMulNBits, {what}"
    # int8: the stored values, decoded and put on one int8 grid per row (zoo's kernel mode does the same,
    # loaders/kernels.py), by nodes whose inputs are all initializers, which ONNX Runtime computes once when
    # the session starts (constant folding); then DynamicQuantizeMatMul, int8 x int8 with activations
    # quantized per tensor on the fly.
    p = f"{prefix}.unpack"

    def op(kind: str, inputs: list[str], name: str, **attrs) -> str:
        nodes.append(g.node(kind, inputs, [f"{p}.{name}"], f"{p}.{name}", **attrs))
        return f"{p}.{name}"

    def const(value, name: str) -> str:
        return g.const(torch.tensor(value), f"{p}.{name}")

    u = packed
    if codes.bits < 8:  # split each byte into its 8 / bits codes, low bits first
        shifts = g.const(torch.arange(8 // codes.bits, dtype=torch.uint8) * codes.bits, f"{p}.shifts")
        mask = g.const(torch.tensor((1 << codes.bits) - 1, dtype=torch.uint8), f"{p}.mask")
        u = op(
            "BitwiseAnd",
            [
                op("BitShift", [op("Unsqueeze", [packed, const([-1], "axis")], "e"), shifts], "s", direction="RIGHT"),
                mask,
            ],
            "m",
        )
    u = op("Reshape", [u, const([n, blocks, codes.block], "shape3")], "u")
    q = op(
        "Sub", [op("Cast", [u], "f", to=g.onnx.TensorProto.FLOAT), const(float(1 << (codes.bits - 1)), "offset")], "q"
    )
    scales = op("Reshape", [scales, const([n, blocks, 1], "scale_shape")], "scales")
    w = op("Reshape", [op("Mul", [q, scales], "w3"), const([n, blocks * codes.block], "shape2")], "wp")
    w = op("Slice", [w, const([0], "start"), const([k], "end"), const([1], "axes")], "w")
    row_scale = op(
        "Div",
        [op("ReduceMax", [op("Abs", [w], "abs"), const([1], "raxes")], "amax", keepdims=1), const(127.0, "qmax")],
        "rs",
    )
    safe = op("Where", [op("Equal", [row_scale, const(0.0, "zero")], "z"), const(1.0, "one"), row_scale], "safe")
    q8 = op("Cast", [op("Round", [op("Div", [w, safe], "r")], "rr")], "q8", to=g.onnx.TensorProto.INT8)
    b = op("Transpose", [q8], "b", perm=[1, 0])
    b_scale = op("Reshape", [row_scale, const([n], "shape1")], "bs")
    nodes.append(g.node("DynamicQuantizeMatMul", [x, b, b_scale, "", bias] if bias else [x, b, b_scale], [out], prefix))
    return nodes, f"int8 x int8 on int8 rows made at session start from {what}"


def _gather_inits(g: _Graph, t: _Target) -> tuple[list[str], dict[str, Any], str]:
    packed, scales, codes = _module_codes(g, t)
    if t.shape[1] % codes.block:  # GatherBlockQuantized takes whole blocks
        raise ExportError(
            f"the embedding {t.name} has {t.shape[1]} columns, not a multiple of its {codes.block}-wide blocks",
            module=t.name,
        )
    attrs = {"bits": codes.bits, "block_size": codes.block, "gather_axis": 0, "quantize_axis": 1}
    return [packed, scales], attrs, f"GatherBlockQuantized {codes.bits}-bit, block {codes.block}"


def _attr(node, name: str, default):
    from onnx.helper import get_attribute_value

    return next((get_attribute_value(a) for a in node.attribute if a.name == name), default)


def _rewrite(g: _Graph, t: _Target, init: str, transposed: bool, kernel: str) -> list[str]:
    """Replace every use of initializer `init` (the module's weight, or its transpose) by the codes; returns
    what carries the module."""
    carried = []
    for i, node in enumerate(g.consumers(init)):
        prefix = f"zoo.{t.name}" + (f".{i}" if i else "")
        if node.op_type == "Transpose" and list(_attr(node, "perm", [1, 0])) == [1, 0]:
            g.graph.node.remove(node)
            for inner in g.consumers(node.output[0]):
                carried += _rewrite_one(g, t, inner, node.output[0], not transposed, prefix, kernel)
        else:
            carried += _rewrite_one(g, t, node, init, transposed, prefix, kernel)
    return carried


def _rewrite_one(g: _Graph, t: _Target, node, value: str, transposed: bool, prefix: str, kernel: str) -> list[str]:
    inputs = list(node.input)
    if t.kind == "embedding" and node.op_type == "Gather" and inputs[0] == value and not transposed:
        if _attr(node, "axis", 0) != 0:
            raise ExportError(f"{t.name}: a Gather along axis {_attr(node, 'axis', 0)}", module=t.name)
        names, attrs, what = _gather_inits(g, t)
        g.replace(
            node, [g.node("GatherBlockQuantized", [names[0], inputs[1], names[1]], list(node.output), prefix, **attrs)]
        )
        return [what]
    if node.op_type == "MatMul" and inputs[1] == value and transposed:
        out, bias = node.output[0], None
        after = g.consumers(out)
        if len(after) == 1 and after[0].op_type == "Add" and out not in {o.name for o in g.graph.output}:
            other = [v for v in after[0].input if v != out]
            if len(other) == 1 and other[0] in g.inits and list(g.inits[other[0]].dims) == [t.shape[0]]:
                bias, out = other[0], after[0].output[0]  # the layer's bias, added by the matmul node itself
                g.graph.node.remove(after[0])
        nodes, what = _linear_nodes(g, t, prefix, inputs[0], out, kernel, bias)
        g.replace(node, nodes)
        return [what]
    if (
        node.op_type == "Gemm"
        and inputs[1] == value
        and bool(_attr(node, "transB", 0)) != transposed
        and not _attr(node, "transA", 0)
        and _attr(node, "alpha", 1.0) == 1.0
        and _attr(node, "beta", 1.0) == 1.0
    ):
        bias = inputs[2] if len(inputs) > 2 and inputs[2] else None
        nodes, what = _linear_nodes(g, t, prefix, inputs[0], node.output[0], kernel, bias)
        g.replace(node, nodes)
        return [what]
    raise ExportError(
        f"{t.name}'s weight feeds a {node.op_type} node the export does not rewrite",
        module=t.name,
        hint="please report the model; `zoo unpack` gives a dense model other exporters take",
    )


def _share_quantized_inputs(g: _Graph) -> None:
    """Quantize an activation once for all the int8 matmuls that read it (attention's query, key and value), as
    ONNX Runtime's own quantize_dynamic does: one DynamicQuantizeLinear, then MatMulIntegerToFloat for each."""
    readers: dict[str, list] = {}
    for node in g.graph.node:
        if node.op_type == "DynamicQuantizeMatMul" and node.name.startswith("zoo."):
            readers.setdefault(node.input[0], []).append(node)
    for x, nodes in readers.items():
        if len(nodes) < 2:
            continue
        q = f"zoo.quantized.{nodes[0].name}"
        quantize = g.node("DynamicQuantizeLinear", [x], [f"{q}.x", f"{q}.scale", f"{q}.zero"], q)
        for i, node in enumerate(nodes):
            b, b_scale = node.input[1], node.input[2]
            bias = node.input[4] if len(node.input) > 4 else ""
            ins = [f"{q}.x", b, f"{q}.scale", b_scale, f"{q}.zero", ""] + ([bias] if bias else [])
            new = g.node("MatMulIntegerToFloat", ins, list(node.output), node.name)
            g.replace(node, [quantize, new] if i == 0 else [new])


def export_onnx(
    src: str | Path,
    out: str | Path,
    *,
    kernel: str = DEFAULT_KERNEL,
    task: str | None = None,
    overwrite: bool = False,
    check: bool = True,
    opset: int | None = None,
) -> ExportResult:
    """Export the zoo checkpoint `src` to an ONNX Runtime folder `out` (see the module's docstring)."""
    if kernel not in KERNELS:
        raise ExportError(f"unknown kernel {kernel!r}", hint=f"choose one of {', '.join(KERNELS)}")
    src, out = Path(src), Path(out)
    ensure_writable(out, overwrite)
    onnx = _need("onnx")
    _need("onnxscript")
    ckpt = Checkpoint.open(src)
    from zoo.loaders import load

    model = load(src, task=task, mode="materialize")
    model.eval()
    outputs = _outputs_for(model)
    targets, refused = _targets(model)
    if refused:
        shown = "; ".join(refused[:4]) + (f"; and {len(refused) - 4} more" if len(refused) > 4 else "")
        raise ExportError(
            f"{src} has modules the ONNX export cannot carry: {shown}",
            hint="the export writes int-N, N:M over int-N, binary and ternary codes; "
            "`zoo unpack` gives a dense model other exporters take",
            path=src,
        )
    names, example, dynamic = _inputs_for(model)
    wrapped = _Outputs(model, outputs).eval()
    inputs = dict(zip(names, example))
    probe = _probe_inputs(src, names) or inputs
    with torch.no_grad():
        program = _run_exporter(wrapped, inputs, outputs, dynamic, opset)
        reference = wrapped(**probe)
    g = _Graph(program.model_proto)

    by_value: dict[tuple[tuple[int, ...], str], tuple[_Target, bool]] = {}
    for t in targets:
        w = t.weight.contiguous().numpy()
        by_value.setdefault((w.shape, _digest(w)), (t, False))
        wt = t.weight.t().contiguous().numpy()  # an embedding's too: a tied decoder's matmul may read it so
        by_value.setdefault((wt.shape, _digest(wt)), (t, True))
    ops: dict[str, list[str]] = {}
    for name in list(g.inits):
        a = g.array(name)
        if a.dtype.kind != "f" or a.ndim != 2:
            continue
        hit = by_value.get((a.shape, _digest(a.astype("float32", copy=False))))
        if hit is not None:
            t, transposed = hit
            ops.setdefault(t.name, []).extend(_rewrite(g, t, name, transposed, kernel))
    if kernel == "int8":
        _share_quantized_inputs(g)
    nodes = g.prologue + list(g.graph.node)
    del g.graph.node[:]
    g.graph.node.extend(nodes)
    g.drop_unused_inits()
    unused = [t.name for t in targets if t.name not in ops]
    floats = {g.onnx.TensorProto.FLOAT, g.onnx.TensorProto.FLOAT16, g.onnx.TensorProto.DOUBLE}
    shapes = {tuple(i.dims) for i in g.inits.values() if i.data_type in floats}
    by_name = {t.name: t for t in targets}
    lost = [n for n in unused if {by_name[n].shape, by_name[n].shape[::-1]} & shapes]
    if lost:
        raise ExportError(
            f"the exporter changed the weights of {', '.join(lost[:4])} (they are not in the graph as stored), "
            "so the export would write them as dense floats",
            hint="please report the model; `zoo unpack` gives a dense model other exporters take",
        )
    sha = ckpt.manifest.content_sha256()
    meta = {"zoo.manifest_sha256": sha, "zoo.source": src.name, "zoo.kernel": kernel}
    onnx.helper.set_model_props(g.model, meta)

    staged = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:8]}"
    staged.mkdir(parents=True)
    try:
        proto_bytes = g.model.ByteSize()
        onnx.save_model(
            g.model,
            str(staged / ONNX_FILE),
            save_as_external_data=proto_bytes > MAX_PROTO_BYTES,
            location=ONNX_FILE + ".data",
        )
        checked = _check(staged / ONNX_FILE, probe, reference, kernel) if check else None
        for name in companion_files(src):
            (staged / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / name, staged / name)
        config = {k: v for k, v in ckpt.config.items() if k != "quantization_config"}
        write_file_atomic(staged / "config.json", json.dumps(config, indent=2, sort_keys=True) + "\n")
        onnx_nbytes = sum(p.stat().st_size for p in staged.glob(ONNX_FILE + "*"))
        write_output_mark(
            staged,
            "zoo export --onnx",
            source=str(src),
            manifest_sha256=sha,
            kernel=kernel,
            **({"checked": checked} if checked else {}),
        )
        replace_dir(staged, out)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return ExportResult(
        path=out,
        onnx_nbytes=onnx_nbytes,
        checkpoint_nbytes=sum((src / f).stat().st_size for f in ckpt.weights.files),
        kernel=kernel,
        outputs=outputs,
        ops={k: ", ".join(sorted(set(v))) for k, v in ops.items()},
        unused=unused,
        checked=checked,
        manifest_sha256=sha,
    )


def _run_exporter(wrapped, inputs: dict[str, torch.Tensor], outputs, dynamic: dict[str, dict[int, str]], opset):
    kwargs = {} if opset is None else {"opset_version": opset}
    dims: dict[str, Any] = {}
    shapes = {k: {axis: dims.setdefault(d, torch.export.Dim(d)) for axis, d in v.items()} for k, v in dynamic.items()}
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # "torchvision is not installed. Skipping torchvision::nms" and the like
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return torch.onnx.export(
                wrapped,
                (),
                kwargs=inputs,
                output_names=list(outputs),
                dynamic_shapes=shapes,
                dynamo=True,
                optimize=True,
                verbose=False,
                **kwargs,
            )
        except Exception as exc:  # the exporter's own errors are many and untyped
            raise ExportError(
                f"torch's ONNX exporter failed on {type(wrapped.model).__name__}: {type(exc).__name__}: "
                f"{str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}",
                hint="`zoo unpack` gives a dense model other exporters take",
            ) from exc
        finally:
            quiet.setLevel(level)


def session(path: str | Path, threads: int | None = None):
    """An onnxruntime CPU session for an exported model, with thread spinning off (idle spinning threads would
    take the cores from whatever runs next in the process)."""
    ort = _need("onnxruntime")
    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads is not None:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


# what the check feeds a text model: sentences of several lengths (so padding and the attention mask count)
PROBE_TEXT = (
    "The film is a quiet, patient study of grief, and it earns every minute of its running time.",
    "Dull.",
    "A loud, overlong sequel that forgets everything that made the first one fun to watch.",
    "Compressed models should run as well as the dense ones they came from.",
)


def _probe_inputs(src: Path, names: tuple[str, ...]) -> dict[str, torch.Tensor] | None:
    """Real sentences through the checkpoint's tokenizer, or None (no tokenizer, or not a text model): then the
    check uses the export's random example."""
    if "input_ids" not in names:
        return None
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(src)
        encoded = tokenizer(list(PROBE_TEXT), padding=True, return_tensors="pt")
    except (OSError, ValueError, TypeError, KeyError):
        return None
    return {n: encoded[n] if n in encoded else torch.zeros_like(encoded["input_ids"]) for n in names}


def _agreement(ours: torch.Tensor, ref: torch.Tensor, mask: torch.Tensor | None) -> tuple[float, float]:
    """(max |ours - ref| over max |ref|, cosine): per sample of mean-pooled token vectors for a (batch, tokens,
    hidden) output (the worst sample), else of the whole output."""
    worst = float((ours - ref).abs().max() / ref.abs().max().clamp(min=1e-12))
    if ours.dim() == 3:
        weights = (mask if mask is not None else torch.ones(ours.shape[:2])).unsqueeze(-1).double()
        ours, ref = (x.mul(weights).sum(1) / weights.sum(1) for x in (ours, ref))
        return worst, float(torch.nn.functional.cosine_similarity(ours, ref, dim=-1).min())
    return worst, float(torch.nn.functional.cosine_similarity(ours.flatten(), ref.flatten(), dim=0))


def _check(path: Path, inputs: dict[str, torch.Tensor], reference, kernel: str) -> dict[str, float] | None:
    """Run the written model with onnxruntime on `inputs` against zoo's outputs for them; raise ExportError when
    they differ more than the kernel allows. None when onnxruntime is not installed."""
    try:
        sess = session(path)
    except ExportUnavailable:
        return None
    got = sess.run(None, {n: x.numpy() for n, x in inputs.items()})
    worst, cosine = 0.0, 1.0
    for ours, ref in zip(got, reference):
        w, c = _agreement(torch.from_numpy(ours).double(), ref.double(), inputs.get("attention_mask"))
        worst, cosine = max(worst, w), min(cosine, c)
    if cosine < MIN_COSINE or (kernel == "exact" and worst > EXACT_TOLERANCE):
        raise ExportError(
            f"onnxruntime's outputs of the exported model differ from zoo's (cosine {cosine:.4f}, "
            f"max difference {worst:.2e} of the largest output)",
            hint="please report the model; nothing was written",
        )
    return {"max_rel_diff": worst, "cosine": cosine}
