"""VLMQ (seed 001): GPTQ with a token-importance-weighted Hessian H̃ = X G² Xᵀ for the attention projections.

Redundant vision tokens dominate a VLM's calibration activations; VLMQ weights each token of the
Q/K/V/O projections' reconstruction objective by a gradient-derived importance G (eq. 4–6) and
leaves the MLP linears on the plain GPTQ Hessian (Algorithm 1). The pieces:

* G from torch, block-wise (:mod:`edgecompile.transforms.vlmq_importance`; the layer-0 case is
  explained there), one calibration sample at a time, computed on the decoder's own
  ``inputs_embeds`` so its tokens are the ONNX graph's tokens;
* H̃ from the ONNX float decoder's activations (:mod:`edgecompile.transforms.vlmq_hessian`),
  accumulated exactly as onnxruntime's ``gptq_quantize`` accumulates H;
* the rounding: onnxruntime's GPTQ entry point ``gptq_quantize`` (what
  :mod:`edgecompile.transforms.gptq` calls) computes H itself and takes no Hessian; the routine
  under it, ``neural_compressor.weight_only.gptq(W, H)``, takes one but never uses it (its error
  propagation reads the zero triangle of the Cholesky factor: see
  :mod:`edgecompile.transforms.vlmq_gptq`), so it is round-to-nearest on GPTQ's grid. The default
  ``solver: reference`` is our port of the reference loop fed H̃, packed exactly as MatMulNBits
  (``bits=4``, or ``bits=2``, which onnxruntime 1.32's CPU kernel runs). ``solver: onnxruntime``
  keeps onnxruntime's routine and its INT4 packing (``quant_tensor`` +
  ``make_matmul_weight_only_node``, line for line as ``gptq_quantize``), so with G ≡ 1 its codes
  and scales equal the ``gptq`` transform's bit for bit (tested): the check that H̃'s
  accumulation is onnxruntime's.

``vlmq.importance`` selects the ablation of seed 001's Tables 5–6: ``gradient`` (VLMQ),
``constant`` (G ≡ 1: GPTQ through this path; at INT2 it is "GPTQ INT2"), ``image_downweight``
(VLMQ_naive: G = ``image_weight`` on a random ``image_fraction`` of the image tokens, 1 elsewhere).

The transform needs the torch model and the raw samples (for G and the image-token mask), which
the transform contract does not pass: the transform stage binds them with :meth:`VlmqTransform.bind`.
The G distribution per modality comes back as ``outcome.files["vlmq_importance.json"]``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, ClassVar

import numpy as np
import onnx
from onnx import numpy_helper

from edgecompile import progress
from edgecompile.errors import InputError
from edgecompile.models.adapter import Feeds
from edgecompile.models.generative import DEFAULT_QUESTION
from edgecompile.plan.plan import PlanEntry
from edgecompile.transforms.base import TransformOutcome
from edgecompile.transforms.gptq import _int4_settings, adopt_rounded
from edgecompile.transforms.prequantized import Prequantized
from edgecompile.transforms.vlmq_gptq import gptq_weight, matmul_nbits
from edgecompile.transforms.vlmq_hessian import CHUNK_TENSORS, weighted_hessians
from edgecompile.transforms.vlmq_importance import BlockwiseImportance, SampleImportance, attention_projection

IMPORTANCE_FILE = "vlmq_importance.json"


@dataclass(frozen=True)
class VlmqSettings:
    """``quantization.vlmq`` (validated by the recipe; these are the defaults)."""

    importance: str = "gradient"  # gradient | constant | image_downweight
    norm: str = "l1"  # l1 | l2 (eq. 4, or the token's RMS gradient)
    perturb: str = "inputs"  # inputs (eq. 5, layer-0 fallback) | inputs_and_block
    bits: int = 4  # 4 | 2
    damping: float = 0.01  # GPTQ's percdamp: λ = damping · mean(diag H̃)
    act_order: bool = False
    samples: int | None = None  # at most this many calibration samples (None: all)
    image_weight: float = 0.05  # image_downweight: G on the down-weighted image tokens
    image_fraction: float = 1.0  # image_downweight: share of image tokens down-weighted (seed's LI ratio)
    seed: int = 0  # image_downweight's random subset
    chunk_tensors: int = CHUNK_TENSORS
    solver: str = "reference"  # reference: our port of GPTQ's loop | onnxruntime: its gptq() (ignores H in 1.32: RTN)


@dataclass
class TorchSide:
    """What G needs beyond the ONNX graph: the adapter, the loaded torch model, and the raw calibration samples."""

    adapter: Any
    loaded: Any
    samples: Callable[[], Iterable[Any]]


@dataclass
class VlmqOutcome(TransformOutcome):
    files: dict[str, Any] = field(default_factory=dict)  # build-directory files (JSON documents) by name


def _pack2(codes: np.ndarray) -> np.ndarray:
    """[N, K] 2-bit codes -> MatMulNBits bytes, four per byte, lowest bits first (per block row-major)."""
    c = codes.astype(np.uint8)
    return c[:, 0::4] | (c[:, 1::4] << 2) | (c[:, 2::4] << 4) | (c[:, 3::4] << 6)


def int2_node(node: onnx.NodeProto, q: np.ndarray, block: int) -> tuple[onnx.NodeProto, list[onnx.TensorProto]]:
    """MatMulNBits bits=2 (symmetric: default zero point 2) holding GPTQ's 2-bit output ``q`` [K, N] exactly.

    Per block and column GPTQ's values are ``s·(c−2)``, ``c`` in 0..3; ``s = max(max q, −min q / 2)``
    recovers a step that reproduces every value (when the +1 level is unused, −min q/2 is either the
    step or half of it, and both grids hold the values).
    """
    k, n = q.shape
    blocks = q.T.astype(np.float64).reshape(n, k // block, block)
    step = np.maximum(blocks.max(-1), -blocks.min(-1) / 2)
    step = np.where(step > 0, step, 1.0)
    codes = np.clip(np.round(blocks / step[..., None]) + 2, 0, 3).reshape(n, k)
    packed = _pack2(codes).reshape(n, k // block, block // 4)
    name = node.input[1] + f"_Q2G{block}"
    inits = [numpy_helper.from_array(packed, name), numpy_helper.from_array(step.astype(np.float32), node.input[1] + "_scale")]
    out = onnx.helper.make_node("MatMulNBits", [node.input[0], name, inits[1].name], list(node.output), name=node.name + "_Q2", domain="com.microsoft", K=k, N=n, bits=2, block_size=block, accuracy_level=4)
    return out, inits


def int4_node(node: onnx.NodeProto, q: np.ndarray, block: int, scheme: str, dtype: np.dtype) -> tuple[onnx.NodeProto, list[onnx.TensorProto]]:
    """onnxruntime's own INT4 packing of GPTQ's output (``gptq_quantize``'s lines, so the codes match it)."""
    from onnxruntime.quantization.neural_compressor.weight_only import make_matmul_weight_only_node, pad_tensor, quant_tensor

    shape = q.shape
    k_blocks = (shape[0] + block - 1) // block
    q = pad_tensor(q, block, k_blocks)
    codes, scale, zp = quant_tensor(q.T, 4, block, scheme, "uint")
    return make_matmul_weight_only_node(node=node, weight_shape=shape, num_bits=4, group_size=block, k_blocks=k_blocks, q_weight=codes.astype("uint8"), scale=scale.astype(dtype), zero_point=zp if scheme == "asym" else None, accuracy_level=4)


def _stats(values: list[np.ndarray]) -> dict[str, float] | None:
    if not values:
        return None
    v = np.concatenate(values)
    return {"mean": float(v.mean()), "p50": float(np.percentile(v, 50)), "p90": float(np.percentile(v, 90)), "tokens": int(v.size)}


def importance_summary(per_sample: list[SampleImportance], settings: VlmqSettings, image_token_id: int) -> dict[str, Any]:
    """Per (layer, projection) and per layer: G's mean / p50 / p90 over image and text tokens, and the mean-G ratio."""
    keys = sorted({k for s in per_sample for k in s.g})
    rows, ratios = [], []
    for layer, proj in keys:
        img = _stats([s.g[(layer, proj)][s.image] for s in per_sample if s.image.any()])
        txt = _stats([s.g[(layer, proj)][~s.image] for s in per_sample if (~s.image).any()])
        ratio = img["mean"] / txt["mean"] if img and txt and txt["mean"] > 0 else None
        rows.append({"layer": layer, "projection": proj, "image": img, "text": txt, "ratio": ratio})
        if ratio is not None:
            ratios.append(ratio)
    layers = []
    for layer in sorted({k[0] for k in keys}):
        img = _stats([s.g[k][s.image] for s in per_sample for k in keys if k[0] == layer and s.image.any()])
        txt = _stats([s.g[k][~s.image] for s in per_sample for k in keys if k[0] == layer and (~s.image).any()])
        losses = [s.loss[layer] for s in per_sample if layer in s.loss]
        layers.append({"layer": layer, "image": img, "text": txt, "ratio": img["mean"] / txt["mean"] if img and txt and txt["mean"] > 0 else None, "block_loss_mean": float(np.mean(losses)) if losses else None})
    fallbacks = sorted({(layer, why) for s in per_sample for layer, why in s.fallback.items()})
    return {
        "settings": asdict(settings),
        "image_token_id": image_token_id,
        "samples": len(per_sample),
        "image_tokens_per_sample": float(np.mean([s.image.sum() for s in per_sample])) if per_sample else 0.0,
        "text_tokens_per_sample": float(np.mean([(~s.image).sum() for s in per_sample])) if per_sample else 0.0,
        "ratio_image_text": float(np.mean(ratios)) if ratios else None,  # mean over (layer, projection) of mean-G(image) / mean-G(text)
        "layers": layers,
        "projections": rows,
        "fallbacks": [{"layer": layer, "why": why} for layer, why in fallbacks],
    }


class VlmqTransform:
    name: ClassVar[str] = "vlmq"
    needs_activations: ClassVar[bool] = True
    needs_model: ClassVar[bool] = True  # the stage calls bind(TorchSide, settings) first

    def __init__(self, settings: VlmqSettings | None = None, torch_side: TorchSide | None = None) -> None:
        self.settings = settings or VlmqSettings()
        self.torch_side = torch_side

    def bind(self, torch_side: TorchSide, settings: Any = None) -> VlmqTransform:
        """A copy with the torch model, the raw samples and the recipe's ``quantization.vlmq`` (a VlmqSettings or the recipe model)."""
        if settings is not None and not isinstance(settings, VlmqSettings):
            settings = VlmqSettings(**settings.model_dump())
        return VlmqTransform(settings or self.settings, torch_side)

    def with_settings(self, **changes: Any) -> VlmqTransform:
        return VlmqTransform(replace(self.settings, **changes), self.torch_side)

    def applies_to(self, entries: list[PlanEntry]) -> bool:
        """The generative decoder's INT4 MatMuls (G is defined over its prompt tokens); other components keep RTN."""
        return any(e.precision == "int4" and e.op_type == "MatMul" and e.component == "decoder" for e in entries)

    # --- G per sample ------------------------------------------------------------------------------
    def _prefills(self, component: str) -> Iterable[tuple[Feeds, np.ndarray]]:
        """(decoder feeds, image-token mask) per kept sample, streamed."""
        side = self.torch_side
        assert side is not None
        image_id = side.adapter.image_token_id(side.loaded.config)
        count = 0
        for sample in side.samples():
            if self.settings.samples is not None and count >= self.settings.samples:
                return
            feeds = list(side.adapter.calibration_feeds(side.loaded, [sample], component))
            if not feeds:
                continue  # no image: the adapter gives no decoder feed either
            question = getattr(sample, "question", None) or getattr(sample, "text", None) or DEFAULT_QUESTION  # as calibration_feeds asks
            ids, _ = side.adapter.encode(side.loaded, sample.image, question)
            mask = ids[0] == image_id
            if mask.shape[0] != feeds[0]["inputs_embeds"].shape[1]:
                raise InputError(f"vlmq: sample {count}: {mask.shape[0]} prompt ids but {feeds[0]['inputs_embeds'].shape[1]} decoder tokens; the image-token mask cannot be aligned")
            count += 1
            yield feeds[0], mask

    def _importance(self, component: str, block: int, symmetric: bool) -> list[SampleImportance]:
        s = self.settings
        side = self.torch_side
        assert side is not None
        out: list[SampleImportance] = []
        if s.importance == "gradient":
            engine = BlockwiseImportance(side.adapter.language_model(side.loaded), s.bits, block, symmetric, s.norm, s.perturb)
            for feeds, mask in progress.track(self._prefills(component), "vlmq: block-wise token importance", total=s.samples):
                out.append(engine.sample(feeds["inputs_embeds"], feeds["position_ids"], mask))
            return out
        rng = np.random.default_rng(s.seed)
        layers = side.loaded.config.get_text_config(decoder=True).num_hidden_layers
        for _, mask in self._prefills(component):
            g = np.ones(mask.shape[0])
            if s.importance == "image_downweight":
                img = np.flatnonzero(mask)
                chosen = img if s.image_fraction >= 1.0 else rng.choice(img, size=int(round(s.image_fraction * img.size)), replace=False)
                g[chosen] = s.image_weight
            out.append(SampleImportance(image=mask, g={(i, p): g for i in range(layers) for p in ("q_proj", "k_proj", "v_proj", "o_proj")}))
        return out

    # --- the transform -------------------------------------------------------------------------
    def apply(self, model: onnx.ModelProto, component: str, entries: list[PlanEntry], feeds: Callable[[], Iterable[Feeds]] | None) -> VlmqOutcome:
        from onnxruntime.quantization.neural_compressor.weight_only import gptq

        s = self.settings
        if self.torch_side is None:
            raise InputError("quantization.int4_algorithm: vlmq needs the torch model for its token importance; the transform stage must bind it (VlmqTransform.bind)")
        int4 = [e for e in entries if e.precision == "int4" and e.op_type == "MatMul"]
        block, symmetric = _int4_settings(int4, component)
        if s.solver == "onnxruntime" and s.bits == 2 and not symmetric:
            raise InputError(f"quantization.vlmq.bits: 2 with solver: onnxruntime is packed symmetric only; the plan's INT4 entries of {component} are asymmetric (use solver: reference)")
        scheme = "sym" if symmetric else "asym"
        per_sample = self._importance(component, block, symmetric)
        if not per_sample:
            raise InputError(f"quantization.int4_algorithm: vlmq got no calibration samples with an image for component {component}")
        entry_of = {e.node: e for e in int4}
        nodes = {n.name: n for n in model.graph.node if n.name in entry_of}
        consumers: dict[str, list[str]] = {}
        for name, node in nodes.items():
            consumers.setdefault(node.input[0], []).append(name)
        weighted = {name: attention_projection(entry_of[name].module) for name in nodes}

        def weights(sample: int, node: str) -> np.ndarray | None:
            key = weighted[node]
            if key is None or s.importance == "constant":
                return None  # MLP linears (Algorithm 1) and constant G: the plain Hessian
            return per_sample[sample].g[key]

        hessians = weighted_hessians(model, consumers, lambda: (f for f, _ in self._prefills(component)), weights, s.chunk_tensors)
        inits = {i.name: i for i in model.graph.initializer}
        pre = Prequantized()
        layers = []
        for name, node in progress.track(list(nodes.items()), f"vlmq: GPTQ with H̃ ({component})"):
            weight_name = node.input[1]
            original = numpy_helper.to_array(inits[weight_name])
            if s.solver == "onnxruntime":
                q = gptq(original.copy(), hessians[name].copy(), num_bits=s.bits, group_size=block, scheme=scheme, blocksize=128, percdamp=s.damping, actorder=s.act_order, mse=False, perchannel=True)
                new, new_inits = int4_node(node, q, block, scheme, original.dtype) if s.bits == 4 else int2_node(node, q, block)
            else:
                result = gptq_weight(original, hessians[name], s.bits, block, symmetric, blocksize=128, percdamp=s.damping, act_order=s.act_order)
                new, new_inits = matmul_nbits(node, result, s.bits, block, symmetric)
            change = adopt_rounded(pre, inits, name, new, new_inits, weight_name, original)
            key = weighted[name]
            layers.append({"transform": self.name, "component": component, "node": name, "weight": weight_name, "bits": s.bits, "block_size": block, "symmetric": symmetric,
                           "relative_change": change, "importance": s.importance if key else "plain", "projection": f"{key[0]}.{key[1]}" if key else None})
        image_id = self.torch_side.adapter.image_token_id(self.torch_side.loaded.config)
        summary = importance_summary(per_sample, s, image_id)
        return VlmqOutcome(model, layers, pre, files={IMPORTANCE_FILE: summary})


TRANSFORM = VlmqTransform()
