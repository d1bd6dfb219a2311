"""MindSpore Lite conversion files for Ascend (``--target ascend``).

MindSpore Lite (``converter_lite``) turns a MindIR graph into an Ascend-optimised model
(910* servers, 310P edge boxes). It has no wheel for this Python, so nothing here runs the
converter: the export writes, per graph, the converter's config file and the exact command,
plus ``ascend/convert.sh`` running them all. Option names follow the MindSpore Lite docs
("Ascend Conversion Tool Description": ``[ascend_context]`` with ``input_format`` and
``precision_mode``; static input shapes go to ``converter_lite --inputShape``).
"""
from __future__ import annotations

import os
import shlex
import stat
from pathlib import Path
from typing import Dict, List, Sequence

from svdeploy.manifest import GraphEntry

ASCEND_DIR = "ascend"
# our graph precision → Lite precision_mode
PRECISION_MODE = {"fp32": "enforce_fp32", "fp16": "enforce_fp16", "bf16": "enforce_origin"}


def input_shape_arg(entry: GraphEntry) -> str:
    """``name:d0,d1,...;name2:...`` as converter_lite's --inputShape expects."""
    return ";".join(f"{t.name}:{','.join(str(d) for d in t.shape)}" for t in entry.inputs)


def converter_config(entry: GraphEntry, dtype: str) -> str:
    lines = [
        f"# MindSpore Lite Ascend conversion of {entry.file} (written by svd-export)",
        "[ascend_context]",
        "input_format=NCHW",
        f"precision_mode={PRECISION_MODE[dtype]}",
        "output_type=FP32",
        "",
    ]
    return "\n".join(lines)


def converter_command(entry: GraphEntry, config_rel: str) -> List[str]:
    stem = Path(entry.file).name
    for suffix in ("_graph.mindir", ".mindir"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    return [
        "converter_lite", "--fmk=MINDIR", f"--modelFile={entry.file}",
        f"--outputFile={ASCEND_DIR}/{stem}_ascend", "--saveType=MINDIR",
        "--optimize=ascend_oriented", f"--inputShape={input_shape_arg(entry)}",
        f"--configFile={config_rel}",
    ]


def write_ascend_files(directory: Path, entries: Sequence[GraphEntry], dtype: str) -> Dict[str, str]:
    """Write ascend/<graph>.cfg and ascend/convert.sh; returns {graph: command line}."""
    out = directory / ASCEND_DIR
    out.mkdir(exist_ok=True)
    commands: Dict[str, str] = {}
    script = [
        "#!/usr/bin/env bash",
        "# Convert this artifact's MindIR graphs for Ascend with MindSpore Lite (converter_lite",
        "# must be on PATH, from the MindSpore Lite package for your CANN version). Run from the",
        "# artifact directory: bash ascend/convert.sh",
        "set -euo pipefail",
        'cd "$(dirname "$0")/.."',
    ]
    for entry in entries:
        if entry.format != "mindir":
            continue
        cfg_rel = f"{ASCEND_DIR}/{entry.name}.cfg"
        (directory / cfg_rel).write_text(converter_config(entry, dtype), encoding="utf-8")
        command = shlex.join(converter_command(entry, cfg_rel))
        commands[entry.name] = command
        script.append(command)
    path = out / "convert.sh"
    path.write_text("\n".join(script) + "\n", encoding="utf-8")
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return commands
