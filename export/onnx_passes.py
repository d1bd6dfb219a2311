"""Rewrites applied to the ONNX file MindSpore writes, before it is hashed and validated.

MindSpore 2.10's ONNX exporter has no Erf, so the ``onnx_erf`` GELU kernel traces erf as
``Acos`` (an op it can export and that no SVD network otherwise uses); here every Acos node
becomes ``Erf``. Graph outputs are renamed to the contract names. Validation against the
in-memory network checks the result, so a missed rewrite cannot go unnoticed.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from svdeploy.errors import ExportError

ERF_STAND_IN = "Acos"
# protobuf's hard limit; larger models keep their weights in an external data file
PROTOBUF_LIMIT = 2 ** 31 - 1


def rewrite_onnx(path: Path, input_names: Sequence[str], output_names: Sequence[str]) -> int:
    """Rewrite ``path`` in place; returns the number of Erf nodes restored."""
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    restored = 0
    for node in graph.node:
        if node.op_type == ERF_STAND_IN:
            node.op_type = "Erf"
            restored += 1
    inputs = [i.name for i in graph.input if i.name not in {t.name for t in graph.initializer}]
    if list(inputs) != list(input_names):
        raise ExportError(f"{path.name}: ONNX inputs {inputs} differ from the contract "
                          f"{list(input_names)}")
    if len(graph.output) != len(output_names):
        raise ExportError(f"{path.name}: {len(graph.output)} ONNX outputs, expected "
                          f"{len(output_names)} ({', '.join(output_names)})")
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
    tmp = path.with_name(path.name + ".tmp")
    if model.ByteSize() > PROTOBUF_LIMIT:
        onnx.save_model(model, str(tmp), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=path.name + ".data")
    else:
        onnx.save_model(model, str(tmp))
    os.replace(tmp, path)
    return restored
