"""Slurm's queue as detflow's Slurm launcher reads it: one call for all of a sweep's jobs, at
a bounded rate, whatever their number.

A trial's end is read from its result file; ``squeue`` (or ``sacct``, for jobs that have
left the queue) is asked only for what a file cannot tell: a job that died without a result,
one that can never start (:func:`never_starts`), one requeued after its node failed. Each
call covers every job of the sweep (:func:`squeue_command`, :func:`sacct_command`), and
:class:`PollClock` spaces the calls: at least :data:`MIN_GAP_S` apart (six a minute at most),
the gap doubling up to :data:`MAX_GAP_S` while nothing changes.

Light on purpose (no submitit, no Hydra): tested without a cluster.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

__all__ = [
    "DEAD_STATES",
    "MAX_GAP_S",
    "MIN_GAP_S",
    "AccountedJob",
    "PollClock",
    "QueuedJob",
    "asked_text",
    "killed_in_log",
    "max_array_size",
    "never_starts",
    "parse_partition",
    "parse_sacct",
    "parse_squeue",
    "requeued",
    "sacct_command",
    "sbatch_refusal",
    "squeue_command",
    "transient_error",
]

#: The shortest gap between two queue calls (``squeue``/``sacct``): six a minute at most.
MIN_GAP_S = 10.0
#: The longest: the gap doubles from :data:`MIN_GAP_S` up to this while nothing changes.
MAX_GAP_S = 60.0
#: ``MaxArraySize`` when ``scontrol show config`` does not say (Slurm's default).
DEFAULT_MAX_ARRAY_SIZE = 1001

#: Final states; PREEMPTED is not one (with requeue it is followed by PENDING).
DEAD_STATES = frozenset(
    {
        "CANCELLED",
        "FAILED",
        "NODE_FAIL",
        "TIMEOUT",
        "OUT_OF_MEMORY",
        "BOOT_FAIL",
        "DEADLINE",
        "COMPLETED",
    }
)

#: Pending reasons no wait can cure: the request exceeds what the partition, the QOS or the
#: association allows a job, or names an account, QOS or constraint Slurm does not know.
_NEVER_REASONS = frozenset(
    {
        "PartitionNodeLimit",
        "PartitionTimeLimit",
        "PartitionConfig",
        "InvalidAccount",
        "InvalidQOS",
        "AccountNotAllowed",
        "QOSNotAllowed",
        "BadConstraints",
        "DependencyNeverSatisfied",
    }
)
#: A per-job maximum (or minimum) of a QOS or an association: e.g. QOSMaxNodePerJobLimit.
_PER_JOB_LIMIT = re.compile(r"(QOS|Assoc)(Max\w*PerJob\w*|Min\w+)")
_UNAVAILABLE = re.compile(r"UnavailableNodes:(\S*)")

#: squeue's fields, in this order: job id (an array task as ``123_4``), state, reason,
#: nodes, partition.
SQUEUE_FORMAT = "%i|%T|%r|%N|%P"
#: sacct's fields, in this order.
SACCT_FIELDS = "JobID,State,NodeList"


@dataclass(frozen=True)
class QueuedJob:
    """One line of ``squeue``: a job (or array task) as slurmctld sees it now."""

    job_id: str
    state: str  # the first word, upper case: PENDING, RUNNING, CANCELLED, ...
    reason: str  # why it waits ("None" when it does not)
    nodes: str  # Slurm's host list ("node[1-2]"), empty while pending
    partition: str

    @property
    def dead(self) -> bool:
        return self.state in DEAD_STATES


@dataclass(frozen=True)
class AccountedJob:
    """A job's records in ``sacct -D``: one per run, the last the current one (a job Slurm
    requeued after its node failed has a NODE_FAIL record before its PENDING one)."""

    job_id: str
    states: tuple[str, ...]
    nodes: tuple[str, ...]

    @property
    def state(self) -> str:
        return self.states[-1]

    def failed_nodes(self) -> list[str]:
        """The nodes of the runs that ended NODE_FAIL, each once, in order."""
        failed = [n for s, n in zip(self.states, self.nodes, strict=True) if s == "NODE_FAIL"]
        return list(dict.fromkeys(n for n in failed if n and n != "None assigned"))


def _state(text: str) -> str:
    return text.strip().split(" ")[0].upper()  # "CANCELLED by 0" -> CANCELLED


def parse_squeue(text: str) -> dict[str, QueuedJob]:
    """``squeue -h -o`` :data:`SQUEUE_FORMAT`'s lines by job id.

    >>> jobs = parse_squeue("12_0|RUNNING|None|node1|debug\\n13|PENDING|PartitionNodeLimit||debug")
    >>> jobs["13"].reason, jobs["12_0"].nodes
    ('PartitionNodeLimit', 'node1')
    """
    jobs = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 5 or not parts[0]:
            continue
        job_id, state, reason, nodes, partition = parts
        jobs[job_id] = QueuedJob(job_id, _state(state), reason.strip(), nodes.strip(), partition)
    return jobs


def parse_sacct(text: str) -> dict[str, AccountedJob]:
    """``sacct -X -n -P -D -o`` :data:`SACCT_FIELDS`'s lines by job id, records in order.

    >>> job = parse_sacct("7|NODE_FAIL|node2\\n7|PENDING|None assigned\\n")["7"]
    >>> job.state, job.failed_nodes()
    ('PENDING', ['node2'])
    """
    states: dict[str, list[str]] = {}
    nodes: dict[str, list[str]] = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 3 or not parts[0]:
            continue
        states.setdefault(parts[0], []).append(_state(parts[1]))
        nodes.setdefault(parts[0], []).append(parts[2].strip())
    return {j: AccountedJob(j, tuple(states[j]), tuple(nodes[j])) for j in states}


def squeue_command(job_ids: Iterable[str]) -> list[str]:
    """One ``squeue`` call for these jobs (an array's id covers its tasks, one line each),
    ended ones included while slurmctld still holds them (``MinJobAge``)."""
    ids = ",".join(sorted(set(job_ids)))
    return ["squeue", "-h", "-r", "-t", "all", "-o", SQUEUE_FORMAT, "-j", ids]


def sacct_command(job_ids: Iterable[str]) -> list[str]:
    """One ``sacct`` call for these jobs: every run of each (``-D``: requeued ones too)."""
    ids = ",".join(sorted(set(job_ids)))
    return ["sacct", "-X", "-n", "-P", "-D", "-o", SACCT_FIELDS, "-j", ids]


def never_starts(job: QueuedJob, known_nodes: Callable[[], set[str]] | None = None) -> bool:
    """Whether a pending job's reason says it can never start (waiting would be for ever):
    a partition, QOS or association limit the request exceeds, an account or QOS Slurm
    refuses, or ``ReqNodeNotAvail`` for nodes the cluster does not have
    (``known_nodes``: the cluster's node names, asked only then).

    >>> never_starts(QueuedJob("1", "PENDING", "PartitionNodeLimit", "", "debug"))
    True
    >>> never_starts(QueuedJob("1", "PENDING", "Resources", "", "debug"))
    False
    >>> reason = "ReqNodeNotAvail, UnavailableNodes:ghost"
    >>> never_starts(QueuedJob("1", "PENDING", reason, "", "debug"), lambda: {"node1"})
    True
    """
    if job.state != "PENDING":
        return False
    first = job.reason.split(",")[0].strip()
    if first in _NEVER_REASONS or _PER_JOB_LIMIT.fullmatch(first):
        return True
    if first == "ReqNodeNotAvail" and known_nodes is not None:
        match = _UNAVAILABLE.search(job.reason)
        wanted = [n for n in (match.group(1) if match else "").split(",") if n]
        return bool(wanted) and not any(n in known_nodes() for n in wanted)
    return False


def requeued(before: QueuedJob | None, now: QueuedJob) -> bool:
    """Whether Slurm has just put a job back in the queue (after its node failed, or a
    pre-emption): it was seen running and now waits, or it waits with ``BeginTime``, the
    reason Slurm gives a requeued job, and did not at the last look (so a requeue between two
    polls is not missed; ``sacct -D`` then says whether a node failed).

    >>> running = QueuedJob("7", "RUNNING", "None", "node1", "debug")
    >>> held = QueuedJob("7", "PENDING", "BeginTime", "", "debug")
    >>> requeued(running, held), requeued(None, held), requeued(held, held)
    (True, True, False)
    >>> requeued(None, QueuedJob("7", "PENDING", "Resources", "", "debug"))
    False
    """
    if now.state != "PENDING":
        return False
    if before is not None and before.state == "RUNNING":
        return True
    was_held = before is not None and before.state == "PENDING" and before.reason == "BeginTime"
    return now.reason == "BeginTime" and not was_held


def parse_partition(text: str) -> dict[str, str]:
    """``scontrol show partition -o NAME``'s ``Key=value`` fields.

    >>> parse_partition("PartitionName=debug MaxNodes=UNLIMITED TotalNodes=2")["TotalNodes"]
    '2'
    """
    fields = {}
    for word in text.split():
        key, sep, value = word.partition("=")
        if sep:
            fields[key] = value
    return fields


def asked_text(reason: str, asked: Mapping[str, object], partition: Mapping[str, str]) -> str:
    """What the job asked for, beside what its partition has, for a never-start reason.

    >>> debug = {"PartitionName": "debug", "TotalNodes": "1"}
    >>> asked_text("PartitionNodeLimit", {"nodes": 2}, debug)
    'nodes=2; partition debug has 1'
    >>> asked_text("InvalidAccount", {"nodes": 1, "account": "nobody"}, {})
    'account=nobody'
    """
    first = reason.split(",")[0].strip()
    name = partition.get("PartitionName", asked.get("partition", "?"))
    if first == "PartitionNodeLimit":
        total = partition.get("TotalNodes", "?")
        text = f"nodes={asked.get('nodes', 1)}; partition {name} has {total}"
        most = partition.get("MaxNodes", "UNLIMITED")
        return text if most == "UNLIMITED" else f"{text} (MaxNodes={most})"
    if first == "PartitionTimeLimit":
        return (
            f"time={asked.get('time')} min; partition {name} allows {partition.get('MaxTime', '?')}"
        )
    for key, words in (
        ("account", ("Account",)),
        ("qos", ("QOS",)),
        ("constraint", ("Constraint",)),
    ):
        if any(w in first for w in words) and asked.get(key) is not None:
            return f"{key}={asked[key]}"
    shown = ("nodes", "ntasks_per_node", "gpus_per_node", "time", "partition", "account", "qos")
    return ", ".join(f"{k}={asked[k]}" for k in shown if asked.get(k) is not None)


#: ``sbatch``'s errors that a moment's wait cures (slurmctld restarting, busy).
_TRANSIENT = re.compile(
    r"Unable to contact slurm controller|Socket timed out|Connection refused|"
    r"temporarily unable|Resource temporarily unavailable|try again|Zero Bytes were transmitted",
    re.IGNORECASE,
)


def transient_error(text: str) -> bool:
    """Whether a Slurm command's error is one to retry (the controller is away or busy).

    >>> transient_error("sbatch: error: Batch job submission failed: Socket timed out on send/recv")
    True
    >>> transient_error("sbatch: error: Batch job submission failed: Invalid account")
    False
    """
    return bool(_TRANSIENT.search(text))


def sbatch_refusal(text: str) -> str:
    """The line of ``sbatch``'s error output that says why it refused the job.

    >>> sbatch_refusal("Command failed\\nsbatch: error: Batch job submission failed: Invalid qos")
    'Batch job submission failed: Invalid qos'
    """
    lines = [line.strip() for line in text.splitlines() if "error:" in line]
    if not lines:
        lines = [line.strip() for line in text.splitlines() if line.strip()] or ["sbatch failed"]
    return lines[-1].split("error:", 1)[-1].strip()


_KILLED = re.compile(rb"\*\*\* (JOB|STEP) \S+ ON \S+ CANCELLED AT|oom[-_]kill|DUE TO (TIME|NODE)")


def killed_in_log(tail: bytes) -> bool:
    """Whether a job's log says Slurm ended it (``slurmstepd``'s ``*** JOB 12 ON node1
    CANCELLED AT ...``, an OOM kill): then the queue is asked sooner.

    >>> killed_in_log(b"slurmstepd: error: *** JOB 12 ON node1 CANCELLED AT 2026-01-01 ***")
    True
    """
    return bool(_KILLED.search(tail))


def max_array_size(scontrol_config: str | None) -> int:
    """The cluster's ``MaxArraySize`` from ``scontrol show config``'s output; Slurm's default
    (:data:`DEFAULT_MAX_ARRAY_SIZE`) when it does not say. An array's indices run from 0 to
    this minus one: it is the most tasks one array may hold.

    >>> max_array_size("MaxArraySize            = 100\\nMaxJobCount = 10000")
    100
    >>> max_array_size(None)
    1001
    """
    match = re.search(r"^MaxArraySize\s*=\s*(\d+)", scontrol_config or "", re.MULTILINE)
    size = int(match.group(1)) if match else DEFAULT_MAX_ARRAY_SIZE
    return max(1, size)


@dataclass
class PollClock:
    """When the next queue call may run.

    Calls are at least ``min_gap`` apart; while a call finds nothing changed the gap doubles,
    up to ``max_gap``; a call that finds a change, or :meth:`hurry` (jobs submitted, a log
    that says a job was killed), brings it back to ``min_gap``. The first call after the
    first :meth:`hurry` comes ``min_gap`` after it (a job just submitted has no reason yet).

    >>> now = [0.0]
    >>> clock = PollClock(clock=lambda: now[0])
    >>> clock.hurry(); clock.due()
    False
    >>> now[0] = 10.0; clock.due()
    True
    >>> clock.called(changed=False); clock.gap
    20.0
    """

    min_gap: float = MIN_GAP_S
    max_gap: float = MAX_GAP_S
    clock: Callable[[], float] = time.monotonic
    gap: float = field(init=False)
    last: float | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.gap = self.min_gap

    def due(self) -> bool:
        return self.last is not None and self.clock() - self.last >= self.gap

    def called(self, *, changed: bool) -> None:
        self.last = self.clock()
        self.gap = self.min_gap if changed else min(self.gap * 2, self.max_gap)

    def hurry(self) -> None:
        self.gap = self.min_gap
        if self.last is None:
            self.last = self.clock()
