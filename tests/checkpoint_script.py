"""Run by test_checkpoint: a checkpointed run that logs every task it starts."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))

from parallelbar_clone import progress_map  # noqa: E402

LOG = os.environ["CHECKPOINT_TEST_LOG"]


def logged(x):
    with open(LOG, "a") as f:  # one short append per task: atomic
        f.write(f"{x}\n")
    time.sleep(0.01)
    return x * 3


if __name__ == "__main__":
    path, n = sys.argv[1], int(sys.argv[2])
    result = progress_map(logged, range(n), checkpoint=path, n_cpu=2)
    assert result == [x * 3 for x in range(n)], "wrong results after resume"
    print("complete")
