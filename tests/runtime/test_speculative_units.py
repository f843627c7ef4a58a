"""Speculative decoding's pure parts: the acceptance rule (statistically), prompt lookup, draft length."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import chisquare

from gemma_edge.errors import GemmaEdgeError
from gemma_edge.speculative import DraftLength, NgramDrafter, parse_spec, speculative_accept

DRAWS = 8_000


def outputs_of_rule(p, q, seed):
    """Many draws of: the drafter draws x ~ q, the rule keeps it or resamples."""
    rng = np.random.default_rng(seed)
    counts = np.zeros(len(p))
    for _ in range(DRAWS):
        draft = int(rng.choice(len(q), p=q))
        counts[speculative_accept(p, q, draft, rng)[1]] += 1
    return counts


@pytest.mark.parametrize("q", [
    [0.1, 0.6, 0.2, 0.1, 0.0],    # a drafter that disagrees with the target
    [0.0, 0.0, 1.0, 0.0, 0.0],    # a deterministic drafter: a point mass
    [0.3, 0.25, 0.15, 0.2, 0.1],  # the target itself
])
def test_rule_output_is_distributed_as_the_target(q):
    p = np.array([0.3, 0.25, 0.15, 0.2, 0.1])
    counts = outputs_of_rule(p, np.array(q), seed=7)
    assert chisquare(counts, p * DRAWS).pvalue > 1e-3


def test_chi_square_detects_a_wrong_rule():
    """The test above can fail: always keeping the draft gives q, not p."""
    p = np.array([0.3, 0.25, 0.15, 0.2, 0.1])
    q = np.array([0.1, 0.6, 0.2, 0.1, 0.0])
    rng = np.random.default_rng(7)
    counts = np.bincount(rng.choice(5, size=DRAWS, p=q), minlength=5)
    assert chisquare(counts, p * DRAWS).pvalue < 1e-6


def test_point_mass_rule_equals_drawing_from_the_target_and_comparing():
    """What the engine does for deterministic drafters: draw y ~ p with the target's own sampler and keep the
    draft x when y == x. Same acceptance probability p(x) and same output distribution as the rule."""
    p = np.array([0.3, 0.25, 0.15, 0.2, 0.1])
    q = np.eye(5)[1]
    rng = np.random.default_rng(3)
    rule = [speculative_accept(p, q, 1, rng) for _ in range(DRAWS)]
    engine_way = [(y == 1, y) for y in rng.choice(5, size=DRAWS, p=p)]
    for outcomes in (rule, engine_way):
        kept = sum(accepted for accepted, _ in outcomes)
        assert abs(kept / DRAWS - p[1]) < 0.01
        counts = np.bincount([token for _, token in outcomes], minlength=5)
        assert chisquare(counts, p * DRAWS).pvalue > 1e-3


def test_ngram_drafter_continues_the_latest_longest_match():
    drafter = NgramDrafter(max_n=3)
    context = [1, 2, 3, 4, 5, 9, 2, 3, 7, 8, 1, 2, 3]
    # trigram (1, 2, 3) occurred at the start: its continuation is 4, 5, 9, ...
    assert drafter.propose(context, 3) == [4, 5, 9]
    # the context grows: the bigram (3, 7) is new, the unigram 7 occurred once (followed by 8, 1, ...)
    assert drafter.propose(context + [4, 6, 7], 2) == [8, 1]
    assert drafter.propose(context + [4, 6, 7, 42], 4) == []  # never seen: no draft


def test_ngram_drafter_prefers_longer_matches_and_stops_at_the_end():
    drafter = NgramDrafter(max_n=2)
    assert drafter.propose([5, 1, 9, 6, 1, 8, 5, 1], 5) == [9, 6, 1, 8, 5]  # (5, 1) beats the later 1 → 8
    assert NgramDrafter().propose([1, 2, 1], 10) == [2, 1]  # only what follows in the context


def test_draft_length_grows_on_full_acceptance_and_shrinks_on_rejection():
    budget = DraftLength(length=4, maximum=16)
    budget.record(4, 4)
    assert budget.length == 8
    budget.record(8, 8)
    budget.record(16, 16)
    assert budget.length == 16
    budget.record(16, 3)
    assert budget.length == 4 and budget.enabled


def test_speculation_switches_off_when_it_does_not_pay():
    budget = DraftLength(probation=8)
    for _ in range(7):
        budget.record(2, 0)
    assert budget.enabled
    budget.record(2, 0)
    assert not budget.enabled
    paying = DraftLength(probation=8)
    for _ in range(20):
        paying.record(4, 1)
    assert paying.enabled


def test_spec_modes_are_validated():
    assert parse_spec("NGRAM") == "ngram"
    assert parse_spec(None) == "off"
    with pytest.raises(GemmaEdgeError, match="unknown speculative mode"):
        parse_spec("fast")
