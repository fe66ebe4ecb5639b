"""A data directory's identity (``runtime.incarnations``): made once, remembered per peer on
first sight, a voter with another one refused until a configuration drops it."""

from __future__ import annotations

from pathlib import Path

from p2plog.runtime.incarnations import IDENTITY, Incarnations


def test_identity_is_made_once_and_kept(tmp_path: Path) -> None:
    a = Incarnations(tmp_path, "n1")
    assert len(a.mine) == 16
    assert (tmp_path / IDENTITY).exists()
    assert Incarnations(tmp_path, "n1").mine == a.mine
    (tmp_path / "other").mkdir()
    assert Incarnations(tmp_path / "other", "n1").mine != a.mine


def test_a_voter_with_a_new_incarnation_is_refused_until_forgotten(tmp_path: Path) -> None:
    inc = Incarnations(tmp_path, "n1")
    voters = ("n1", "n2", "n3")
    assert inc.refusal("n2", "aaaa", voters) is None  # first sight: trusted, remembered
    assert inc.needs_saving("n2", "aaaa")
    inc.remember("n2", "aaaa")
    assert not inc.needs_saving("n2", "aaaa")
    assert inc.refusal("n2", "aaaa", voters) is None
    why = inc.refusal("n2", "bbbb", voters)
    assert why is not None
    assert "member remove n2" in why
    assert len(why.encode()) <= 123  # it goes in a websocket close frame
    assert inc.refusal("n2", "bbbb", ("n1", "n3")) is None  # a learner never voted
    assert inc.refusal("n2", "", voters) is None  # an older node states none
    # Remembered across restarts, forgotten once the configuration drops the peer.
    again = Incarnations(tmp_path, "n1")
    assert again.refusal("n2", "bbbb", voters) is not None
    assert again.forget(["n2", "n9"])
    again.save()
    assert Incarnations(tmp_path, "n1").refusal("n2", "bbbb", voters) is None


def test_an_unreadable_memory_starts_afresh(tmp_path: Path) -> None:
    (tmp_path / "peers_seen").write_text("{not json")
    assert Incarnations(tmp_path, "n1").seen == {}
