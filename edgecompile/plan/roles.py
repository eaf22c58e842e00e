"""Recognize what each node of an exported graph *is* (patch embedding, q/k/v projection, ...).

The torch.onnx dynamo exporter records, per node, the module path and class it came from
(``pkg.torch.onnx.name_scopes`` / ``class_hierarchy``). Roles are read from those, so rules can say
"INT8 for attention projections" without knowing any family's parameter names. Graphs without that
metadata (another exporter) fall back to the weight initializer's name.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

import onnx

ROLES = (
    "patch_embed",
    "attn_qkv",
    "attn_out",
    "attn_matmul",
    "softmax",
    "layernorm",
    "mlp",
    "residual_add",
    "projector",
    "embeddings",
    "lm_head",
    "kv_cache",
    "other",
)

WEIGHT_OPS = {"MatMul", "Gemm", "Conv"}

_PATH_ROLES: tuple[tuple[str, str], ...] = (
    (r"(patch_embed|patch_embedding)", "patch_embed"),
    (r"(multi_modal_projector|visual_projection|text_projection|mm_projector|connector|^projection$|\.head$|^head$)", "projector"),
    (r"lm_head", "lm_head"),
    (r"(q_proj|k_proj|v_proj|qkv|\.query$|\.key$|\.value$|c_attn)", "attn_qkv"),
    (r"(out_proj|o_proj|attention\.output\.dense|c_proj$)", "attn_out"),
    (r"(fc1|fc2|mlp|gate_proj|up_proj|down_proj|intermediate\.dense|output\.dense|ffn)", "mlp"),
    (r"(embed_tokens|token_embedding|position_embedding|embeddings)", "embeddings"),
)


@dataclass(frozen=True)
class NodeInfo:
    """What the plan needs to know about one node."""

    name: str
    op_type: str
    module: str
    module_class: str
    role: str
    weight: str | None


def _metadata(node: onnx.NodeProto) -> dict[str, str]:
    return {p.key: p.value for p in node.metadata_props}


def _scopes(node: onnx.NodeProto) -> tuple[str, str]:
    """Return (module path, module class) of the innermost module that produced ``node``."""
    meta = _metadata(node)
    try:
        scopes = ast.literal_eval(meta.get("pkg.torch.onnx.name_scopes", "[]"))
        classes = ast.literal_eval(meta.get("pkg.torch.onnx.class_hierarchy", "[]"))
    except (ValueError, SyntaxError):
        return "", ""
    # The last entry is the aten op; the one before it is the innermost module.
    module = scopes[-2] if len(scopes) >= 2 else ""
    module_class = classes[-2] if len(classes) >= 2 else ""
    return module, module_class


def _strip_wrapper(path: str) -> str:
    """Drop the export wrapper's attribute prefix (``m.``) so paths read like HF parameter names."""
    return path[2:] if path.startswith("m.") else path


RolePatterns = tuple[tuple[str, str], ...]


def classify(node: onnx.NodeProto, initializers: set[str], patterns: RolePatterns = ()) -> NodeInfo:
    """Return the role of one node; ``initializers`` are the graph's constant tensor names.

    ``patterns`` are a model family's own (module-path regex, role) pairs, tried before the
    generic ones: a family whose projector is called ``merger`` says so in its adapter.
    """
    module, module_class = _scopes(node)
    module = _strip_wrapper(module)
    weight = next((i for i in node.input[1:2] if i in initializers), None) if node.op_type in WEIGHT_OPS else None
    if node.op_type == "MatMul" and weight is None and node.input and node.input[0] in initializers:
        weight = None  # constant on the left is not a linear layer's weight
    role = _role(node, module, module_class, weight, patterns)
    return NodeInfo(node.name, node.op_type, module, module_class.rsplit(".", 1)[-1], role, weight)


def _role(node: onnx.NodeProto, module: str, module_class: str, weight: str | None, patterns: RolePatterns = ()) -> str:
    op = node.op_type
    if op == "Concat" and node.output and node.output[0].startswith(("present_key_", "present_value_")):
        return "kv_cache"  # Concat(past, new) -> present: the decoder's KV cache (decoder_export's names)
    if op == "Softmax":
        return "softmax"
    if op in {"LayerNormalization", "SimplifiedLayerNormalization", "RMSNormalization"} or re.search(r"(norm|layrnorm)\b|LayerNorm|RMSNorm", module_class + "." + module.rsplit(".", 1)[-1]):
        return "layernorm"
    path = module or (weight or "")
    if op in WEIGHT_OPS and weight is not None:
        for pattern, role in (*patterns, *_PATH_ROLES):
            if re.search(pattern, path):
                return role
        return "other"
    if op == "MatMul":
        return "attn_matmul"
    if op == "Add" and module_class.endswith(("EncoderLayer", "DecoderLayer", "Layer", "Block")):
        return "residual_add"
    if op == "Gather" and re.search(r"embed", path):
        return "embeddings"
    return "other"


def classify_graph(model: onnx.ModelProto, patterns: RolePatterns = ()) -> list[NodeInfo]:
    """Classify every node of ``model``'s main graph (``patterns``: the family's own, tried first)."""
    initializers = {t.name for t in model.graph.initializer}
    initializers |= {n.output[0] for n in model.graph.node if n.op_type == "Constant"}
    return [classify(node, initializers, patterns) for node in model.graph.node]
