"""The statistics behind spike detection (monitoring.spikes), by properties and examples."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.monitoring.spikes import (
    BaselineRule,
    SpikeRule,
    baseline_threshold,
    exceeds_baseline,
    is_spike,
    spike_indexes,
    threshold,
)

counts = st.integers(min_value=0, max_value=10_000)
series = st.lists(counts, min_size=1, max_size=60)
ks = st.floats(min_value=0, max_value=10, allow_nan=False)
rules = st.builds(
    SpikeRule,
    k=ks,
    min_count=st.integers(min_value=0, max_value=50),
    window=st.integers(min_value=1, max_value=48),
)
# Powers of two scale floats exactly, so equality at the threshold survives scaling.
scales = st.sampled_from([0.25, 0.5, 2, 4, 8, 1024])


@given(value=counts, length=st.integers(min_value=1, max_value=60), rule=rules)
def test_a_constant_series_never_spikes(value, length, rule):
    assert spike_indexes([value] * length, rule) == set()


@given(values=series, c=scales, k=ks, window=st.integers(min_value=1, max_value=48))
def test_scaling_every_count_keeps_the_spikes_when_min_count_is_zero(values, c, k, window):
    rule = SpikeRule(k=k, min_count=0, window=window)
    assert spike_indexes([v * c for v in values], rule) == spike_indexes(values, rule)


@given(history=series, rule=rules, extra=st.integers(min_value=1, max_value=1000))
def test_a_bucket_above_mean_plus_k_std_and_min_count_is_flagged(history, rule, extra):
    count = max(math.floor(threshold(history, rule)) + extra, rule.min_count)
    assert is_spike(count, history, rule)
    assert len(history) in spike_indexes([*history, count], rule)


@given(history=series, rule=rules)
def test_a_bucket_at_or_below_the_threshold_or_min_count_is_not_flagged(history, rule):
    at_threshold = math.floor(threshold(history, rule))
    assert not is_spike(at_threshold, history, rule)
    if rule.min_count > 0:
        assert not is_spike(rule.min_count - 1, history, rule)


@given(history=series, k1=ks, k2=ks, window=st.integers(min_value=1, max_value=48))
def test_the_threshold_grows_with_k(history, k1, k2, window):
    low, high = sorted((k1, k2))
    assert threshold(history, SpikeRule(k=low, window=window)) <= threshold(
        history, SpikeRule(k=high, window=window)
    )


@given(
    value=st.integers(min_value=0, max_value=100),
    length=st.integers(min_value=1, max_value=48),
    rule=rules,
    jump=st.integers(min_value=1, max_value=10**6),
)
def test_a_huge_value_after_a_flat_history_is_a_spike(value, length, rule, jump):
    huge = max(value + jump, rule.min_count)
    if huge <= value:
        huge = value + 1
    flagged = spike_indexes([*([value] * length), huge], rule)
    assert flagged == {length}


@given(history=series, rule=rules)
def test_only_the_last_window_forms_the_baseline(history, rule):
    padded = [10**6] * 5 + list(history)
    if len(history) >= rule.window:
        assert threshold(padded, rule) == threshold(history, rule)


def test_an_empty_history_never_spikes():
    assert not is_spike(10**9, [], SpikeRule(min_count=0))


def test_a_rule_refuses_negative_settings():
    with pytest.raises(ValueError, match="must be >= 0"):
        SpikeRule(k=-1)
    with pytest.raises(ValueError, match="window >= 1"):
        SpikeRule(window=0)
    with pytest.raises(ValueError, match="multiplier"):
        BaselineRule(multiplier=-0.5)


# --- The multiplier-of-baseline variant (the error-spike alert) ------------------------

baselines = st.lists(counts, min_size=0, max_size=30)
multipliers = st.floats(min_value=0, max_value=20, allow_nan=False)
baseline_rules = st.builds(
    BaselineRule, multiplier=multipliers, min_count=st.integers(min_value=0, max_value=100)
)


@given(count=counts, baseline=baselines, rule=baseline_rules)
def test_baseline_spike_means_above_both_the_multiple_and_min_count(count, baseline, rule):
    mean = sum(baseline) / len(baseline) if baseline else 0.0
    expected = count >= rule.min_count and count > rule.multiplier * mean
    # fmean and sum/len can differ in the last bit; stay clear of the boundary.
    if not math.isclose(count, rule.multiplier * mean, rel_tol=1e-9, abs_tol=1e-9):
        assert exceeds_baseline(count, baseline, rule) == expected


@given(count=counts, more=counts, baseline=baselines, rule=baseline_rules)
def test_baseline_spike_is_monotone_in_the_count(count, more, baseline, rule):
    if exceeds_baseline(count, baseline, rule):
        assert exceeds_baseline(count + more, baseline, rule)


@given(count=counts, baseline=baselines, c=scales, multiplier=multipliers)
def test_baseline_spike_is_scale_free_when_min_count_is_zero(count, baseline, c, multiplier):
    rule = BaselineRule(multiplier=multiplier, min_count=0)
    assert exceeds_baseline(count * c, [b * c for b in baseline], rule) == exceeds_baseline(
        count, baseline, rule
    )


@given(value=st.integers(min_value=0, max_value=1000), days=st.integers(1, 30), rule=baseline_rules)
def test_baseline_threshold_of_a_flat_history_is_the_multiple(value, days, rule):
    assert baseline_threshold([value] * days, rule) == pytest.approx(rule.multiplier * value)


def test_baseline_examples():
    rule = BaselineRule(multiplier=3, min_count=10)
    assert exceeds_baseline(30, [2, 2, 2, 4], rule)  # 30 > 3 x 2.5
    assert not exceeds_baseline(7, [2, 2, 2], rule)  # above 3 x 2, below min_count
    assert not exceeds_baseline(12, [4, 4, 4], rule)  # at 3 x 4: not above
    assert exceeds_baseline(10, [], rule)  # no history yet: min_count decides
