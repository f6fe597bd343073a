"""bin/demo sets its run beside the range bin/check-stability measured (no training here)."""

from __future__ import annotations


def test_expected_ranges_are_measured_and_a_run_outside_is_named(bin_script):
    demo = bin_script("demo")
    for (protocol, key), (mean, lo, hi) in demo.EXPECTED.items():
        assert protocol == "full" and 0 <= lo <= mean <= hi < 1 and hi > 0, (key, lo, mean, hi)  # measured, not zeros
    inside = {"full": {key: mean for (_, key), (mean, _, _) in demo.EXPECTED.items()}}
    text = demo.expected_markdown(inside)
    assert text.endswith("Every figure inside the measured range.") and demo.EXPECTED_ON in text
    (_, key), (_, _, hi) = next(iter(demo.EXPECTED.items()))
    worse = {"full": dict(inside["full"], **{key: hi + 0.05})}
    assert "Outside the measured range: full " + key.replace("_error", " err.").replace("_", " ") in demo.expected_markdown(worse)
