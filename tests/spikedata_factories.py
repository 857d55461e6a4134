"""Builders of SpikeData test cases shared by the library tests."""

from pathlib import Path

import numpy as np

from spikelab.formats.pickle_io import load_spikedata_from_pickle
from spikelab.spikedata import SpikeData

DATA = Path(__file__).parent / "data"
FIXTURES = ("small", "empty_units", "neg_start")


def fixture(name: str) -> SpikeData:
    """One of the real SpikeLab 0.1.2 pickles in tests/data."""
    return load_spikedata_from_pickle(DATA / f"{name}.pkl")


def synthetic(name: str) -> SpikeData:
    """Edge cases every format must round-trip."""
    rng = np.random.default_rng(7)
    if name == "empty_units":
        return SpikeData([[], [1.0, 2.5], [], [3.25]], length=10.0)
    if name == "zero_units":
        return SpikeData([], length=100.0)
    if name == "one_spike":
        return SpikeData([[12.5]], length=20.0)
    if name == "neg_start":
        return SpikeData([[-150.0, -3.0, 0.0, 42.0], [-200.0], []], start_time=-200.0, length=500.0)
    if name == "many_units":
        train = [np.sort(rng.uniform(0, 1000, rng.integers(0, 30))) for _ in range(23)]
        attrs = [
            {"electrode": i * 2, "location": [float(i), 2.0 * i], "cluster_id": 100 + i}
            for i in range(23)
        ]
        return SpikeData(
            train,
            length=1000.0,
            neuron_attributes=attrs,
            metadata={"fs_Hz": 30000.0, "nested": {"a": [1, 2]}, "name": "x"},
        )
    if name == "raw":
        raw = rng.normal(size=(3, 50)).astype(np.float32)
        return SpikeData(
            [[1.0, 20.0], [5.5]], length=50.0, raw_data=raw, raw_time=np.arange(50, dtype=float)
        )
    raise KeyError(name)


SYNTHETIC = ("empty_units", "zero_units", "one_spike", "neg_start", "many_units", "raw")


def assert_same_trains(a: SpikeData, b: SpikeData, *, atol_ms: float = 0.0, rtol: float = 0.0):
    """Same N, start_time, length and every spike time within the tolerance (ms)."""
    assert a.N == b.N
    assert a.start_time == b.start_time
    assert a.length == b.length
    for i, (ta, tb) in enumerate(zip(a.train, b.train, strict=True)):
        assert ta.shape == tb.shape, f"unit {i}: {ta.size} vs {tb.size} spikes"
        if atol_ms == 0 and rtol == 0:
            np.testing.assert_array_equal(ta, tb, err_msg=f"unit {i}")
        else:
            np.testing.assert_allclose(ta, tb, rtol=rtol, atol=atol_ms, err_msg=f"unit {i}")
