"""Rewrites applied to the ONNX file MindSpore writes, before it is hashed and validated.

- Erf: MindSpore 2.10's ONNX exporter has no Erf, so the ``onnx_erf`` GELU kernel traces erf as
  ``Acos`` (an op it can export and that no SVD network otherwise uses); every Acos becomes Erf.
- LayerNorm: the exporter writes LayerNorm as ReduceMean → Sub → ReduceSumSquare → Div → Add(ε)
  → Sqrt → Div → Mul(γ) → Add(β), which ONNX Runtime does not recognise; each such chain over
  the last axis becomes one ``LayerNormalization`` node (ONNX Runtime implements it at every
  opset). GroupNorm (the ``layernorm`` kernel) benefits too.
- Gemm bias: ``Gemm(A, B)`` followed by ``Add(bias)`` with a 1-D constant bias becomes
  ``Gemm(A, B, bias)``.
- Attention: the traced multi-head attention (Reshape → Transpose → MatMul → Mul(scale) →
  Softmax → MatMul → Transpose) becomes ONNX Runtime's ``com.microsoft.MultiHeadAttention``,
  which skips the head transposes. This makes the file ONNX Runtime-specific (OpenVINO reads
  it too); ``for_lite=True`` leaves it out.
- Frame padding: the temporal convolution (kernel (k, 1) over (B, C, T, H·W)) is traced as a
  ``Concat`` of k//2 zero frames on each side of its input followed by a VALID ``Conv``, because
  MindSpore's exporter writes wrong pads for non-uniform padding. The Concat (a copy of the whole
  activation, plus a zero tensor kept as a weight) becomes the Conv's own ``pads`` (k//2, 0,
  k//2, 0), which ONNX Runtime and OpenVINO apply without a copy (OpenVINO bf16, mid U-Net:
  2 % faster; ONNX Runtime unchanged). Not with ``for_lite=True``: MindSpore Lite 2.0 cannot
  build the folded temporal convolutions.
- Resize mode: MindSpore writes its nearest-neighbour upsampling as ``Resize`` without a
  ``mode`` attribute (ONNX's default is ``nearest``). MindSpore Lite 2.0's ONNX parser reads a
  missing ``mode`` as ``linear`` and silently converts the ×2 upsampling of the U-Net and the VAE
  decoder into a bilinear one (0.34 / 0.64 relative L2 on the tiny preset); every Resize gets
  its mode written out, which changes nothing for engines that follow the spec.
- Output names: renamed to the graph contract's names.

Validation against the in-memory network checks the rewritten file, so a wrong rewrite cannot
go unnoticed.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

from svdeploy.errors import ExportError

ERF_STAND_IN = "Acos"
PROTOBUF_LIMIT = 2**31 - 1  # larger models keep their weights in an external data file


@dataclass
class PassStats:
    erf: int = 0
    layer_norm: int = 0
    gemm_bias: int = 0
    attention: int = 0
    resize_mode: int = 0
    frame_padding: int = 0


class _Graph:
    """Producer / consumer index over an ONNX graph (rebuilt after each pass)."""

    def __init__(self, graph) -> None:  # onnx.GraphProto
        self.graph = graph
        self.producer: Dict[str, object] = {}
        self.consumers: Dict[str, List[object]] = defaultdict(list)
        for node in graph.node:
            for out in node.output:
                self.producer[out] = node
            for inp in node.input:
                self.consumers[inp].append(node)
        self.outputs = {o.name for o in graph.output}
        self.constants = {t.name: t for t in graph.initializer}
        for node in graph.node:
            if node.op_type == "Constant":
                for attr in node.attribute:
                    if attr.name == "value":
                        self.constants[node.output[0]] = attr.t

    def only_consumer(self, name: str, op_type: str):
        users = self.consumers.get(name, [])
        if len(users) == 1 and users[0].op_type == op_type and name not in self.outputs:
            return users[0]
        return None

    def sole_producer(self, name: str, op_type: str, perm=None):
        """The node of ``op_type`` (with transpose ``perm``, if given) that produces ``name``,
        when ``name`` has no other consumer."""
        node = self.producer.get(name)
        if node is None or node.op_type != op_type or len(self.consumers.get(name, [])) != 1:
            return None
        if perm is not None and _perm(node) != perm:
            return None
        return node

    def constant_array(self, name: str):
        from onnx import numpy_helper

        # a Cast of a constant is still constant (MindSpore casts parameters to the compute dtype)
        node = self.producer.get(name)
        if node is not None and node.op_type == "Cast":
            name = node.input[0]
        tensor = self.constants.get(name)
        return None if tensor is None else numpy_helper.to_array(tensor)


def _attr(node, name: str):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return None


def _fuse_layer_norm(graph) -> int:
    """ReduceMean → Sub → (ReduceSumSquare / count + eps → Sqrt) → Div → Mul γ → Add β over
    the last axis becomes one LayerNormalization node."""
    g = _Graph(graph)
    ranks = {
        vi.name: len(vi.type.tensor_type.shape.dim)
        for vi in list(graph.value_info) + list(graph.input)
        if vi.type.tensor_type.HasField("shape")
    }
    remove: List[object] = []
    insert: Dict[int, List[object]] = {}
    index = {id(n): i for i, n in enumerate(graph.node)}
    for mean in list(graph.node):
        match = _match_layer_norm(g, mean, ranks) if mean.op_type == "ReduceMean" else None
        if match is None:
            continue
        chain, node = match
        remove.extend(chain)
        insert[index[id(chain[-1])]] = [node]
    if not remove:
        return 0
    _splice(graph, remove, insert)
    return len(insert)


def _match_layer_norm(g: _Graph, mean, ranks: Dict[str, int]):
    """(the nine nodes of a decomposed layer norm starting at ``mean``, the fused node that
    replaces them), or None when the pattern around ``mean`` does not match."""
    from onnx import helper

    axes = _attr(mean, "axes")
    if axes is None or len(axes) != 1 or _attr(mean, "keepdims") == 0:
        return None
    x = mean.input[0]
    sub = g.only_consumer(mean.output[0], "Sub")
    if sub is None or sub.input[0] != x:
        return None
    users = g.consumers.get(sub.output[0], [])
    sqsum = next((u for u in users if u.op_type == "ReduceSumSquare"), None)
    div2 = next((u for u in users if u.op_type == "Div" and u.input[0] == sub.output[0]), None)
    if sqsum is None or div2 is None or len(users) != 2 or _attr(sqsum, "axes") != axes:
        return None
    div1 = g.only_consumer(sqsum.output[0], "Div")
    add_eps = div1 and g.only_consumer(div1.output[0], "Add")
    sqrt = add_eps and g.only_consumer(add_eps.output[0], "Sqrt")
    if sqrt is None or div2.input[1] != sqrt.output[0]:
        return None
    mul = g.only_consumer(div2.output[0], "Mul")
    add_beta = mul and g.only_consumer(mul.output[0], "Add")
    if add_beta is None:
        return None
    eps = g.constant_array(add_eps.input[1])
    count = g.constant_array(div1.input[1])
    if eps is None or eps.size != 1 or count is None or count.size != 1:
        return None
    gamma = mul.input[1] if mul.input[0] == div2.output[0] else mul.input[0]
    beta = add_beta.input[1] if add_beta.input[0] == mul.output[0] else add_beta.input[0]
    # LayerNormalization normalises the trailing axes from `axis` on: only fuse a reduction
    # over the last axis (rank known from shape inference)
    rank = ranks.get(x)
    if rank is None or int(axes[0]) not in (-1, rank - 1):
        return None
    node = helper.make_node(
        "LayerNormalization",
        [x, gamma, beta],
        [add_beta.output[0]],
        axis=-1,
        epsilon=float(eps.reshape(-1)[0]),
        name=(mean.name or "ln") + "/fused_layer_norm",
    )
    return [mean, sub, sqsum, div1, add_eps, sqrt, div2, mul, add_beta], node


def _splice(graph, remove: List[object], insert: Dict[int, List[object]]) -> None:
    """Drop the ``remove`` nodes and put each ``insert[i]`` before the node now at index i
    (node order stays topological: every insertion point is after its inputs' producers)."""
    removed = {id(n) for n in remove}
    kept = []
    for i, n in enumerate(graph.node):
        kept.extend(insert.get(i, []))
        if id(n) not in removed:
            kept.append(n)
    del graph.node[:]
    graph.node.extend(kept)


def _fuse_gemm_bias(graph) -> int:
    g = _Graph(graph)
    fused = 0
    drop = set()
    for gemm in list(graph.node):
        if gemm.op_type != "Gemm" or len(gemm.input) != 2:
            continue
        add = g.only_consumer(gemm.output[0], "Add")
        if add is None:
            continue
        bias = add.input[1] if add.input[0] == gemm.output[0] else add.input[0]
        arr = g.constant_array(bias)
        if arr is None or arr.ndim != 1:
            continue
        gemm.input.append(bias)
        gemm.output[0] = add.output[0]
        drop.add(id(add))
        fused += 1
    if fused:
        kept = [n for n in graph.node if id(n) not in drop]
        del graph.node[:]
        graph.node.extend(kept)
    return fused


def _perm(node):
    return list(_attr(node, "perm") or [])


def _heads_reshape(g: _Graph, name: str):
    """(Transpose(0,2,1,3) ← Reshape to [B, N, H, d]) feeding ``name``."""
    transpose = g.sole_producer(name, "Transpose", [0, 2, 1, 3])
    reshape = transpose and g.sole_producer(transpose.input[0], "Reshape")
    shape = reshape and g.constant_array(reshape.input[1])
    if reshape is None or shape is None or shape.size != 4 or (shape <= 0).any():
        return None
    return transpose, reshape, [int(v) for v in shape]


def _fuse_attention(graph) -> int:
    """Per-head Reshape/Transpose → MatMul(q, kᵀ) → Mul scale → Softmax → MatMul(·, v) →
    Transpose becomes one com.microsoft MultiHeadAttention over (B, S, H·d) inputs."""
    g = _Graph(graph)
    remove: List[object] = []
    new_nodes: Dict[int, List[object]] = {}
    index = {id(n): i for i, n in enumerate(graph.node)}
    new_inits: List[object] = []
    count = 0
    for softmax in list(graph.node):
        match = _match_attention(g, softmax)
        if match is None:
            continue
        nodes, inits = _attention_nodes(g, match, f"svdeploy_mha_{count}")
        new_nodes.setdefault(index[id(match["out_t"])], []).extend(nodes)
        new_inits.extend(inits)
        remove.extend(match["chain"])
        count += 1
    if not count:
        return 0
    _splice(graph, remove, new_nodes)
    graph.initializer.extend(new_inits)
    return count


def _match_attention(g: _Graph, softmax):
    """The attention pattern ending in ``softmax`` as a dict (q, k, v: (transpose, reshape,
    [B, N, H, d]); scale; heads; out_t: the output transpose; chain: the nodes it replaces),
    or None when it does not match."""
    if softmax.op_type != "Softmax" or _attr(softmax, "axis") not in (3, -1):
        return None
    mul = g.sole_producer(softmax.input[0], "Mul")
    if mul is None:
        return None
    scale_name = next((i for i in mul.input if g.constant_array(i) is not None), None)
    scale = scale_name and g.constant_array(scale_name)
    scores_name = next((i for i in mul.input if i != scale_name), None)
    matmul_qk = scores_name and g.sole_producer(scores_name, "MatMul")
    if scale is None or scale.size != 1 or matmul_qk is None:
        return None
    q = _heads_reshape(g, matmul_qk.input[0])
    k_swap = g.sole_producer(matmul_qk.input[1], "Transpose", [0, 1, 3, 2])
    k = k_swap and _heads_reshape(g, k_swap.input[0])
    users = g.consumers.get(softmax.output[0], [])
    matmul_pv = users[0] if len(users) == 1 and users[0].op_type == "MatMul" else None
    if q is None or k is None or matmul_pv is None or matmul_pv.input[0] != softmax.output[0]:
        return None
    v = _heads_reshape(g, matmul_pv.input[1])
    out_users = g.consumers.get(matmul_pv.output[0], [])
    out_t = out_users[0] if len(out_users) == 1 else None
    if v is None or out_t is None or out_t.op_type != "Transpose" or _perm(out_t) != [0, 2, 1, 3]:
        return None
    heads = q[2][2]
    if k[2][2] != heads or v[2][2] != heads:
        return None
    return {
        "q": q,
        "k": k,
        "v": v,
        "scale": float(scale.reshape(-1)[0]),
        "heads": heads,
        "out_t": out_t,
        "chain": [q[0], k[0], k_swap, matmul_qk, mul, softmax, v[0], matmul_pv, out_t],
    }


def _attention_nodes(g: _Graph, match, stem: str):
    """(new nodes: q, k, v reshaped to (B, S, H·d) and the MultiHeadAttention, new shape
    initializers); rewires the consumers of the output transpose to the fused output."""
    from onnx import helper, numpy_helper

    out_t = match["out_t"]
    nodes, inits, inputs = [], [], []
    for tag in ("q", "k", "v"):
        _, reshape, (b, n, h, dim) = match[tag]
        shape_name = f"{stem}_{tag}_shape"
        inits.append(numpy_helper.from_array(np.array([b, n, h * dim], dtype=np.int64), shape_name))
        inputs.append(f"{stem}_{tag}")
        nodes.append(
            helper.make_node(
                "Reshape", [reshape.input[0], shape_name], [inputs[-1]], name=f"{stem}/{tag}_to_bsh"
            )
        )
    nodes.append(
        helper.make_node(
            "MultiHeadAttention",
            inputs,
            [out_t.output[0] + "_bsh"],
            domain="com.microsoft",
            num_heads=match["heads"],
            scale=match["scale"],
            name=f"{stem}/attention",
        )
    )
    # the Reshape after the output transpose now reads (B, S, H·d), the same element order
    for consumer in g.consumers.get(out_t.output[0], []):
        for i, value in enumerate(consumer.input):
            if value == out_t.output[0]:
                consumer.input[i] = out_t.output[0] + "_bsh"
    return nodes, inits


def _fold_frame_padding(graph) -> int:
    """Concat(zeros, x, zeros) on axis 2 → Conv (k, 1) VALID becomes Conv(x) with pads
    (k//2, 0, k//2, 0): the same zeros, without the copy."""
    from onnx import helper

    g = _Graph(graph)
    folded = 0
    for conv in graph.node:
        pads = _frame_pads(g, conv)
        if pads is None:
            continue
        concat = g.producer[conv.input[0]]
        conv.input[0] = concat.input[1]
        kept = [a for a in conv.attribute if a.name not in ("auto_pad", "pads")]
        del conv.attribute[:]
        conv.attribute.extend(kept)
        conv.attribute.append(helper.make_attribute("pads", [pads, 0, pads, 0]))
        folded += 1
    return folded  # the Concats and their zero tensors are left unread: _prune drops them


def _frame_pads(g: _Graph, conv):
    """k//2 when ``conv`` is a VALID (k, 1) convolution reading Concat(zeros, x, zeros) on
    axis 2 with k//2 zero frames each side, and nothing else reads the Concat; else None."""
    kernel = _attr(conv, "kernel_shape") if conv.op_type == "Conv" else None
    if kernel is None or len(kernel) != 2 or kernel[1] != 1 or kernel[0] % 2 == 0:
        return None
    if _attr(conv, "auto_pad") not in (None, b"VALID", b"NOTSET") or any(_attr(conv, "pads") or []):
        return None
    concat = g.sole_producer(conv.input[0], "Concat")
    if concat is None or _attr(concat, "axis") not in (2, -2) or len(concat.input) != 3:
        return None
    half = kernel[0] // 2
    for side in (concat.input[0], concat.input[2]):
        zeros = g.constant_array(side)
        if zeros is None or zeros.ndim != 4 or zeros.shape[2] != half or zeros.any():
            return None
    return half


def explicit_resize_mode(graph) -> int:
    """Write ``mode="nearest"`` (ONNX's default) on every Resize that omits it."""
    from onnx import helper

    count = 0
    for node in graph.node:
        if node.op_type == "Resize" and not any(a.name == "mode" for a in node.attribute):
            node.attribute.append(helper.make_attribute("mode", "nearest"))
            count += 1
    return count


def _prune(graph) -> None:
    """Drop nodes whose outputs nobody reads and initializers no node uses (left by fusion)."""
    needed = {o.name for o in graph.output}
    kept = []
    for node in reversed(list(graph.node)):
        if any(o in needed for o in node.output):
            kept.append(node)
            needed.update(node.input)
    del graph.node[:]
    graph.node.extend(reversed(kept))
    used = [t for t in graph.initializer if t.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(used)


def _rename_outputs(graph, output_names: Sequence[str], where: str) -> None:
    if len(graph.output) != len(output_names):
        raise ExportError(
            f"{where}: {len(graph.output)} ONNX outputs, expected "
            f"{len(output_names)} ({', '.join(output_names)})"
        )
    for out, name in zip(graph.output, output_names):
        old = out.name
        if old == name:
            continue
        for node in graph.node:
            for i, value in enumerate(node.output):
                if value == old:
                    node.output[i] = name
            for i, value in enumerate(node.input):
                if value == old:
                    node.input[i] = name
        out.name = name


def rewrite_onnx(
    path: Path,
    input_names: Sequence[str],
    output_names: Sequence[str],
    fuse: bool = True,
    for_lite: bool = False,
) -> PassStats:
    """Rewrite ``path`` in place (temporary file, then rename). ``for_lite``: the plain ONNX
    that MindSpore Lite 2.0's converter builds (no contrib attention, frame padding kept)."""
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    stats = PassStats()
    for node in graph.node:
        if node.op_type == ERF_STAND_IN:
            node.op_type = "Erf"
            stats.erf += 1
    stats.resize_mode = explicit_resize_mode(graph)
    initializers = {t.name for t in graph.initializer}
    inputs = [i.name for i in graph.input if i.name not in initializers]
    if list(inputs) != list(input_names):
        raise ExportError(
            f"{path.name}: ONNX inputs {inputs} differ from the contract {list(input_names)}"
        )
    _rename_outputs(graph, output_names, path.name)
    if fuse and model.ByteSize() < PROTOBUF_LIMIT:
        # shape inference gives the ranks the LayerNorm fusion needs (in-memory proto < 2 GB)
        model = onnx.shape_inference.infer_shapes(model)
        graph = model.graph
        stats.layer_norm = _fuse_layer_norm(graph)
        stats.gemm_bias = _fuse_gemm_bias(graph)
        if not for_lite:
            stats.frame_padding = _fold_frame_padding(graph)
            stats.attention = _fuse_attention(graph)
            if stats.attention and not any(o.domain == "com.microsoft" for o in model.opset_import):
                model.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
        _prune(graph)
    tmp = path.with_name(path.name + ".tmp")
    if model.ByteSize() > PROTOBUF_LIMIT:
        onnx.save_model(
            model,
            str(tmp),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=path.name + ".data",
        )
    else:
        onnx.save_model(model, str(tmp))
    os.replace(tmp, path)
    return stats


__all__ = ["rewrite_onnx", "PassStats", "explicit_resize_mode"]
