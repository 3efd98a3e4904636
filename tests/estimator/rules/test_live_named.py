"""Live's labelled bytes (issue 18: a rank's peak named by part): what is labelled at the
highest reading, through measure / repeat (the layers replayed once, then repeated)."""

from __future__ import annotations

from estimator.rules.live import Live


def test_labels_at_the_peak_follow_takes_and_drops() -> None:
    live = Live(100, named={"a": 100})
    live.take(10, label="b")
    live.take(7)  # unlabelled: the remainder
    live.drop(7)
    live.drop(10, label="b")
    live.take(5, label="a")
    assert live.peak == 117
    assert live.at_peak == {"a": 100, "b": 10}  # the labelled part of 117, 7 unlabelled
    assert live.named == {"a": 105, "b": 0}


def test_labels_at_a_repeated_runs_top_add_the_earlier_runs_growth() -> None:
    live = Live(0, named={})

    def layer() -> None:  # keeps 10 B labelled "g", peaks 5 B above with a transient
        live.take(10, label="g")
        live.take(5)
        live.drop(5)

    top, delta = live.measure(layer)
    assert (top, delta) == (15, 10)
    live.repeat(3, top, delta)  # three more layers: the last one's top is the highest
    assert live.peak == 10 + 2 * 10 + 15
    assert live.at_peak == {"g": 40}  # + 5 B unlabelled = the peak
    assert live.named == {"g": 40} and live.now == 40


def test_a_higher_reading_before_a_measured_run_keeps_its_labels() -> None:
    live = Live(0, named={})
    live.take(50, label="x")
    live.drop(50, label="x")
    top, _ = live.measure(lambda: (live.take(3, label="y"), live.drop(3, label="y")))
    assert top == 3 and live.peak == 50
    assert live.at_peak == {"x": 50}
