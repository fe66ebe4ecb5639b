"""The simulator as a test: fixed seeds, a time-boxed batch of fresh seeds, and tests of the
tester itself (a broken store and a network that never heals must be reported)."""

from __future__ import annotations

import os
import time

import pytest

from p2plog.testing.checker import ALL_CHECKS
from p2plog.testing.sim import SimResult, Simulation, main

STEPS = 20_000
# Seeds that once exposed bugs (in the core or the harness) stay in the list for good.
FIXED_SEEDS = [1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 49, 106, 126, 138, 269007582565607, 66092039978688]
FIXED_SEEDS += [1000324, 1000699]  # the liveness bound once undercounted entries of records
PLANTED_SEEDS = 30
PLANTED_STEPS = 5_000
FRESH_SECONDS = float(os.environ.get("P2PLOG_SIM_SECONDS", "60"))


def _explain(r: SimResult) -> str:
    return f"{r.summary()}\n{r.report}"


@pytest.mark.parametrize("seed", FIXED_SEEDS)
def test_fixed_seed(seed: int) -> None:
    r = Simulation(seed).run(STEPS)
    assert r.ok, _explain(r)
    assert r.stats["steps"] >= STEPS


def test_fresh_seeds_time_boxed() -> None:
    """About a minute of seeds nobody has run before; a failure names its seed and command."""
    base = int.from_bytes(os.urandom(6), "big")
    deadline = time.monotonic() + FRESH_SECONDS
    ran = 0
    while time.monotonic() < deadline:
        r = Simulation(base + ran).run(STEPS)
        assert r.ok, _explain(r)
        ran += 1
    print(f"fresh seeds {base}..{base + ran - 1}: {ran} passed")
    assert ran >= 1


def test_long_run_makes_progress() -> None:
    r = Simulation(1).run(60_000)
    assert r.ok, _explain(r)
    assert r.terms_with_leader >= 2
    assert r.committed > 100


def test_same_seed_same_run() -> None:
    a = Simulation(5).run(5_000)
    b = Simulation(5).run(5_000)
    assert (a.stats, a.committed, a.sim_time) == (b.stats, b.committed, b.sim_time)
    c = Simulation(6).run(5_000)
    assert (a.stats, a.sim_time) != (c.stats, c.sim_time)


def _first_failure(checks: frozenset[str], max_seeds: int) -> SimResult | None:
    for seed in range(1, max_seeds + 1):
        r = Simulation(seed, broken_store="forget-vote", checks=checks).run(STEPS, liveness=False)
        if not r.ok:
            return r
    return None


def test_forgotten_vote_breaks_election_safety() -> None:
    """Test the tester: a store that forgets the vote on restart must yield two leaders in one
    term, seen by the election-safety check alone, within a bounded number of seeds."""
    r = _first_failure(frozenset({"election_safety"}), max_seeds=300)
    assert r is not None, "election-safety check never caught the forgetful store"
    assert r.failure is not None
    assert r.failure.kind == "election_safety"
    assert "both lead term" in r.failure.detail
    assert f"--seed {r.seed} --steps {STEPS} --broken-store forget-vote" in r.report


def test_forgotten_vote_caught_by_persistence_check() -> None:
    r = _first_failure(ALL_CHECKS, max_seeds=50)
    assert r is not None
    assert r.failure is not None
    assert r.failure.kind == "persistence"


@pytest.mark.parametrize(
    ("planted", "kind", "words"),
    [
        ("ack-on-leader-disk", "quorum_acks", "before it was committed"),
        ("forget-dedup-on-restart", "dedup", "the committed log says"),
        ("local-reorder-window", "event_order", "another node emitted"),
        ("drop-refusals", "handout", "never handed it out"),
        ("snapshot-drops-dedup", "dedup", "the committed log says"),
        ("two-conf-changes", "leader_completeness", "without committed entry"),
    ],
)
def test_planted_replica_bug_is_caught(planted: str, kind: str, words: str) -> None:
    """Test the tester: each planted replica bug is caught, by the check meant for it, within
    a bounded number of seeds; the report names the command that replays it."""
    for seed in range(1, PLANTED_SEEDS + 1):
        r = Simulation(seed, planted=planted).run(PLANTED_STEPS, liveness=False)
        if not r.ok:
            break
    else:
        pytest.fail(f"{planted}: no seed in 1..{PLANTED_SEEDS} caught it")
    assert r.failure is not None
    assert r.failure.kind == kind, _explain(r)
    assert words in r.failure.detail
    assert f"--seed {r.seed} --steps {PLANTED_STEPS} --planted {planted}" in r.report


def test_replica_runs_exercise_what_the_checkers_check() -> None:
    """Over a few seeds, clients get acks in both modes, retries are answered as duplicates,
    deposed leaders lose ack=leader tails, and the event-time stream flags records: every
    replica check has had something to check."""
    total: dict[str, int] = {}
    for seed in range(1, 13):
        r = Simulation(seed).run(STEPS)
        assert r.ok, _explain(r)
        for k, v in r.stats.items():
            total[k] = total.get(k, 0) + v
    for k in ("quorum_acks", "leader_acks", "leader_acks_lost", "dup_acks", "emitted"):
        assert total[k] > 0, (k, total)
    assert total["compactions"] > 0, total
    assert total["snapshots_installed"] > 0, total
    assert 0 < total["flagged"] < total["emitted"]
    assert total["records_committed"] >= total["emitted"]


def test_liveness_failure_is_reported() -> None:
    """Test the tester: if healing never really heals, the liveness phase must fail."""
    sim = Simulation(3)
    sim.world.net.can_deliver = lambda src, dst: False  # type: ignore[method-assign]
    r = sim.run(2_000)
    assert r.failure is not None
    assert r.failure.kind == "liveness"
    assert "reproduce: python -m p2plog.testing.sim --seed 3 --steps 2000" in r.report
    assert "options: nodes=" in r.report
    assert "last " in r.report


def test_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--seed", "2", "--steps", "3000"]) == 0
    assert "seed 2: OK" in capsys.readouterr().out
    failing = _first_failure(ALL_CHECKS, max_seeds=50)
    assert failing is not None
    code = main(
        ["--seed", str(failing.seed), "--steps", str(STEPS), "--broken-store", "forget-vote"]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "SIMULATION FAILED: persistence" in err
    assert "reproduce: python -m p2plog.testing.sim" in err
