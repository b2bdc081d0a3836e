"""Failures that a retry cannot fix, and how a run ends on one.

Ray Train restarts the workers after any worker error, up to `distributed.max_failures` times. That
is right for a dead worker or a lost node, and wrong for a NaN loss, a bad config, data past the
bad-sample threshold or a checkpoint that cannot be loaded: each retry would fail the same way after
minutes of start-up. Ray's failure policy has no hook for the kind of error, so the worker that hits
one of these leaves a record in the stage's storage before it raises; the workers of Ray's retry find
the record and return at once, and the driver turns it into one `HopelessFailure`, which the command
line reports with its own exit status.
"""

from __future__ import annotations

from distdiff.config import ConfigError
from distdiff.data.errors import DataError
from distdiff.tasks import NonFiniteLossError
from distdiff.train.checkpoint import CheckpointError

# Exit status of a run that stopped on a failure no retry can fix (2 is a config error found before
# the run starts, 75 a run stopped early that the same command resumes).
HOPELESS_EXIT = 3
HOPELESS_RECORD = "failed.json"  # in the stage's output folder of the run's storage
HOPELESS_ERRORS = (NonFiniteLossError, ConfigError, DataError, CheckpointError)


class HopelessFailure(RuntimeError):
    """A stage stopped on an error that a retry cannot fix (the message says which and where)."""


def hopeless_record(error: BaseException, run_id: str, rank: int, stage: str) -> dict:
    return {"run_id": run_id, "rank": rank, "stage": stage, "error": type(error).__name__, "message": str(error)}


def failure_from_record(record: dict) -> HopelessFailure:
    return HopelessFailure(
        f"the {record['stage']} stage stopped on rank {record['rank']}: {record['error']}: {record['message']} "
        f"(not retried: a retry cannot fix this; fix the cause and run the same command again)")
