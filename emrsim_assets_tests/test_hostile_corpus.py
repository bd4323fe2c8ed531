"""Every hostile single value in every declared type, drafted with it and planted after the
draft: each arrives equal to the oracle's reading or stops naming table, column and row."""

from __future__ import annotations

from pathlib import Path

from emrsim_assets_tests import corpus


def test_no_hostile_value_changes_or_fails_without_its_name(tmp_path: Path, pg_url: str) -> None:
    outcomes = corpus.run(pg_url, tmp_path)
    counts = corpus.summary(outcomes)
    wrong = [o for o in outcomes if o.verdict in ("silent", "unnamed")]
    assert not wrong, (counts, wrong[:10])
    assert counts["exact"] > 0 and counts["named"] > 0, counts
    assert sum(counts.values()) == len(corpus.USUAL) * len(corpus.HOSTILE) * len(corpus.MODES)
