"""An ONNX classifier read as data and run by a small interpreter (docs/inspect.md).

An ``.onnx`` file is a protobuf message (ModelProto); this module decodes the protobuf wire
format itself (varints and length-delimited fields: no generated code, no ``onnx`` package at
run time), keeps the graph's nodes, inputs, outputs and initializers, and evaluates the nodes
with torch operations. Nothing in the file can run code: it only names operators from the
list below, and any other operator is refused (one line listing them) before anything runs.

* **Operators**: Gemm, MatMul, Add, Sub, Mul, Div, Relu, Flatten, Reshape, Identity, Constant,
  Conv, BatchNormalization, GlobalAveragePool, AveragePool, MaxPool, ReduceMean, Concat, Pad
  (constant), Slice, Squeeze, Unsqueeze, Transpose, Dropout (inference).
* **Tensors**: float32, float64, int64 and int32 initializers; every declared size is checked
  (its data length equals its shape's, the total under the memory cap) before a tensor is made;
  **external data** (tensors stored in other files, which a path could point anywhere) is
  refused, as is a file over the memory cap.
* **Head**: from the graph's output back, the trailing chain of linear layers (Gemm with
  constant weights, or MatMul with a constant weight plus an optional Add of a constant bias),
  with Relu (or nothing) between them, is the :meth:`~.architectures.Inspectable.chain`; the
  graph up to the chain's input is the stem. The stem is a feature layer unless it holds no
  parameters (an MLP's Flatten of its input).
* **Parameters**: the chain's weights and biases, and the stem's weights (Conv, Gemm and
  MatMul weights and biases, BatchNormalization's scale and shift; not its running statistics),
  so the whole-network Hessian (``inspect --full``) is over every weight a framework trains.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as nnf

from dufm_core import resources
from dufm_core.inspection.architectures import Inspectable
from dufm_core.inspection.loading import InspectError, _cap

__all__ = ["OnnxClassifier", "load_onnx", "parse_model"]

_DTYPES = {1: np.float32, 11: np.float64, 7: np.int64, 6: np.int32}
_DTYPE_NAMES = {1: "float", 11: "double", 7: "int64", 6: "int32"}
MAX_NODES = 100_000


# --------------------------------------------------------------------------- wire format
def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise InspectError("malformed protobuf (a varint runs past its message)")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes) -> list[tuple[int, int, Any]]:
    """(field number, wire type, value) of a message: int (varint), bytes (length-delimited,
    fixed32, fixed64)."""
    out, pos = [], 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        num, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            n, pos = _varint(buf, pos)
            if pos + n > len(buf):
                raise InspectError("malformed protobuf (a field runs past its message)")
            value, pos = buf[pos:pos + n], pos + n
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            if pos + size > len(buf):
                raise InspectError("malformed protobuf (a field runs past its message)")
            value, pos = buf[pos:pos + size], pos + size
        else:
            raise InspectError(f"malformed protobuf (wire type {wire})")
        out.append((num, wire, value))
    return out


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _ints(fields: list, num: int) -> list[int]:
    """A repeated int64 field, packed or not."""
    out: list[int] = []
    for n, wire, v in fields:
        if n != num:
            continue
        if wire == 0:
            out.append(_signed(v))
        elif wire == 2:
            pos = 0
            while pos < len(v):
                x, pos = _varint(v, pos)
                out.append(_signed(x))
    return out


def _str(fields: list, num: int) -> str:
    vals = [v for n, w, v in fields if n == num and w == 2]
    return vals[-1].decode("utf-8", "replace") if vals else ""


def _strs(fields: list, num: int) -> list[str]:
    return [v.decode("utf-8", "replace") for n, w, v in fields if n == num and w == 2]


def _subs(fields: list, num: int) -> list[list]:
    return [_fields(v) for n, w, v in fields if n == num and w == 2]


# --------------------------------------------------------------------------- messages
def _tensor(fields: list) -> tuple[str, torch.Tensor]:
    """A TensorProto: (name, tensor), sizes checked before anything is made."""
    name = _str(fields, 8)
    if _subs(fields, 13) or any(n == 14 and v == 1 for n, _, v in fields):
        raise InspectError(f"tensor {name[:60]!r} is stored as external data (in another "
                           "file, named by a path); refused: export with the weights inside")
    dims = _ints(fields, 1)
    dtype_code = next((v for n, w, v in fields if n == 2 and w == 0), 0)
    if dtype_code not in _DTYPES or any(d < 0 for d in dims) or len(dims) > 16:
        raise InspectError(f"tensor {name[:60]!r} has data type {dtype_code} or shape "
                           f"{dims[:8]}; readable: {', '.join(_DTYPE_NAMES.values())}")
    dt = np.dtype(_DTYPES[dtype_code]).newbyteorder("<")
    count = resources.numel(dims)
    raw = [v for n, w, v in fields if n == 9 and w == 2]
    if raw:
        if len(raw[-1]) != count * dt.itemsize:
            raise InspectError(f"tensor {name[:60]!r} declares shape {dims[:8]} "
                               f"({count * dt.itemsize} bytes) but holds {len(raw[-1])}")
        arr = np.frombuffer(raw[-1], dtype=dt).astype(dt.newbyteorder("="))
    else:
        arr = _typed_data(fields, dtype_code, dt)
        if arr.size != count:
            raise InspectError(f"tensor {name[:60]!r} declares shape {dims[:8]} but holds "
                               f"{arr.size} values")
    return name, torch.from_numpy(arr.copy()).reshape(dims)


def _typed_data(fields: list, code: int, dt: np.dtype) -> np.ndarray:
    if code in (7, 6):
        return np.array(_ints(fields, 7 if code == 7 else 5), dtype=dt.newbyteorder("="))
    num, fmt = (4, "<f") if code == 1 else (10, "<d")
    size = struct.calcsize(fmt)
    chunks = []
    for n, wire, v in fields:
        if n == num:
            chunks.append(v if wire in (1, 2, 5) else b"")
    data = b"".join(chunks)
    return np.frombuffer(data[: len(data) // size * size], dtype=fmt).astype(dt)


@dataclass
class Node:
    """One NodeProto: operator, inputs, outputs, attributes (ints, floats, strings, tensors)."""

    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)


def _attribute(fields: list) -> tuple[str, Any]:
    name = _str(fields, 1)
    kind = next((v for n, w, v in fields if n == 20 and w == 0), 0)
    if kind == 1:  # FLOAT
        raw = next((v for n, w, v in fields if n == 2 and w == 5), b"\0\0\0\0")
        return name, struct.unpack("<f", raw)[0]
    if kind == 2:  # INT
        return name, _signed(next((v for n, w, v in fields if n == 3 and w == 0), 0))
    if kind == 3:  # STRING
        return name, _str(fields, 4)
    if kind == 4:  # TENSOR
        sub = _subs(fields, 5)
        return name, _tensor(sub[0])[1] if sub else None
    if kind == 6:  # FLOATS
        vals = b"".join(v for n, w, v in fields if n == 7)
        return name, list(np.frombuffer(vals[: len(vals) // 4 * 4], dtype="<f4").astype(float))
    if kind == 7:  # INTS
        return name, _ints(fields, 8)
    return name, None


@dataclass
class Graph:
    """A parsed GraphProto: nodes (in the file's topological order), initializers, the graph's
    (non-initializer) inputs and outputs."""

    nodes: list[Node]
    initializers: dict[str, torch.Tensor]
    inputs: list[str]
    outputs: list[str]


def parse_model(data: bytes) -> Graph:
    """The graph of a serialised ModelProto (module docstring)."""
    model = _fields(data)
    graphs = _subs(model, 7)
    if not graphs:
        raise InspectError("not an ONNX model (no graph)")
    g = graphs[-1]
    inits = dict(_tensor(t) for t in _subs(g, 5))
    nodes = []
    for nf in _subs(g, 1):
        nodes.append(Node(_str(nf, 4), _strs(nf, 1), _strs(nf, 2),
                          dict(_attribute(a) for a in _subs(nf, 5))))
        if len(nodes) > MAX_NODES:
            raise InspectError(f"more than {MAX_NODES} nodes")
    inputs = [_str(v, 1) for v in _subs(g, 11)]
    outputs = [_str(v, 1) for v in _subs(g, 12)]
    return Graph(nodes, inits, [i for i in inputs if i not in inits], outputs)


# --------------------------------------------------------------------------- operators
def _pads2d(node: Node) -> tuple[int, int]:
    pads = node.attrs.get("pads") or [0, 0, 0, 0]
    if len(pads) != 4 or pads[0] != pads[2] or pads[1] != pads[3]:
        raise InspectError(f"{node.op}: asymmetric pads {pads} are not supported")
    return pads[0], pads[1]


def _gemm(n: Node, a: list) -> torch.Tensor:
    A, B = a[0], a[1]
    if n.attrs.get("transA", 0):
        A = A.T
    if n.attrs.get("transB", 0):
        B = B.T
    y = n.attrs.get("alpha", 1.0) * (A @ B)
    return y + n.attrs.get("beta", 1.0) * a[2] if len(a) > 2 and a[2] is not None else y


def _conv(n: Node, a: list) -> torch.Tensor:
    if a[1].ndim != 4:
        raise InspectError("Conv: only 2-d convolutions are supported")
    return nnf.conv2d(a[0], a[1], a[2] if len(a) > 2 else None,
                    stride=tuple(n.attrs.get("strides", [1, 1])), padding=_pads2d(n),
                    dilation=tuple(n.attrs.get("dilations", [1, 1])),
                    groups=n.attrs.get("group", 1))


def _reshape(n: Node, a: list) -> torch.Tensor:
    shape = [int(v) for v in a[1].tolist()]
    shape = [a[0].shape[i] if v == 0 and not n.attrs.get("allowzero", 0) else v
             for i, v in enumerate(shape)]
    return a[0].reshape(shape)


def _reduce_mean(n: Node, a: list) -> torch.Tensor:
    axes = n.attrs.get("axes") or (a[1].tolist() if len(a) > 1 and a[1] is not None else None)
    keep = bool(n.attrs.get("keepdims", 1))
    if not axes:
        return a[0].mean().reshape([1] * a[0].ndim) if keep else a[0].mean()
    return a[0].mean(dim=tuple(int(x) for x in axes), keepdim=keep)


def _slice(n: Node, a: list) -> torch.Tensor:
    x = a[0]
    starts, ends = a[1].tolist(), a[2].tolist()
    axes = a[3].tolist() if len(a) > 3 and a[3] is not None else list(range(len(starts)))
    steps = a[4].tolist() if len(a) > 4 and a[4] is not None else [1] * len(starts)
    index: list[Any] = [slice(None)] * x.ndim
    for s, e, ax, st in zip(starts, ends, axes, steps, strict=True):
        if st <= 0:
            raise InspectError("Slice: only positive steps are supported")
        dim = x.shape[ax]
        index[ax] = slice(max(min(s, dim), -dim), max(min(e, dim), -dim - 1), st)
    return x[tuple(index)]


def _pad(n: Node, a: list) -> torch.Tensor:
    if n.attrs.get("mode", "constant") != "constant":
        raise InspectError("Pad: only constant padding is supported")
    pads = a[1].tolist() if len(a) > 1 else n.attrs.get("pads")
    value = float(a[2].reshape(-1)[0]) if len(a) > 2 and a[2] is not None else 0.0
    r = len(pads) // 2
    torch_pads: list[int] = []
    for ax in reversed(range(r)):
        torch_pads += [int(pads[ax]), int(pads[ax + r])]
    return nnf.pad(a[0], torch_pads, value=value)


def _pool(n: Node, a: list, kind: str) -> torch.Tensor:
    k = tuple(n.attrs["kernel_shape"])
    stride = tuple(n.attrs.get("strides", [1, 1]))
    if kind == "avg":
        return nnf.avg_pool2d(a[0], k, stride, _pads2d(n),
                            count_include_pad=bool(n.attrs.get("count_include_pad", 0)))
    return nnf.max_pool2d(a[0], k, stride, _pads2d(n))


def _unsqueeze(n: Node, a: list) -> torch.Tensor:
    axes = n.attrs.get("axes") or a[1].tolist()
    x = a[0]
    for ax in sorted(int(v) % (x.ndim + len(axes)) for v in axes):
        x = x.unsqueeze(ax)
    return x


def _squeeze(n: Node, a: list) -> torch.Tensor:
    axes = n.attrs.get("axes") or (a[1].tolist() if len(a) > 1 else None)
    if axes is None:
        return a[0].squeeze()
    return a[0].squeeze(tuple(int(v) for v in axes))


OPS: dict[str, Any] = {
    "Gemm": _gemm,
    "MatMul": lambda n, a: a[0] @ a[1],
    "Add": lambda n, a: a[0] + a[1],
    "Sub": lambda n, a: a[0] - a[1],
    "Mul": lambda n, a: a[0] * a[1],
    "Div": lambda n, a: a[0] / a[1],
    "Relu": lambda n, a: torch.relu(a[0]),
    "Identity": lambda n, a: a[0],
    "Dropout": lambda n, a: a[0],
    "Flatten": lambda n, a: a[0].reshape(
        int(np.prod(a[0].shape[: n.attrs.get("axis", 1)])), -1),
    "Reshape": _reshape,
    "Constant": lambda n, a: n.attrs.get("value"),
    "Conv": _conv,
    "BatchNormalization": lambda n, a: nnf.batch_norm(
        a[0], a[3], a[4], a[1], a[2], training=False, eps=n.attrs.get("epsilon", 1e-5)),
    "GlobalAveragePool": lambda n, a: a[0].mean(dim=tuple(range(2, a[0].ndim)), keepdim=True),
    "AveragePool": lambda n, a: _pool(n, a, "avg"),
    "MaxPool": lambda n, a: _pool(n, a, "max"),
    "ReduceMean": _reduce_mean,
    "Concat": lambda n, a: torch.cat(a, dim=n.attrs.get("axis", 0)),
    "Pad": _pad,
    "Slice": _slice,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Transpose": lambda n, a: a[0].permute(*(n.attrs.get("perm")
                                             or reversed(range(a[0].ndim)))),
}


# --------------------------------------------------------------------------- the classifier
class OnnxClassifier(Inspectable):
    """A parsed graph as an :class:`~.architectures.Inspectable` (module docstring): the
    trailing linear chain's weights and biases and the stem's weights (:meth:`_stem_weights`)
    are parameters, every other initializer a buffer (``.double()`` converts the float
    ones)."""

    def __init__(self, graph: Graph) -> None:
        super().__init__()
        unknown = sorted({n.op for n in graph.nodes if n.op not in OPS})
        if unknown:
            raise InspectError(f"unsupported ONNX operators {', '.join(unknown[:8])}; this "
                               f"reader runs {', '.join(OPS)}")
        if len(graph.inputs) != 1 or len(graph.outputs) != 1:
            raise InspectError(f"the graph must have one input and one output (it has "
                               f"{len(graph.inputs)} and {len(graph.outputs)})")
        self.graph = graph
        self.made_by = {o: n for n in graph.nodes for o in n.outputs}  # output → its node
        self.keys = {name: f"t{i}" for i, name in enumerate(graph.initializers)}
        self.z0, links, self.activation = self._find_chain()
        needed = self._ancestors(self.z0)
        learnable = self._stem_weights(needed)
        for name, t in graph.initializers.items():  # the stem's weights first ("all" order)
            if name in learnable:
                self.register_parameter(self.keys[name], torch.nn.Parameter(t))
            else:
                self.register_buffer(self.keys[name], t)
        self.weights_ = torch.nn.ParameterList([torch.nn.Parameter(W) for W, _ in links])
        self.biases_ = torch.nn.ParameterList(
            [torch.nn.Parameter(b if b is not None else W.new_zeros(W.shape[0]))
             for W, b in links])
        self.has_bias = [b is not None for _, b in links]
        self.stem_nodes = [n for n in graph.nodes if any(o in needed for o in n.outputs)]
        self.stem_is_features = any(
            n.op == "Conv" or any(i in graph.initializers for i in n.inputs)
            for n in self.stem_nodes)

    def _stem_weights(self, needed: set[str]) -> set[str]:
        """The float initializers of the stem (the nodes before the linear chain) that are
        weights, i.e. what a framework trains: a Conv's or Gemm's weight and bias, a
        BatchNormalization's scale and shift (not its running statistics), a MatMul's constant
        operand and the bias Added to its output. They become parameters, so the whole-network
        Hessian (``params="all"``) covers them; every other constant (shapes, running
        statistics, scalars of a preprocessing step) stays a buffer."""
        out: set[str] = set()
        for n in self.graph.nodes:
            if not any(o in needed for o in n.outputs):
                continue
            picks: list[str] = []
            if n.op in ("Conv", "Gemm", "BatchNormalization"):
                picks = list(n.inputs[1:3])
            elif n.op == "MatMul":
                picks = list(n.inputs[:2])
            elif n.op == "Add":
                for i in (0, 1):
                    inner = self._producer(n.inputs[i])
                    if inner is not None and inner.op in ("MatMul", "Conv", "Gemm"):
                        picks.append(n.inputs[1 - i])
            for name in picks:
                t = self.graph.initializers.get(name)
                if t is not None and t.is_floating_point():
                    out.add(name)
        return out

    def _producer(self, name: str) -> Node | None:
        return self.made_by.get(name)

    def _const(self, name: str) -> torch.Tensor | None:
        return self.graph.initializers.get(name)

    def _linear(self, node: Node | None) -> tuple[str, torch.Tensor, torch.Tensor | None] | None:
        """(input, W (out, in), b) when ``node`` is a linear layer with constant weights."""
        if node is None:
            return None
        if node.op == "Gemm" and not node.attrs.get("transA", 0):
            B = self._const(node.inputs[1])
            if B is None or B.ndim != 2:
                return None
            W = (B if node.attrs.get("transB", 0) else B.T) * node.attrs.get("alpha", 1.0)
            C = self._const(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else None
            if len(node.inputs) > 2 and node.inputs[2] and C is None:
                return None
            b = None if C is None else (C * node.attrs.get("beta", 1.0)).reshape(-1)
            return node.inputs[0], W.clone(), b
        if node.op == "Add":
            for i in (0, 1):
                inner, C = self._producer(node.inputs[i]), self._const(node.inputs[1 - i])
                if C is not None and inner is not None and inner.op == "MatMul":
                    lin = self._linear(inner)
                    if lin is not None and C.numel() == lin[1].shape[0]:
                        return lin[0], lin[1], C.reshape(-1)
            return None
        if node.op == "MatMul":
            B = self._const(node.inputs[1])
            if B is None or B.ndim != 2:
                return None
            return node.inputs[0], B.T.clone(), None
        return None

    def _find_chain(self) -> tuple[str, list, str]:
        """(the chain's input, its layers (W, b) in order, the activation between them)."""
        name = self.graph.outputs[0]
        links: list[tuple[torch.Tensor, torch.Tensor | None]] = []
        activation = ""
        while (lin := self._linear(self._producer(name))) is not None:
            name, W, b = lin
            links.insert(0, (W, b))
            prev = self._producer(name)
            if (prev is not None and prev.op == "Relu" and activation in ("", "relu")
                    and self._linear(self._producer(prev.inputs[0])) is not None):
                activation, name = "relu", prev.inputs[0]
            elif self._linear(prev) is not None and activation in ("", "linear"):
                activation = "linear"
            else:
                break
        if not links:
            raise InspectError("the graph's output is not made by a linear layer (Gemm, or "
                               "MatMul with a constant weight)")
        return name, links, activation or "relu"

    def _ancestors(self, name: str) -> set[str]:
        seen, todo = set(), [name]
        while todo:
            t = todo.pop()
            if t in seen:
                continue
            seen.add(t)
            node = self._producer(t)
            if node is not None:
                todo.extend(i for i in node.inputs if i)
        return seen

    def stem(self, x: torch.Tensor) -> tuple[torch.Tensor, list]:
        values: dict[str, Any] = {self.graph.inputs[0]: x}
        for name, key in self.keys.items():
            values[name] = getattr(self, key)
        for node in self.stem_nodes:
            args = [values.get(i) if i else None for i in node.inputs]
            out = OPS[node.op](node, args)
            if node.op == "Constant" and out is not None and out.is_floating_point():
                out = out.to(x.dtype)
            values[node.outputs[0]] = out
        z0 = values[self.z0]
        return z0.reshape(z0.shape[0], -1), []

    def chain(self) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        return [(W, b if has else None)
                for W, b, has in zip(self.weights_, self.biases_, self.has_bias, strict=True)]


def load_onnx(path: str | Path) -> OnnxClassifier:
    """The classifier of an ``.onnx`` file (module docstring), float64, eval mode."""
    p = Path(path)
    if not p.is_file():
        raise InspectError(f"{p}: no such file")
    _cap(p, 2 * p.stat().st_size)
    try:
        graph = parse_model(p.read_bytes())
        return OnnxClassifier(graph).double().eval()
    except InspectError as exc:
        raise InspectError(f"{p}: {exc}") from None
    except (RecursionError, ValueError, IndexError, KeyError, TypeError) as exc:
        raise InspectError(f"{p}: malformed ONNX graph ({type(exc).__name__})") from None
