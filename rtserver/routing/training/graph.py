"""ONNX graph surgery: int8-quantise the encoder, then append the logistic head.

The head stays float32 (384 x 5 weights): quantising it would save 6 KB and cost
accuracy. It is appended after quantisation, so ``quantize_dynamic`` only sees
the encoder.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import onnx
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic

from rtserver.routing.classifier import OUTPUT_NAME
from rtserver.routing.training.head import LinearHead

EMBEDDING_OUTPUT = "embedding"
QUANTIZED_OPS: tuple[str, ...] = ("MatMul", "Gather")


def quantize_encoder(fp32_path: Path, out_path: Path) -> None:
    """Dynamic int8 quantisation, per output channel, of every MatMul and the embedding tables (Gather)."""
    quantize_dynamic(
        fp32_path,
        out_path,
        op_types_to_quantize=list(QUANTIZED_OPS),
        per_channel=True,
        weight_type=QuantType.QInt8,
    )


def attach_head(
    encoder_path: Path,
    head: LinearHead,
    labels: Sequence[str],
    out_path: Path,
    metadata: Mapping[str, str],
) -> None:
    """Write ``encoder_path`` + ``softmax(embedding @ W + b)`` as one graph whose only output is ``probabilities``."""
    model = onnx.load(str(encoder_path))
    graph = model.graph
    if [o.name for o in graph.output] != [EMBEDDING_OUTPUT]:
        raise ValueError(f"{encoder_path}: expected a single {EMBEDDING_OUTPUT!r} output")
    graph.initializer.extend(
        [
            numpy_helper.from_array(head.weight, "head.weight"),
            numpy_helper.from_array(head.bias, "head.bias"),
        ]
    )
    graph.node.extend(
        [
            helper.make_node("MatMul", [EMBEDDING_OUTPUT, "head.weight"], ["head.matmul"], name="head/MatMul"),
            helper.make_node("Add", ["head.matmul", "head.bias"], ["head.logits"], name="head/Add"),
            helper.make_node("Softmax", ["head.logits"], [OUTPUT_NAME], name="head/Softmax", axis=-1),
        ]
    )
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", len(labels)]))
    props = dict(metadata)
    props["labels"] = json.dumps(list(labels))
    del model.metadata_props[:]
    for key in sorted(props):
        model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=props[key]))
    model.doc_string = "MiniLM-L6 int8 + mean pooling + L2 norm + logistic head; rtserver intent router"
    onnx.checker.check_model(model)
    onnx.save(model, str(out_path))
