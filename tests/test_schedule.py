from shallowmimic.training.schedule import Plateau, linear_lr


def drive(errors, **kw):
    p = Plateau(**kw)
    scales = [p.step(e) for e in errors]
    return p, scales


def test_halves_after_exactly_10_epochs_without_improvement():
    p, scales = drive([0.5] + [0.5] * 9)  # improvement, then 9 flat epochs
    assert scales[-1] == 1.0
    p.step(0.5)  # the 10th epoch without improvement
    assert p.scale == 0.5


def test_improvement_resets_the_count():
    p, scales = drive([0.5] + [0.6] * 9 + [0.4] + [0.6] * 9)
    assert p.scale == 1.0


def test_waits_8_epochs_between_changes():
    p, scales = drive([0.5] + [0.5] * 10)
    assert scales[-1] == 0.5
    for _ in range(7):
        assert p.step(0.5) == 0.5  # 1..7 epochs after the change: no second halving
    assert p.step(0.5) == 0.25  # the 8th epoch after the change


def test_stops_after_exactly_30_epochs_without_improvement():
    p, _ = drive([0.5] + [0.5] * 29, max_reduction=1e9)
    assert not p.stopped
    p.step(0.5)
    assert p.stopped.startswith("no validation improvement for 30")


def test_stops_once_the_lr_has_fallen_more_than_2000x():
    # patience 1, cooldown 1: one halving per flat epoch; 2^10 = 1024 <= 2000 < 2048 = 2^11
    p, scales = drive([0.5] + [0.5] * 10, patience=1, cooldown=1, stop_patience=10**6)
    assert scales[-1] == 1 / 1024 and not p.stopped
    p.step(0.5)
    assert p.scale == 1 / 2048 and "2048x" in p.stopped


def test_state_roundtrip():
    p, _ = drive([0.5, 0.4, 0.45, 0.45])
    q = Plateau.from_state(p.state())
    assert q == p and q.step(0.45) == p.step(0.45)


def test_linear_schedule():
    assert linear_lr(0.0, 0.1) < 0.05
    assert abs(linear_lr(0.1, 0.1) - 1.0) < 1e-9
    assert abs(linear_lr(0.55, 0.1) - 0.5) < 1e-9
    assert linear_lr(1.0, 0.1) == 0.0
