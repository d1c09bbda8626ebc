"""A batch-safe copy of the int8 intent graph: each row is quantised as if it ran alone.

``quantize_dynamic`` inserts ``DynamicQuantizeLinear`` before every integer MatMul. That op
takes one scale and zero point for the *whole* tensor, so in a padded batch a message's
activations are quantised with a range set by its neighbours and by padding: its
probabilities move, and now and then its label flips. ``per_row_graph`` rewrites each such
op into the same arithmetic over one row's real tokens:

* range: ``min``/``max`` over the row's positions whose ``attention_mask`` is 1 (padding
  excluded), widened to contain 0, as ``DynamicQuantizeLinear`` does;
* ``scale = (max - min) / 255``, ``zero_point = clip(round(-min / scale), 0, 255)``,
  ``q = clip(round(x / scale) + zero_point, 0, 255)`` (round half to even), per row;
* the integer MatMul runs with a zero point of 0 and the row's zero point is taken out
  exactly afterwards: ``(q - zp) @ W = q @ W - zp * colsum(W)`` in int32.

The dequantising ``Mul`` then broadcasts the ``[batch, 1, 1]`` scale. A row's integers are
thus those of an unbatched run; what may still differ is float summation order in the
float MatMuls, far below what moves a label (tests/unit/routing/test_batching.py checks
the validation set label by label). Needs the ``onnx`` package (a runtime dependency).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["per_row_graph"]

_MASK = "attention_mask"


def per_row_graph(path: Path) -> bytes:
    """The serialised per-row-quantised version of the graph at ``path`` (see the module docstring)."""
    model = onnx.load(str(path))
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    new_nodes: list[onnx.NodeProto] = [
        helper.make_node("Cast", [_MASK], ["rowq/mask_bool"], to=TensorProto.BOOL),
        helper.make_node("Unsqueeze", ["rowq/mask_bool", "rowq/axis_last"], ["rowq/mask"]),
    ]
    consts: dict[str, np.ndarray[Any, Any]] = {
        "rowq/axis_last": np.asarray([-1], dtype=np.int64),
        "rowq/pos_inf": np.asarray(np.inf, dtype=np.float32),
        "rowq/neg_inf": np.asarray(-np.inf, dtype=np.float32),
        "rowq/zero": np.asarray(0.0, dtype=np.float32),
        "rowq/q_max": np.asarray(255.0, dtype=np.float32),
    }
    replaced: dict[str, list[onnx.NodeProto]] = {}  # original node name -> its replacement
    for i, node in enumerate(graph.node):
        if node.op_type != "DynamicQuantizeLinear":
            continue
        x, (y, y_scale, y_zp) = node.input[0], node.output
        p = f"rowq/{i}/"
        nodes = [
            helper.make_node("Where", ["rowq/mask", x, "rowq/pos_inf"], [p + "lo_src"]),
            helper.make_node("Where", ["rowq/mask", x, "rowq/neg_inf"], [p + "hi_src"]),
            helper.make_node("ReduceMin", [p + "lo_src"], [p + "lo_raw"], axes=[1, 2], keepdims=1),
            helper.make_node("ReduceMax", [p + "hi_src"], [p + "hi_raw"], axes=[1, 2], keepdims=1),
            helper.make_node("Min", [p + "lo_raw", "rowq/zero"], [p + "lo"]),
            helper.make_node("Max", [p + "hi_raw", "rowq/zero"], [p + "hi"]),
            helper.make_node("Sub", [p + "hi", p + "lo"], [p + "span"]),
            helper.make_node("Div", [p + "span", "rowq/q_max"], [y_scale]),
            helper.make_node("Div", [p + "lo", y_scale], [p + "lo_q"]),
            helper.make_node("Sub", ["rowq/zero", p + "lo_q"], [p + "zp_raw"]),
            helper.make_node("Round", [p + "zp_raw"], [p + "zp_round"]),
            helper.make_node("Clip", [p + "zp_round", "rowq/zero", "rowq/q_max"], [p + "zp_f"]),
            helper.make_node("Div", [x, y_scale], [p + "x_q"]),
            helper.make_node("Round", [p + "x_q"], [p + "x_round"]),
            helper.make_node("Add", [p + "x_round", p + "zp_f"], [p + "x_shift"]),
            helper.make_node("Clip", [p + "x_shift", "rowq/zero", "rowq/q_max"], [p + "x_clip"]),
            helper.make_node("Cast", [p + "x_clip"], [y], to=TensorProto.UINT8),
            helper.make_node("Cast", [p + "zp_f"], [y_zp + "/int32"], to=TensorProto.INT32),
        ]
        replaced[node.name or f"#{i}"] = nodes
        for j, mm in enumerate(c for c in consumers.get(y, []) if c.op_type == "MatMulInteger"):
            weight, w_zp = mm.input[1], mm.input[3]
            w = numpy_helper.to_array(inits[weight]).astype(np.int32)
            wz = numpy_helper.to_array(inits[w_zp]).astype(np.int32)
            colsum = (w - wz).sum(axis=0, dtype=np.int32)
            q = f"{p}mm{j}/"
            consts[q + "colsum"] = colsum
            out = mm.output[0]
            mm.ClearField("input")
            mm.input.extend([y, weight, "", w_zp])
            mm.ClearField("output")
            mm.output.append(q + "raw")
            nodes_after = [
                helper.make_node("Mul", [y_zp + "/int32", q + "colsum"], [q + "correction"]),
                helper.make_node("Sub", [q + "raw", q + "correction"], [out]),
            ]
            replaced.setdefault(f"after:{mm.name}", []).extend(nodes_after)

    ordered: list[onnx.NodeProto] = list(new_nodes)
    for i, node in enumerate(graph.node):
        if node.op_type == "DynamicQuantizeLinear":
            ordered.extend(replaced[node.name or f"#{i}"])
            continue
        ordered.append(node)
        ordered.extend(replaced.get(f"after:{node.name}", []))
    graph.ClearField("node")
    graph.node.extend(ordered)
    for name, value in consts.items():
        graph.initializer.append(numpy_helper.from_array(value, name))
    data: bytes = model.SerializeToString()
    return data
