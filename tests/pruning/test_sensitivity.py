"""QUOTA's per-layer low-bit sensitivity on a tiny Llava: one value per decoder layer, ordered by bit width."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgecompile.pruning.sensitivity import decoder_sensitivity, fake_quantize, fake_quantized
from tests.tiny_llava import save_tiny_llava

SAMPLES = 4


@pytest.fixture(scope="module")
def llava(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    from edgecompile.data.sources import calibration_samples
    from edgecompile.models.llava import LlavaAdapter

    adapter = LlavaAdapter()
    loaded = adapter.load(save_tiny_llava(tmp_path_factory.mktemp("sensitivity") / "model", layers=3))
    return adapter, loaded, lambda: calibration_samples("synthetic", SAMPLES)


def test_fake_quantize_is_symmetric_rounding() -> None:
    x = torch.tensor([[0.0, 0.5, -1.0, 0.26]])
    q = fake_quantize(x, 2, None)  # qmax 1: scale 1.0, values round to -1, 0, 1
    assert torch.equal(q, torch.tensor([[0.0, 0.0, -1.0, 0.0]]))
    assert torch.allclose(fake_quantize(x, 8, 2), x, atol=1.0 / 127)


def test_one_value_per_layer_and_more_bits_deviate_less(llava) -> None:  # noqa: ANN001
    adapter, loaded, samples = llava
    s2, n = decoder_sensitivity(adapter, loaded, samples(), weight_bits=2)
    s4, _ = decoder_sensitivity(adapter, loaded, samples(), weight_bits=4)
    s8, _ = decoder_sensitivity(adapter, loaded, samples(), weight_bits=8)
    assert n == SAMPLES and s4.shape == (3,)
    assert np.all(np.isfinite(s4)) and np.all(s4 > 0)
    assert np.all(s8 < s4) and np.all(s4 < s2), (s2, s4, s8)
    assert np.all(s8 < 0.05)
    again, _ = decoder_sensitivity(adapter, loaded, samples(), weight_bits=4)
    assert np.array_equal(again, s4)  # deterministic
    with_acts, _ = decoder_sensitivity(adapter, loaded, samples(), weight_bits=4, act_bits=4)
    assert np.all(with_acts > s4 * 0.5) and not np.array_equal(with_acts, s4)


def test_float_weights_restored_after_the_low_bit_pass(llava) -> None:  # noqa: ANN001
    adapter, loaded, _ = llava
    lm = adapter.language_model(loaded)
    x = torch.randn(1, 5, lm.config.hidden_size, generator=torch.Generator().manual_seed(0))
    linear = next(m for m in lm.modules() if isinstance(m, torch.nn.Linear))
    before = linear(x)
    with fake_quantized(lm, 2, None, 32):
        assert not torch.equal(linear(x), before)
    assert torch.equal(linear(x), before)


def test_bad_bits_refused(llava) -> None:  # noqa: ANN001
    adapter, loaded, samples = llava
    with pytest.raises(ValueError, match="at least 2 bits"):
        decoder_sensitivity(adapter, loaded, samples(), weight_bits=1)


def test_isolated_mode_measures_each_layer_on_its_float_input(llava) -> None:  # noqa: ANN001
    adapter, loaded, samples = llava
    cumulative, _ = decoder_sensitivity(adapter, loaded, samples(), weight_bits=4)
    isolated, _ = decoder_sensitivity(adapter, loaded, samples(), weight_bits=4, mode="isolated")
    assert isolated.shape == cumulative.shape and np.all(isolated > 0)
    assert isolated[0] == pytest.approx(cumulative[0], rel=1e-5)  # layer 0's input is the float embeddings either way
    assert not np.allclose(isolated[1:], cumulative[1:])
    with pytest.raises(ValueError, match="mode"):
        decoder_sensitivity(adapter, loaded, samples(), mode="both")
