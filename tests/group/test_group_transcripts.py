"""Transcript tests of the group coordinator (ARCHITECTURE rule 8, etcd-io/raft testdata style).

Each ``testdata/*.txt`` file is a list of commands, each followed by the expected output
(answers, including parked requests answered later, and the trace events of the shard). Run
with ``BROKERLAB_REWRITE=1`` to regenerate the expectations after a deliberate change, then
read the diff.

Commands (member names stand for member ids):
    join NAME [instance=I] [protocols=a,b] [session=MS] [rebalance=MS] [reason=TEXT]
    sync NAME [plan=NAME:P,P;NAME:P]     (the leader's plan; others send none)
    heartbeat NAME | leave NAME [reason=TEXT] | commit NAME P=OFFSET... | advance MS | state
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from group_harness import ShardHarness, assignment, partitions_of

from brokerlab.errors import error_name
from brokerlab.ids import TopicPartition

TESTDATA = Path(__file__).resolve().parent / "testdata"
REWRITE = bool(os.environ.get("BROKERLAB_REWRITE"))


class Transcript:
    def __init__(self) -> None:
        self.h = ShardHarness(initial_rebalance_delay_ms=100)
        self.ids: dict[str, str] = {}  # name -> member id
        self.handles: dict[str, tuple[str, str]] = {}  # handle -> (kind, name)
        self.seen_events = 0
        self.generation: dict[str, int] = {}

    def name_of(self, member_id: str) -> str:
        for name, known in self.ids.items():
            if known == member_id:
                return name
        return member_id[:12] if member_id else "-"

    def _answer(self, kind: str, name: str, response) -> str:
        if response == "superseded":
            return f"{kind} {name}: superseded"
        if response.error_code:
            return f"{kind} {name}: {error_name(response.error_code)}"
        if kind == "join":
            self.generation[name] = response.generation_id
            leader = self.name_of(response.leader)
            members = ",".join(sorted(self.name_of(m.member_id) for m in response.members))
            extra = f" members={members}" if members else ""
            skip = " skip_assignment" if response.skip_assignment else ""
            return f"join {name}: generation={response.generation_id} protocol={response.protocol_name} " \
                   f"leader={leader}{extra}{skip}"
        partitions = ",".join(str(tp.partition) for tp in partitions_of(response.assignment)) if response.assignment else ""
        return f"sync {name}: assignment=[{partitions}]"

    def _late_answers(self) -> list[str]:
        out = []
        for handle, (kind, name) in list(self.handles.items()):
            response = self.h.answer(handle)
            if response is not None:
                del self.handles[handle]
                out.append(self._answer(kind, name, response))
        return out

    def _events(self) -> list[str]:
        lines = []
        for event in self.h.events[self.seen_events:]:
            fields = []
            for key, value in event.fields.items():
                if key in ("group", "coordinator_partition", "diffs", "client_host", "client_id"):
                    continue
                if isinstance(value, str) and value in self.ids.values():
                    value = self.name_of(value)
                if value in ("", None):
                    continue
                fields.append(f"{key}={value}")
            lines.append(f"event {event.name} " + " ".join(fields))
        self.seen_events = len(self.h.events)
        return lines

    def run(self, command: str) -> list[str]:
        words = command.split()
        verb, args = words[0], words[1:]
        options = dict(w.split("=", 1) for w in args[1:] if "=" in w)
        if "reason" in options:
            options["reason"] = re.search(r"reason=(.*)$", command).group(1)
        out: list[str] = []
        h = self.h
        if verb == "join":
            name = args[0]
            kwargs = dict(client_id=name, instance=options.get("instance", ""),
                          protocols=tuple(options.get("protocols", "range").split(",")),
                          session_ms=int(options.get("session", 10_000)),
                          rebalance_ms=int(options.get("rebalance", 30_000)), reason=options.get("reason", ""))
            handle, response = h.join(member_id=self.ids.get(name, ""), **kwargs)
            if response is not None and response.error_code == 79:  # MEMBER_ID_REQUIRED
                self.ids[name] = response.member_id
                out.append(f"join {name}: MEMBER_ID_REQUIRED")
                handle, response = h.join(member_id=response.member_id, **kwargs)
            for record in h.records:  # the member id the coordinator gave ``name`` (static: no round trip)
                spec = getattr(record, "member", None)
                if spec is not None and spec.client_id == name:
                    self.ids[name] = spec.member_id
            if response is None:
                self.handles[handle] = ("join", name)
                out.append(f"join {name}: parked")
            else:
                out.append(self._answer("join", name, response))
        elif verb == "sync":
            name = args[0]
            plan = None
            if "plan" in options:
                plan = {}
                for part in options["plan"].split(";"):
                    member, _, partitions = part.partition(":")
                    plan[self.ids[member]] = assignment(*(TopicPartition("t", int(p)) for p in partitions.split(",") if p))
            handle, response = h.sync(self.ids[name], self.generation.get(name, -1),
                                      instance=options.get("instance", ""), assignments=plan)
            if response is None:
                self.handles[handle] = ("sync", name)
                out.append(f"sync {name}: parked")
            else:
                out.append(self._answer("sync", name, response))
        elif verb == "heartbeat":
            name = args[0]
            out.append(f"heartbeat {name}: {error_name(h.heartbeat(self.ids[name], self.generation.get(name, -1), instance=options.get('instance', '')))}")
        elif verb == "leave":
            response = h.leave(self.ids[args[0]], instance=options.get("instance", ""), reason=options.get("reason", ""))
            out.append(f"leave {args[0]}: {error_name(response.error_code or response.members[0].error_code)}")
        elif verb == "commit":
            name = args[0]
            offsets = {TopicPartition("t", int(k)): int(v) for k, v in (w.split("=") for w in args[1:])}
            codes = h.commit(self.ids[name], self.generation.get(name, -1), offsets)
            out.append(f"commit {name}: " + " ".join(f"{tp.partition}={error_name(c)}" for tp, c in sorted(codes.items())))
        elif verb == "advance":
            h.advance(int(args[0]))
        elif verb == "state":
            group = h.group()
            members = " ".join(f"{self.name_of(m)}{'*' if group.is_leader(m) else ''}" for m in sorted(
                group.members, key=self.name_of))
            out.append(f"state {group.state.value} generation={group.generation_id} members=[{members}]")
            if group.rebalances:
                last = group.rebalances[-1]
                moved = " ".join(f"{self.name_of(d.member_id)}:+{len(d.assigned)}/-{len(d.revoked)}" for d in last.diffs)
                out.append(f"last rebalance: generation={last.generation_id} cause={last.cause} "
                           f"member={self.name_of(last.member_id)} moved=[{moved}]")
        else:
            raise ValueError(f"unknown command {verb!r}")
        late = self._late_answers()
        if late and out and out[-1].endswith(": parked") and late[0].startswith(out[-1].split(":")[0] + ":"):
            out.pop()  # parked and answered within the same command: show the answer only
        return out + late + self._events()


def render(path: Path) -> str:
    """Run the commands of ``path`` and return the transcript with fresh outputs."""
    transcript = Transcript()
    blocks = []
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("  "):
            continue  # an old expectation (indented) or a blank line
        if line.startswith("#"):
            blocks.append(line)
            continue
        blocks.append(line)
        blocks.extend("  " + out for out in transcript.run(line))
    return "\n".join(blocks) + "\n"


@pytest.mark.parametrize("path", sorted(TESTDATA.glob("*.txt")), ids=lambda p: p.stem)
def test_transcript(path: Path) -> None:
    got = render(path)
    if REWRITE:
        path.write_text(got)
    assert got == path.read_text(), f"{path.name} differs; rerun with BROKERLAB_REWRITE=1 and read the diff"
