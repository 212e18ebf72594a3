"""Run by test_main_module as a script: __main__ functions and classes, no pickle help."""
import os
import sys
from dataclasses import dataclass

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from parallelbar_clone import progress_map  # noqa: E402

SCALE = 3


@dataclass
class Box:
    w: int


def make(x):
    return Box(x * SCALE)


def grow(box):
    return Box(box.w + 1)


def main(context):
    made = progress_map(make, range(6), n_cpu=2, context=context, disable=True)
    grown = progress_map(grow, [Box(i) for i in range(6)], n_cpu=2, context=context,
                         disable=True)
    print("made", all(type(b) is Box for b in made), [b.w for b in made])
    print("grown", all(type(b) is Box for b in grown), [b.w for b in grown])


if os.environ.get("UNGUARDED"):
    main(sys.argv[1])  # no `if __name__ == '__main__':` guard, as many scripts are
elif __name__ == "__main__":
    main(sys.argv[1])
