"""Simulated clients: they submit records, retry with the same ids, and fail over between nodes.

Each client has at most one submission in flight. It sends to the node it believes leads (at
first, and after a crash, a random one). A refusal (``not_leader`` with a hint, ``unavailable``,
``overloaded``...) or silence past ``retry_after`` sends the same records again to another
node, as the real client does (``client.Client``); a few successful submissions are sent again
too, as after a lost ack. Event times are the client's virtual clock, mostly a little in the
past, some late past the reorder window, a few absurd (a day off), so the event-time stream is
exercised in all its flags.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from random import Random

from p2plog.raft.types import NodeId
from p2plog.record import validate
from p2plog.replica.proposals import Proposal
from p2plog.testing.sim_cluster import NS_PER_UNIT, SimNode, SimWorld

DAY_UNITS = 86_400_000


@dataclass(frozen=True)
class ClientParams:
    clients: int = 3
    batch_max: int = 4
    leader_ack_p: float = 0.3  # share of submissions sent with ack=leader
    resend_p: float = 0.05  # a successful submission is sent again (a lost ack)
    late_p: float = 0.05
    absurd_p: float = 0.01
    retry_after: int = 300  # virtual ms without an answer before the client tries elsewhere
    lag_max: int = 50  # a usual record's event time is up to this many ms before it is sent


@dataclass
class _Submission:
    recs: list[tuple[bytes, bytes]]
    ack: str
    proposal: Proposal | None = None
    sent_at: int = 0
    attempts: int = 0


@dataclass
class SimClient:
    name: str
    target: NodeId | None = None
    current: _Submission | None = None
    done: int = 0


@dataclass
class ClientStats:
    submissions: int = 0
    attempts: int = 0
    resends: int = 0
    timeouts: int = 0
    refusals: dict[str, int] = field(default_factory=dict)


class SimClients:
    def __init__(self, world: SimWorld, rng: Random, params: ClientParams) -> None:
        self.world = world
        self.rng = rng
        self.params = params
        self.clients = [SimClient(f"c{k + 1}") for k in range(params.clients)]
        self.stats = ClientStats()
        self._serial = 0
        world.on_finished = self.on_finished

    def act(self) -> None:
        """One client event: a client with nothing in flight starts a submission, one whose
        submission went unanswered too long tries another node."""
        c = self.rng.choice(self.clients)
        sub = c.current
        if sub is None:
            c.current = self._new_submission()
            self.stats.submissions += 1
            self._send(c)
        elif self.world.now - sub.sent_at > self.params.retry_after:
            if sub.proposal is not None:  # no answer: the node is down or cut off
                self.stats.timeouts += 1
                c.target = None
            self._send(c)

    def marker(self, n: SimNode, rid: bytes) -> Proposal:
        """Submit one marker record straight to ``n`` (the liveness phase's probe)."""
        body = validate({"id": rid, "msg": "marker"}, node="sim").body
        p = Proposal([(rid, body)], "quorum")
        self.world.submit(n, p)
        return p

    def _new_submission(self) -> _Submission:
        p, rng, now = self.params, self.rng, self.world.now
        recs = []
        for _ in range(rng.randint(1, p.batch_max)):
            self._serial += 1
            rid = rng.getrandbits(128).to_bytes(16, "big")
            r = rng.random()
            if r < p.absurd_p:
                at = now + rng.choice((-1, 1)) * 2 * DAY_UNITS
            elif r < p.absurd_p + p.late_p:
                at = now - rng.randint(1000, 5000)
            else:
                at = now - rng.randint(0, p.lag_max)
            raw = {"id": rid, "msg": f"r{self._serial}", "ts": at * NS_PER_UNIT}
            recs.append((rid, validate(raw, node="sim").body))
        return _Submission(recs, "leader" if rng.random() < p.leader_ack_p else "quorum")

    def _send(self, c: SimClient) -> None:
        sub = c.current
        assert sub is not None
        w = self.world
        up = w.up()
        if not up:
            return
        target = w.nodes.get(c.target) if c.target is not None else None
        if target is None or target.replica is None:
            target = self.rng.choice(up)
            c.target = target.id
        sub.attempts += 1
        sub.sent_at = w.now
        sub.proposal = Proposal(list(sub.recs), sub.ack)
        self.stats.attempts += 1
        w.submit(target, sub.proposal)

    def on_finished(self, n: SimNode, finished: list[Proposal]) -> None:
        """Answers reach their clients (an answer to an abandoned attempt is ignored). Called
        while ``n`` hands out a Ready, so nothing is sent from here: the client sends again on
        its next turn."""
        for c in self.clients:
            sub = c.current
            if sub is None or sub.proposal is None or sub.proposal not in finished:
                continue
            p = sub.proposal
            sub.proposal = None
            if p.error is None:
                if self.rng.random() < self.params.resend_p:
                    self.stats.resends += 1  # as after a lost ack: the same ids, soon
                    sub.sent_at = -self.params.retry_after - 1
                    continue
                c.current = None
                c.done += 1
                continue
            code, hint = p.error
            self.stats.refusals[code] = self.stats.refusals.get(code, 0) + 1
            c.target = NodeId(hint) if code == "not_leader" and hint in self.world.nodes else None
            sub.sent_at = -self.params.retry_after - 1  # sent again on this client's next turn
