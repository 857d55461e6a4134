"""SpikeData: construction, validation, derived forms, both module paths."""

import pickle

import numpy as np
import pytest

from spikelab.spikedata import InvalidSpikeDataError, SpikeData, spike_data, spikedata


def test_class_is_the_same_under_both_module_paths():
    assert spike_data.SpikeData is spikedata.SpikeData is SpikeData
    import spikelab

    assert spikelab.SpikeData is SpikeData


def test_constructor_sorts_trains_and_infers_n_and_length():
    sd = SpikeData([[3.0, 1.0], [2.0]])
    assert sd.N == 2
    np.testing.assert_array_equal(sd.train[0], [1.0, 3.0])
    assert sd.length == 3.0 and sd.start_time == 0.0
    assert sd.metadata == {} and sd.neuron_attributes is None
    assert sd.raw_data.shape == (0, 0) and sd.raw_time.shape == (0,)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(train=[[1.0, np.nan]]), "not finite"),
        (dict(train=[[1.0, np.inf]], length=10.0), "not finite"),
        (dict(train=[[5.0, 11.0]], length=10.0), "outside the recording"),
        (dict(train=[[-1.0]], length=10.0), "outside the recording"),
        (dict(train=[[1.0]], length=-1.0), "length must be >= 0"),
        (dict(train=[[1.0]], N=2), "N=2 but train holds 1"),
        (dict(train=[[1.0]], neuron_attributes=[{}, {}]), "neuron_attributes has 2 entries"),
        (dict(train=[["a", "b"]]), "must be numbers"),
        (dict(train=[[1.0]], raw_data=np.zeros((2, 5)), raw_time=np.arange(4.0)), "raw_time has 4"),
        (dict(train=[[1.0]], raw_data=np.zeros((2, 2, 2))), "channels x samples"),
        (dict(train=[[1.0]], start_time=float("nan")), "start_time must be finite"),
    ],
)
def test_constructor_rejects_inconsistent_data_with_a_clear_message(kwargs, message):
    train = kwargs.pop("train")
    with pytest.raises(InvalidSpikeDataError, match=message):
        SpikeData(train, **kwargs)


def test_raw_data_of_no_channels_may_have_samples_as_in_spikelab():
    sd = SpikeData([[5.0]], length=20.0, raw_data=np.zeros((0, 10)), raw_time=np.arange(10.0))
    assert sd.raw_data.shape == (0, 10) and sd.raw_time.shape == (10,)
    with pytest.raises(InvalidSpikeDataError, match="raw_time has 7 samples but raw_data has 10"):
        SpikeData([[5.0]], raw_data=np.zeros((0, 10)), raw_time=np.arange(7.0))
    with pytest.raises(InvalidSpikeDataError, match="raw_time has 7 samples but raw_data is empty"):
        SpikeData([[5.0]], raw_time=np.arange(7.0))


def test_negative_start_time_bounds_spikes():
    sd = SpikeData([[-150.0, 200.0]], start_time=-200.0, length=500.0)
    assert sd.end_time == 300.0
    with pytest.raises(InvalidSpikeDataError):
        SpikeData([[-250.0]], start_time=-200.0, length=500.0)


def test_electrodes_and_locations_from_attributes():
    attrs = [{"channel": 3, "x": 1.0, "y": 2.0}, {"channel": 7, "x": 3.0, "y": 4.0}]
    sd = SpikeData([[1.0], [2.0]], neuron_attributes=attrs)
    np.testing.assert_array_equal(sd.electrodes, [3, 7])
    np.testing.assert_array_equal(sd.unit_locations, [[1.0, 2.0], [3.0, 4.0]])
    sd2 = SpikeData([[1.0], [2.0]], neuron_attributes=[{"electrode": 1}, {}])
    assert sd2.electrodes is None and sd2.unit_locations is None
    sd3 = SpikeData([[1.0]], neuron_attributes=[{"position": (1.0, 2.0, 3.0)}])
    assert sd3.unit_locations.shape == (1, 3)


def test_raster_and_sparse_raster_agree_and_keep_end_spike_in_last_bin():
    sd = SpikeData([[0.0, 0.5, 9.9, 10.0], [], [4.0]], length=10.0)
    dense = sd.raster(1.0)
    assert dense.shape == (3, 10)
    assert dense[0, 0] == 2 and dense[0, 9] == 2 and dense[2, 4] == 1
    assert dense.sum() == sd.n_spikes
    rows, cols, counts, shape = sd.sparse_raster(1.0)
    rebuilt = np.zeros(shape, dtype=int)
    rebuilt[rows, cols] = counts
    np.testing.assert_array_equal(rebuilt, dense)
    with pytest.raises(InvalidSpikeDataError):
        sd.raster(0)


def test_idces_times_are_sorted_by_time():
    sd = SpikeData([[5.0, 1.0], [2.0, 3.0]])
    idces, times = sd.idces_times()
    np.testing.assert_array_equal(times, [1.0, 2.0, 3.0, 5.0])
    np.testing.assert_array_equal(idces, [0, 1, 1, 0])


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickle_round_trip_under_every_protocol(protocol):
    sd = SpikeData([[1.0, 2.0], []], length=5.0, metadata={"fs_Hz": 1000.0})
    back = pickle.loads(pickle.dumps(sd, protocol=protocol))
    assert back.N == 2 and back.metadata == {"fs_Hz": 1000.0}
    np.testing.assert_array_equal(back.train[0], [1.0, 2.0])


def _state(**changes):
    state = SpikeData([[1.0, 2.0]], length=5.0).__getstate__()
    state.update(changes)
    return state


@pytest.mark.parametrize("missing", ["train", "N", "length", "raw_time"])
def test_unpickled_state_must_set_every_field_and_names_the_missing_one(missing):
    state = _state()
    del state[missing]
    with pytest.raises(InvalidSpikeDataError, match=f"SpikeData state lacks '{missing}'"):
        SpikeData.__new__(SpikeData).__setstate__(state)


def _nested(value, depth):
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    "metadata",
    [
        {"k": _nested(dict, 50)},  # far below the old walk's depth-8 cutoff
        {dict: "a class as a key"},
        {"objects": np.array([1, print], dtype=object)},
        {"set": frozenset({len})},
        {"deep": _nested({"x": (1, [2, {"f": print}])}, 5000)},
    ],
)
def test_a_callable_anywhere_in_the_unpickled_state_is_refused(metadata):
    with pytest.raises(InvalidSpikeDataError, match="'metadata' holds a callable or class"):
        SpikeData.__new__(SpikeData).__setstate__(_state(metadata=metadata))
    if "deep" not in metadata:  # too deep for the pickler itself
        with pytest.raises(InvalidSpikeDataError, match="holds a callable or class"):
            pickle.loads(pickle.dumps(_Smuggled(metadata), protocol=2))


class _Smuggled:
    """Pickles as a SpikeData whose state holds ``metadata`` as given."""

    def __init__(self, metadata):
        self.metadata = metadata

    def __reduce__(self):
        return SpikeData.__new__, (SpikeData,), _state(metadata=self.metadata)


def test_a_cycle_in_the_state_does_not_hang_the_callable_walk():
    cycle: list = []
    cycle.append(cycle)
    sd = SpikeData.__new__(SpikeData)
    sd.__setstate__(_state(metadata={"cycle": cycle}))
    assert sd.metadata["cycle"][0] is sd.metadata["cycle"]


def test_validate_finished_names_missing_fields_and_checks_trains():
    sd = SpikeData.__new__(SpikeData)
    with pytest.raises(InvalidSpikeDataError, match="SpikeData lacks 'train', 'N'"):
        spikedata.validate_finished(sd)
    sd = SpikeData([[1.0, 2.0]], length=5.0)
    sd.__dict__["train"] = [np.array([1.0, np.nan])]
    with pytest.raises(InvalidSpikeDataError, match="not finite"):
        spikedata.validate_finished(sd)


def test_error_messages_quote_huge_or_deep_values_briefly():
    with pytest.raises(InvalidSpikeDataError) as err:
        SpikeData([[1.0]], start_time=_nested(list(range(10**6)), 100))
    assert len(str(err.value)) < 200
    assert len(spikedata.short_repr(10**5000)) < 100  # beyond int's str() digit limit
