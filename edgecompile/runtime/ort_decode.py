"""The ORT CPU fast decode path: one preallocated KV buffer shared by past and present, I/O binding throughout.

The generic loop (``generate.stream_tokens`` on any ``ComponentRunner``) feeds numpy arrays and gets
numpy arrays back: every step converts 2 x layers cache tensors into ONNX Runtime values, lets
GroupQueryAttention copy the whole past into a fresh present one position longer, and copies that back
into numpy. With the decoder fused into GroupQueryAttention (the ORT CPU build's decoder step) none of
that is needed: GroupQueryAttention appends in place when ``past_key`` and ``present_key`` are the same
buffer of the maximum length (what onnxruntime-genai calls ``past_present_share_buffer``), and reads
only the first ``seqlens_k + 1`` positions of it, so the decoder's interface does not change (the mask
still grows by one each step, which is where the graph takes ``seqlens_k`` and the total length from).

Per decode step this path writes one token id into a bound buffer, runs embed_tokens with its output
bound to the decoder's ``inputs_embeds`` buffer, runs the decoder with the logits bound to a
preallocated buffer, and takes the argmax: no allocation, no cache copy. The cache dtype (float32 or
INT8 with ``kv_cache_bit_width=8``) is read from the graph's ``past_key_0`` input.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int8)": np.int8, "tensor(uint8)": np.uint8}


def shares_buffer(model_path: Path) -> bool:
    """Does every ``present_key_i`` / ``present_value_i`` come out of a GroupQueryAttention (so past and present may be one buffer)?

    False where ``onnx`` is not installed (the torch-free device venv: numpy + onnxruntime only): the
    graph cannot be read there, and the generic loop gives the same tokens, only slower.
    """
    try:
        import onnx
    except ImportError:
        return False
    model = onnx.load(str(model_path), load_external_data=False)
    if any(i.name == "visual_token_mask" for i in model.graph.input):
        return False  # a token-pruned decoder: its layers' caches differ in length (backends.ort_cpu.token_pruning)
    presents = [o.name for o in model.graph.output if o.name.startswith(("present_key_", "present_value_"))]
    from_gqa = {o for n in model.graph.node if n.op_type == "GroupQueryAttention" for o in n.output[1:3]}
    return bool(presents) and all(p in from_gqa for p in presents)


def cache_dtype(session: ort.InferenceSession) -> np.dtype:
    """The dtype of the decoder's KV cache, from its ``past_key_0`` input."""
    kind = next(i.type for i in session.get_inputs() if i.name == "past_key_0")
    if kind not in _ORT_DTYPES:
        raise ValueError(f"decoder input past_key_0: cache type {kind} is not one this runtime allocates; expected one of {', '.join(_ORT_DTYPES)}")
    return np.dtype(_ORT_DTYPES[kind])


def _value(array: np.ndarray) -> ort.OrtValue:
    """An OrtValue over ``array``'s own memory (CPU): writing the array updates what the session reads."""
    return ort.OrtValue.ortvalue_from_numpy(array)


class OrtDecoder:
    """Greedy decode on a GroupQueryAttention decoder with a shared, preallocated cache of ``max_length`` positions.

    ``embed`` is the embed_tokens session (input_ids -> inputs_embeds); with it :meth:`step` takes a
    token id, without it the caller writes :attr:`embeds` before each :meth:`step` (the bench does).
    """

    def __init__(self, decoder: ort.InferenceSession, layers: int, max_length: int, embed: ort.InferenceSession | None = None) -> None:
        self.session, self.max_length = decoder, max_length
        inputs = {i.name: i for i in decoder.get_inputs()}
        self.dtype = cache_dtype(decoder)
        kv_heads, head_dim = (int(d) for d in (inputs["past_key_0"].shape[1], inputs["past_key_0"].shape[3]))
        self.hidden = int(inputs["inputs_embeds"].shape[2])
        self.vocab = int(next(o for o in decoder.get_outputs() if o.name == "logits").shape[2])
        self.position_rank = len(inputs["position_ids"].shape)
        self.cache = {n: np.zeros((1, kv_heads, max_length, head_dim), self.dtype) for i in range(layers) for n in (f"past_key_{i}", f"past_value_{i}")}
        self._cache_values = {n: _value(a) for n, a in self.cache.items()}
        self.embeds = np.zeros((1, 1, self.hidden), np.float32)
        self.positions = np.zeros((3, 1, 1) if self.position_rank == 3 else (1, 1), np.int64)
        self.mask = np.ones((1, max_length), np.int64)
        self.logits = np.zeros((1, 1, self.vocab), np.float32)
        self.token = np.zeros((1, 1), np.int64)
        self.length = 0
        self._binding = decoder.io_binding()
        for name, value in self._cache_values.items():
            self._binding.bind_ortvalue_input(name, value)
            self._binding.bind_ortvalue_output(name.replace("past_", "present_"), value)  # the same buffer: appended in place
        self._embed = None
        if embed is not None and embed.get_outputs()[0].type == "tensor(float)":
            self._embed = embed.io_binding()
            self._embed.bind_ortvalue_input("input_ids", _value(self.token))
            self._embed.bind_ortvalue_output("inputs_embeds", _value(self.embeds))
        self._embed_session = embed

    @property
    def cache_bytes(self) -> int:
        """Bytes of the preallocated cache (all layers, keys and values, ``max_length`` positions)."""
        return sum(a.nbytes for a in self.cache.values())

    def _run(self, total: int) -> None:
        self._binding.bind_input("attention_mask", "cpu", 0, np.int64, [1, total], self.mask.ctypes.data)
        self.session.run_with_iobinding(self._binding)

    def prefill(self, inputs_embeds: np.ndarray, position_ids: np.ndarray) -> np.ndarray:
        """Run the prompt from an empty cache; the last position's logits (vocab,)."""
        n = inputs_embeds.shape[1]
        if n > self.max_length:
            raise ValueError(f"the prompt has {n} tokens but the cache holds {self.max_length}")
        embeds, positions = np.ascontiguousarray(inputs_embeds, np.float32), np.ascontiguousarray(position_ids, np.int64)
        self._binding.bind_ortvalue_input("inputs_embeds", _value(embeds))
        self._binding.bind_ortvalue_input("position_ids", _value(positions))
        self._binding.bind_output("logits", "cpu")
        self._run(n)
        self.length = n
        logits = self._binding.get_outputs()[-1].numpy()[0, -1].copy()
        self._binding.bind_ortvalue_input("inputs_embeds", _value(self.embeds))  # from here on: one token, bound buffers
        self._binding.bind_ortvalue_input("position_ids", _value(self.positions))
        self._binding.bind_ortvalue_output("logits", _value(self.logits))
        return logits

    def step(self, token: int | None, position_ids: np.ndarray) -> np.ndarray:
        """Append one token (``None``: :attr:`embeds` already holds its embedding) at ``position_ids``; its logits (vocab,), a view."""
        if self.length >= self.max_length:
            raise ValueError(f"the cache is full ({self.max_length} positions)")
        if token is not None:
            self.token[0, 0] = token
            if self._embed is not None:
                self._embed_session.run_with_iobinding(self._embed)
            else:
                self.embeds[...] = self._embed_session.run(None, {"input_ids": self.token})[0]
        self.positions[...] = position_ids.reshape(self.positions.shape)
        self.length += 1
        self._run(self.length)
        return self.logits[0, -1]
