"""Generative VLMs on HTP: the static decoder graphs, the host-side embedding Gather, and their runners.

The vision tower goes through the ordinary per-component QNN path (backend.py). Here:

- ``embed_tokens``: a host-side Gather over the float table read from the exported graph (the
  table is the input of its Gather). On the device the lookup is one row copy per token on the
  CPU, which is also what Qualcomm's LLM runtimes do; an HTP graph would need a static token
  count and a 16-bit quantized table for no speed gain.
- ``decoder``: re-exported as two static graphs (static_decoder.py), prefill (C tokens) and decode
  (1 token), each calibrated on its own feeds (the decode graph on greedy steps of the float graphs
  from every calibration prompt), quantized (uint16 activations, per-channel weights), checked to
  place every node on HTP, and compiled to its own EPContext binary in ``decoder.htp/``.
  The two binaries each hold the weights. EPContext weight sharing was tried with onnxruntime-qnn
  2.7 (QAIRT 2.51): compiling both graphs with ``ep.share_ep_contexts`` (+ ``ep.stop_share_ep_contexts``
  on the last, embed mode 0) writes one shared ``.bin`` (316 KiB for a tiny decoder vs 2 x 209 KiB),
  but the x86-64 HTP emulator cannot load it (``contextCreateFromBinary``: QNN_COMMON_ERROR_NOT_SUPPORTED
  with sharing on, a crash with it off), so nothing built that way could be validated here.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from edgecompile.backends.qnn.static_decoder import DECODE, PREFILL, StaticDecoderRunner, StaticLayout, decode_calibration_feeds, export_static_decoder, layout_for, text_config_check
from edgecompile.errors import InputError, StageError

DECODER_DIR = "decoder.htp"
EMBED_FILE = "embed_tokens.table.npy"
ROTARY_FILE = "rotary.npz"
GRAPH_FILES = {PREFILL: "prefill.htp_ctx.onnx", DECODE: "decode.htp_ctx.onnx"}


def graph_files(layout: StaticLayout) -> dict[str, str]:
    """kind -> EPContext file: prefill and decode, plus one per pruned prefill segment (``prefill_1.htp_ctx.onnx``...)."""
    return {kind: GRAPH_FILES.get(kind, f"{kind}.htp_ctx.onnx") for kind in layout.kinds()}


def embedding_table(path: Path) -> np.ndarray:
    """The [vocab, hidden] table of the exported embed_tokens graph (the data input of its Gather)."""
    model = onnx.load(str(path))
    inits = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Gather" and node.input[0] in inits and len(inits[node.input[0]].dims) == 2:
            return numpy_helper.to_array(inits[node.input[0]]).astype(np.float32)
    raise StageError("build", f"{path}: no Gather over a 2-D table: the embed_tokens graph is not the plain embedding lookup the host-side Gather replaces")


def build_generative(inputs: Any, options: Any, settings: Any, ep_options: dict[str, str], compile_component: Callable[..., dict[str, Any]]) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
    """(files, per-graph summaries, the generative record) for embed_tokens and the decoder."""
    import onnxruntime as ort

    started = time.perf_counter()
    if inputs.model_dir is None:
        raise StageError("build", "the qnn backend re-exports the decoder from the torch model and needs the model directory")
    loaded = inputs.adapter.load(inputs.model_dir)
    text = text_config_check(loaded.config, str(inputs.model_dir / "config.json"))
    layout = layout_for(text, options.context_length, options.prefill_chunk, options.attention_mask_value)
    if inputs.token_pruning is not None:  # seed 003 on HTP: prefill segments between the prune layers (static_pruning.py)
        layout = layout.with_pruning(inputs.token_pruning, inputs.recipe.token_pruning.residual_bits)
    image_token_id = inputs.adapter.generation_spec(loaded.config).image_token_id
    files = graph_files(layout)
    table = embedding_table(inputs.exported["embed_tokens"])
    np.save(inputs.out_dir / EMBED_FILE, table)
    decoder_dir = inputs.out_dir / DECODER_DIR
    decoder_dir.mkdir(exist_ok=True)
    summaries: dict[str, Any] = {}
    settings = replace(settings, weight_type=options.decoder_weight_type)
    with tempfile.TemporaryDirectory(prefix="edgecompile-qnn-decoder-") as tmp:
        paths = export_static_decoder(inputs.adapter, loaded, layout, Path(tmp), getattr(inputs.recipe, "opset", 18))
        del loaded
        export_s = time.perf_counter() - started
        rotary = np.load(paths["rotary"])
        np.savez(decoder_dir / ROTARY_FILE, cos=rotary["cos"], sin=rotary["sin"])
        floats = {k: ort.InferenceSession(str(paths[k]), providers=["CPUExecutionProvider"]) for k in layout.kinds()}
        float_run = _session_run(floats)
        runner = StaticDecoderRunner(layout, rotary["cos"], rotary["sin"], float_run)
        feeds: dict[str, list[dict[str, np.ndarray]]] = {k: [] for k in layout.kinds()}
        prompts = iter(inputs.calibration_feeds("decoder"))
        if layout.prune_layers:  # each segment is calibrated on the pruned sequences it will see
            prompts = _with_visual_mask(prompts, inputs.calibration_feeds("embed_tokens"), image_token_id)
        for kind, static in decode_calibration_feeds(runner, prompts, table, options.decoder_calibration_steps):
            feeds[kind].append(static)
        del floats
        if not feeds[PREFILL]:
            raise InputError(f"recipes/{inputs.recipe.name}.yaml: calibration: no sample gave a decoder prompt (the decoder is calibrated on image + question samples)")
        for kind in layout.kinds():
            model = onnx.load(str(paths[kind]))
            name = f"decoder_{kind}"
            summaries[name] = compile_component(model, layout.input_shapes(kind), iter(feeds[kind]), name, inputs, options, settings, ep_options, decoder=True, ctx_path=decoder_dir / files[kind])
            summaries[name]["calibration_feeds"] = len(feeds[kind])
    pruned = (f"; visual-token pruning after layers {list(layout.prune_layers)} (keep {[round(r, 4) for r in layout.prune_keep]} of {layout.image_tokens} image tokens): "
              f"prefill segments {', '.join(files[k] for k in layout.prefill_kinds())} of {[layout.tokens(k) for k in layout.prefill_kinds()]} tokens, the prune steps scored on the host between them") if layout.prune_layers else ""
    record = {
        "layout": layout.to_json(),
        "files": {"decoder_dir": DECODER_DIR, "graphs": files, "rotary": ROTARY_FILE, "embedding": EMBED_FILE},
        "decoder_weight_type": options.decoder_weight_type,
        "weight_sharing": ("none: the prefill graph(s) and the decode graph each hold a copy of the decoder weights (pruned prefill segments split the layers, so together they hold one); "
                           "a shared context (ep.share_ep_contexts) compiles but the x86-64 HTP emulator cannot load it (QNN_COMMON_ERROR_NOT_SUPPORTED)"),
        "export_s": export_s,
        "build_s": time.perf_counter() - started,
        "note": (
            f"decoder: static-shape HTP graphs, context {layout.context} tokens, prefill chunk {layout.chunk}, KV cache [1, {layout.kv_heads}, slots, {layout.head_dim}] per layer "
            f"as graph inputs with an additive attention bias and host-side rotary rows; two EPContext binaries (decoder.htp/{GRAPH_FILES[PREFILL]}, {GRAPH_FILES[DECODE]}); "
            f"decoder weights {options.decoder_weight_type} per channel; embed_tokens is a host-side Gather over the float table ({EMBED_FILE}){pruned}"
        ),
    }
    return {"embed_tokens": EMBED_FILE, "decoder": DECODER_DIR}, summaries, record


def _with_visual_mask(prompts: Any, ids: Any, image_token_id: int) -> Any:
    """The decoder's calibration prompts with their image-token mask (both streams skip the same samples)."""
    for feeds, embed in zip(prompts, ids, strict=True):
        yield {**feeds, "visual_token_mask": (np.asarray(embed["input_ids"]) == image_token_id).astype(np.int64)}


def _session_run(sessions: dict[str, Any]) -> Callable[[str, dict[str, np.ndarray]], dict[str, np.ndarray]]:
    names = {k: [o.name for o in s.get_outputs()] for k, s in sessions.items()}

    def run(kind: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(names[kind], sessions[kind].run(names[kind], feeds), strict=True))

    return run


def generative_runners(artifact_dir: Path, artifact: Any, record: dict[str, Any], options: dict[str, str], allowed: set[str]) -> dict[str, Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]]:
    """component -> runner for the hosted components (embedding Gather, static decoder) present in ``artifact``."""
    from edgecompile.backends.qnn.session import htp_session

    layout = StaticLayout.from_json(record["layout"])
    files = record["files"]
    runners: dict[str, Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]] = {}
    if "embed_tokens" in artifact.components:
        table = np.load(artifact_dir / artifact.components["embed_tokens"], allow_pickle=False)

        def embed(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            ids = np.asarray(feeds["input_ids"])
            if ids.size and (ids.min() < 0 or ids.max() >= table.shape[0]):
                raise InputError(f"embed_tokens: token ids must lie in [0, {table.shape[0]}); got {int(ids.min())}..{int(ids.max())}")
            return {"inputs_embeds": table[ids]}

        runners["embed_tokens"] = embed
    if "decoder" in artifact.components:
        folder = artifact_dir / artifact.components["decoder"]
        rotary = np.load(folder / files["rotary"], allow_pickle=False)
        sessions: dict[str, Any] = {}

        def graph(kind: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            if kind not in sessions:
                sessions[kind] = htp_session(folder / files["graphs"][kind], options, strict=f"decoder_{kind}" not in allowed)
            session = sessions[kind]
            names = [o.name for o in session.get_outputs()]
            return dict(zip(names, session.run(names, feeds), strict=True))

        runners["decoder"] = StaticDecoderRunner(layout, rotary["cos"], rotary["sin"], graph)
    return runners
