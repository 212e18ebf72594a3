"""Run by test_interrupt: a long run that the test stops with Ctrl-C (SIGINT to the group)."""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import tasks  # noqa: E402
from parallelbar_clone import progress_map  # noqa: E402

if __name__ == "__main__":
    marker_dir, context, kind = sys.argv[1], sys.argv[2], sys.argv[3]
    func = tasks.touch_then_c_sleep if kind == "c" else tasks.touch_then_sleep
    paths = [os.path.join(marker_dir, f"task{i}") for i in range(8)]
    progress_map(func, paths, n_cpu=2, context=context, chunk_size=1)
    print("finished?!")
