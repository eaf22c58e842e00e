"""A pre-LN transformer block fragment as a real ONNX graph: LN → q/k/v MatMuls, LN → fc1 → GELU → fc2.

Activations get a few outlier channels (as ViTs and LLMs have), so smoothing and AWQ scaling have
something to do; the graph is small enough that a transform runs in well under a second.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgecompile.plan.plan import PlanEntry

HIDDEN = 64
MLP = 128
TOKENS = 17


def block_graph(seed: int = 0) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    gamma = np.ones(HIDDEN, np.float32)
    gamma[[3, 17, 40]] = [12.0, 8.0, 20.0]  # outlier channels after the LayerNorm
    weights = {
        "ln_gamma": gamma,
        "ln_beta": rng.normal(0, 0.1, HIDDEN).astype(np.float32),
        "w_q": rng.normal(0, 0.05, (HIDDEN, HIDDEN)).astype(np.float32),
        "w_k": rng.normal(0, 0.05, (HIDDEN, HIDDEN)).astype(np.float32),
        "w_v": rng.normal(0, 0.05, (HIDDEN, HIDDEN)).astype(np.float32),
        "w_fc1": rng.normal(0, 0.05, (HIDDEN, MLP)).astype(np.float32),
        "w_fc2": rng.normal(0, 0.05, (MLP, HIDDEN)).astype(np.float32),
        "b_fc1": rng.normal(0, 0.05, MLP).astype(np.float32),
    }
    nodes = [
        helper.make_node("LayerNormalization", ["x", "ln_gamma", "ln_beta"], ["ln"], name="ln1", axis=-1),
        helper.make_node("MatMul", ["ln", "w_q"], ["q"], name="q_proj"),
        helper.make_node("MatMul", ["ln", "w_k"], ["k"], name="k_proj"),
        helper.make_node("MatMul", ["ln", "w_v"], ["v"], name="v_proj"),
        helper.make_node("LayerNormalization", ["x", "ln2_gamma", "ln2_beta"], ["ln2"], name="ln2", axis=-1),
        helper.make_node("MatMul", ["ln2", "w_fc1"], ["h0"], name="fc1"),
        helper.make_node("Add", ["h0", "b_fc1"], ["h1"], name="fc1_bias"),
        helper.make_node("Gelu", ["h1"], ["h"], name="gelu"),
        helper.make_node("MatMul", ["h", "w_fc2"], ["y"], name="fc2"),
    ]
    weights["ln2_gamma"] = gamma[::-1].copy()
    weights["ln2_beta"] = np.zeros(HIDDEN, np.float32)
    graph = helper.make_graph(
        nodes,
        "block",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", TOKENS, HIDDEN])],
        [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in ("q", "k", "v", "y")],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 10
    return model, weights


def entries(precision: str, activations: str | None = None, granularity: str | None = None, block: int | None = 32) -> list[PlanEntry]:
    gran = granularity or ("per_block" if precision == "int4" else "per_channel")
    out = []
    for node, weight in (("q_proj", "w_q"), ("k_proj", "w_k"), ("v_proj", "w_v"), ("fc1", "w_fc1"), ("fc2", "w_fc2")):
        out.append(PlanEntry("c", node, "MatMul", "attn_qkv" if node.endswith("proj") else "mlp", node, weight, precision, gran, block if precision == "int4" and gran == "per_block" else None, True, "test", "test", activations=activations if precision == "int4" else None))
    return out


def samples(count: int = 8, seed: int = 1) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.normal(0, 1, (1, TOKENS, HIDDEN)).astype(np.float32)} for _ in range(count)]


def run(model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    outs = [session.run(None, f) for f in feeds]
    return {n: np.concatenate([o[i] for o in outs]) for i, n in enumerate(names)}


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
