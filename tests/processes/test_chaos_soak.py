"""The chaos soak (``bench/chaos_soak.py``, issue 23 item 9) in its CI form: 2 minutes of faults, a fixed seed.

It runs the real processes against a PostgreSQL and a Redis of its own (never the suite's), so it needs no
fixture.  Its verdicts are invariants only (every tree complete, one row per job, the counts exact...), never
a timing: on a loaded machine fewer trees are sent and the settle takes longer, and the verdicts are the same.
The soak prints every check with up to 5 examples; a failure shows that report.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from process_harness import ROOT

pytestmark = pytest.mark.slow

SEED = 23


@pytest.mark.timeout(900, method="signal")
def test_two_minutes_of_faults_break_no_invariant():
    soak = subprocess.Popen(
        [sys.executable, "-m", "bench.chaos_soak", "--minutes", "2", "--seed", str(SEED), "--settle", "240"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        out, err = soak.communicate(timeout=840)
    finally:
        if soak.poll() is None:  # SIGTERM: the soak stops its processes, PostgreSQL and Redis itself
            soak.terminate()
            soak.communicate(timeout=120)
    report = out[-8000:] + err[-2000:]
    faults = re.search(r"^faults +(\d+)", out, re.MULTILINE)
    trees = re.search(r"^trees sent +(\d+)", out, re.MULTILINE)
    assert faults and trees, report
    # Something was tested: faults were injected while trees were sent.
    assert int(faults.group(1)) >= 5 and int(trees.group(1)) >= 10, report
    assert soak.returncode == 0 and "every check held" in out, report
