import math

import pytest

from vgglocal.engine.schedule import PlateauSchedule


def test_three_decreases_then_stop_on_a_scripted_curve():
    s = PlateauSchedule(0.01, decay=0.1, patience=2, max_decreases=3)
    curve = [0.9, 0.8, 0.8, 0.8,  # plateau → decrease 1
             0.7, 0.75, 0.7,      # plateau (equal is no improvement) → decrease 2
             0.6, 0.5, 0.55, 0.5,  # → decrease 3
             0.45, 0.46, 0.47,    # → stop
             0.1]
    outcomes, rates = [], []
    for err in curve:
        outcomes.append(s.epoch_end(err))
        rates.append(s.lr(10_000))
        if s.stopped:
            break
    assert outcomes == ["improved", "improved", "waiting", "decreased", "improved", "waiting", "decreased",
                        "improved", "improved", "waiting", "decreased", "improved", "waiting", "stopped"]
    assert outcomes.count("decreased") == 3 and s.decreases == 3
    assert rates[-1] == pytest.approx(1e-5)
    assert s.epoch_end(0.0) == "stopped"  # stays stopped


def test_patience_one_and_zero_decreases():
    s = PlateauSchedule(0.1, patience=1, max_decreases=0)
    assert s.epoch_end(1.0) == "improved"
    assert s.epoch_end(math.nan) == "stopped"  # a NaN validation error never improves


def test_linear_warmup_then_plateau_rate():
    s = PlateauSchedule(0.01, warmup_steps=4)
    assert [round(s.lr(i), 6) for i in range(6)] == [0.0025, 0.005, 0.0075, 0.01, 0.01, 0.01]


def test_state_round_trip():
    a = PlateauSchedule(0.01, patience=1)
    for e in (0.5, 0.6, 0.4, 0.7):
        a.epoch_end(e)
    b = PlateauSchedule(0.01, patience=1)
    b.load_state_dict(a.state_dict())
    assert (b.best, b.bad_epochs, b.decreases, b.stopped) == (0.4, 0, 2, False)
    assert b.lr(0) == pytest.approx(1e-4)


def test_cosine_decays_to_zero_and_never_decreases_or_stops():
    s = PlateauSchedule(0.04, patience=1, max_decreases=0, warmup_steps=2, cosine_steps=10)
    assert s.lr(0) == pytest.approx(0.5 * 0.02 * (1 + math.cos(0)))  # warm-up half of the cosine rate
    assert s.lr(5) == pytest.approx(0.02)  # half way: half the rate
    assert s.lr(10) == pytest.approx(0.0) and s.lr(50) == pytest.approx(0.0)
    assert [s.epoch_end(e) for e in (0.5, 0.6, 0.7, 0.4)] == ["improved", "waiting", "waiting", "improved"]
    assert not s.stopped and s.decreases == 0 and s.best == 0.4
