"""MindSpore Lite conversion files for Ascend (``--target ascend``).

MindSpore Lite (``converter_lite``) turns a MindIR graph into an Ascend-optimised model
(910* servers, 310P edge boxes). No Ascend host was available to this project, so nothing here
runs the Ascend converter: the export writes, per graph, the converter's config file and the
exact command, plus ``ascend/convert.sh`` running them all; the version pairing (a MindIR
from MindSpore X needs a Lite ≥ X: Lite 2.0.0 refuses MindSpore 2.10's MindIR, "maximum mind ir
version: 1"); and ``ascend/validate.sh``, which runs the converted graphs on the host against
reference inputs / outputs stored in ``reference/`` (``lite_worker.py validate``). Option
names follow the MindSpore Lite docs ("Ascend Conversion Tool Description":
``[ascend_context]`` with ``input_format`` and ``precision_mode``; static input shapes go to
``converter_lite --inputShape``).
"""

from __future__ import annotations

import os
import shlex
import shutil
import stat
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from svdeploy.manifest import GraphEntry, sha256_file

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
        "converter_lite",
        "--fmk=MINDIR",
        f"--modelFile={entry.file}",
        f"--outputFile={ASCEND_DIR}/{stem}_ascend",
        "--saveType=MINDIR",
        "--optimize=ascend_oriented",
        f"--inputShape={input_shape_arg(entry)}",
        f"--configFile={config_rel}",
    ]


def converted_name(entry: GraphEntry) -> str:
    """The file converter_lite writes for ``entry`` (``--outputFile`` + ``.mindir``)."""
    return converter_command(entry, "")[3].split("=", 1)[1].split("/", 1)[1] + ".mindir"


def version_pairing(mindspore_version: str) -> Dict[str, str]:
    return {
        "mindspore_version": mindspore_version,
        "requires_lite": f">= {mindspore_version}",
        "why": "MindSpore Lite reads MindIR only up to its own MindIR version (Lite 2.0.0 "
        "refuses MindSpore 2.10's MindIR: maximum mind ir version 1, got 3)",
    }


def write_reference_outputs(
    directory: Path,
    entries: Sequence[GraphEntry],
    references: Dict[str, Tuple[List[np.ndarray], List[np.ndarray]]],
    tolerance: float,
) -> Dict[str, Dict[str, Any]]:
    """reference/<graph>.npz (input_i, output_i: the float32 network's outputs on the export's
    validation inputs), described for ``lite_worker.py validate``."""
    out = directory / "reference"
    out.mkdir(exist_ok=True)
    cases: Dict[str, Dict[str, Any]] = {}
    for entry in entries:
        if entry.format != "mindir" or entry.name not in references:
            continue
        inputs, outputs = references[entry.name]
        arrays = {f"input_{i}": a for i, a in enumerate(inputs)}
        arrays.update({f"output_{i}": a for i, a in enumerate(outputs)})
        path = out / f"{entry.name}.npz"
        np.savez(path, **arrays)
        cases[entry.name] = {
            "file": f"reference/{entry.name}.npz",
            "sha256": sha256_file(path),
            "graph": converted_name(entry),
            "num_inputs": len(inputs),
            "num_outputs": len(outputs),
            "tolerance": tolerance,
        }
    return cases


def validation_command(tolerance: float) -> List[str]:
    return [
        "python3",
        f"{ASCEND_DIR}/lite_worker.py",
        "validate",
        ".",
        "--target",
        "ascend",
        "--graph-dir",
        ASCEND_DIR,
        "--tolerance",
        f"{tolerance:g}",
    ]


def write_validation_files(directory: Path, worker: Path, tolerance: float) -> str:
    """ascend/lite_worker.py (a copy of the runtime's worker: numpy + mindspore_lite only) and
    ascend/validate.sh; returns the command."""
    shutil.copyfile(worker, directory / ASCEND_DIR / "lite_worker.py")
    command = shlex.join(validation_command(tolerance))
    _write_script(
        directory / ASCEND_DIR / "validate.sh",
        [
            "# Run the converted graphs (ascend/*_ascend.mindir, "
            "from convert.sh) on this Ascend host",
            "# with MindSpore Lite's Python package, on "
            "the inputs stored in reference/, and compare",
            "# with the float32 network's outputs stored beside them (relative L2 per graph).",
            command,
        ],
    )
    return command


def _write_script(path: Path, lines: Sequence[str]) -> None:
    body = ["#!/usr/bin/env bash", "set -euo pipefail", 'cd "$(dirname "$0")/.."', *lines]
    path.write_text("\n".join(body) + "\n", encoding="utf-8")
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def write_ascend_files(
    directory: Path, entries: Sequence[GraphEntry], dtype: str, mindspore_version: str = ""
) -> Dict[str, str]:
    """Write ascend/<graph>.cfg and ascend/convert.sh; returns {graph: command line}."""
    out = directory / ASCEND_DIR
    out.mkdir(exist_ok=True)
    commands: Dict[str, str] = {}
    script = [
        "#!/usr/bin/env bash",
        "# Convert this artifact's MindIR graphs for Ascend with MindSpore Lite (converter_lite",
        "# must be on PATH, from the MindSpore Lite package for your CANN version). Run from the",
        "# artifact directory: bash ascend/convert.sh",
        "# Version pairing: these MindIR files were "
        f"written by MindSpore {mindspore_version or '?'}; "
        f"converter_lite must be MindSpore Lite >= {mindspore_version or 'that version'}",
        "# (an older Lite refuses a newer MindIR version). Then: bash ascend/validate.sh",
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
