"""Under random faults (kills, pauses, graceful stops of leader and followers) clients lose nothing.

The run and its checks are in :mod:`tests.store.chaos`; run it longer by hand
with ``python -m tests.store.chaos --seconds 600``. Here it runs for
``DQCLUSTER_CHAOS_SECONDS`` (default 45) with the seed ``DQCLUSTER_CHAOS_SEED``
(default: a new one, printed in the failure message).
"""

import datetime
import os
import random

import pytest

from . import chaos

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def test_random_faults_lose_no_acknowledged_write_and_break_no_invariant(tmp_path):
    seconds = float(os.environ.get("DQCLUSTER_CHAOS_SECONDS", "45"))
    seed = int(os.environ.get("DQCLUSTER_CHAOS_SEED") or random.randrange(2**32))
    lines = []
    try:
        report = chaos.run(str(tmp_path / "cluster"), seconds, seed, log=lambda line: lines.append(
            f"{datetime.datetime.now():%H:%M:%S.%f} {line}"))  # beside the nodes' log times
    except Exception as error:  # a cluster that stopped serving: the faults that led there, and the seed
        raise AssertionError(f"the run with seed {seed} stopped: {error}\n" + "\n".join(lines)) from error
    assert len(report.faults) >= 5, report
    assert report.counts["appender"]["ok"] > 0 and report.counts["transfers-1"]["ok"] > 0, report
    assert not report.violations, f"{report}\n" + "\n".join(lines)
