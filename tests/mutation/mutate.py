"""`make mutate`: run mutmut over the modules of pure logic and print the score of each.

mutmut (configured in setup.cfg, section [mutmut]) copies the package to ``mutants/``,
mutates the modules listed under ``only_mutate`` and runs, for each mutant, the fast
tests that reach the mutated function. This script runs it, then reads mutmut's
per-file results (``mutants/<file>.meta``) and prints, per module and in all:
killed / (all mutants), where a timeout counts as killed (the mutant made a test
hang) and a mutant no test reaches counts as a survivor.

    python tests/mutation/mutate.py                      # everything
    python tests/mutation/mutate.py schedule run         # only these modules
    python tests/mutation/mutate.py --survivors schedule # and list what survived
    python tests/mutation/mutate.py --report --diff run  # each survivor's changed lines
    python tests/mutation/mutate.py --report             # print the last results only

Surviving mutants judged harmless are listed, with why, in tests/mutation/survivors.md.
"""
import argparse
import ast
import difflib
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "parallelbar_clone"
MODULES = ["options", "schedule", "run", "outcomes", "errors", "journal"]

KILLED = {1, 3, 36, 24, -24, 152, 255, -11, -9, 37}   # test failed, hung or crashed
NO_TESTS = {5, 33}
SURVIVED = {0}


def meta(module):
    path = ROOT / "mutants" / PACKAGE / f"{module}.py.meta"
    if not path.exists():
        return {}
    return json.loads(path.read_text())["exit_code_by_key"]


def functions(module):
    """Source of each function in mutmut's copy of a module, by name (the original of
    ``f`` is ``f__mutmut_orig``, its mutants ``f__mutmut_1``...)."""
    path = ROOT / "mutants" / PACKAGE / f"{module}.py"
    text = path.read_text()
    lines = text.splitlines()
    found = {}
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            found[node.name] = "\n".join(lines[node.lineno - 1:node.end_lineno])
    return found


def diff(sources, key):
    """The lines a mutant changed, as a unified diff without its header."""
    name = key.rsplit(".", 1)[1]
    original = sources.get(name.rsplit("__mutmut_", 1)[0] + "__mutmut_orig")
    mutant = sources.get(name)
    if original is None or mutant is None:
        return "    (source not found)"
    mutant = mutant.replace(name, name.rsplit("__mutmut_", 1)[0] + "__mutmut_orig", 1)
    lines = difflib.unified_diff(original.splitlines(), mutant.splitlines(), lineterm="", n=0)
    return "\n".join("    " + line for line in lines
                     if not line.startswith(("---", "+++", "@@")))


def classify(code):
    if code in KILLED:
        return "killed"
    if code in SURVIVED:
        return "survived"
    if code in NO_TESTS:
        return "no tests"
    if code is None:
        return "not run"
    return "other"


def report(modules, show_survivors, show_diff=False):
    totals = Counter()
    rows = []
    for module in modules:
        codes = meta(module)
        counts = Counter(classify(c) for c in codes.values())
        totals.update(counts)
        rows.append((module, counts, len(codes)))
        if show_survivors or show_diff:
            sources = functions(module) if show_diff else {}
            for key, code in sorted(codes.items()):
                if classify(code) in ("survived", "no tests", "other", "not run"):
                    print(f"  {classify(code):9} {key}")
                    if show_diff:
                        print(diff(sources, key))
    print(f"\n{'module':12} {'mutants':>8} {'killed':>7} {'survived':>9} {'no tests':>9}"
          f" {'other':>6} {'score':>7}")
    for module, counts, n in rows + [("all", totals, sum(r[2] for r in rows))]:
        if module == "all":
            print("-" * 63)
        score = f"{100 * counts['killed'] / n:6.1f}%" if n else "    -"
        print(f"{module:12} {n:8} {counts['killed']:7} {counts['survived']:9} "
              f"{counts['no tests']:9} {counts['other'] + counts['not run']:6} {score:>7}")
    n = sum(r[2] for r in rows)
    return totals["killed"] / n if n else 0.0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("modules", nargs="*", help=f"some of: {' '.join(MODULES)}")
    parser.add_argument("--survivors", action="store_true", help="list surviving mutants")
    parser.add_argument("--diff", action="store_true",
                        help="list surviving mutants with the lines they changed")
    parser.add_argument("--report", action="store_true", help="do not run, print the scores")
    parser.add_argument("--min", type=float, default=0.0,
                        help="exit 1 if the overall score is below this percentage")
    args = parser.parse_args()
    modules = args.modules or MODULES
    unknown = set(modules) - set(MODULES)
    if unknown:
        parser.error(f"unknown module(s) {sorted(unknown)}; allowed: {' '.join(MODULES)}")
    os.chdir(ROOT)
    if not args.report:
        started = time.monotonic()
        patterns = [f"{PACKAGE}.{m}.*" for m in modules] if args.modules else []
        log = ROOT / "mutants" / "mutate.log"
        log.parent.mkdir(exist_ok=True)
        print(f"mutmut run {' '.join(patterns) or '(all of: ' + ' '.join(MODULES) + ')'}"
              f" (its output: {log.relative_to(ROOT)})", flush=True)
        with open(log, "w") as out:
            code = subprocess.call([sys.executable, "-m", "mutmut", "run", *patterns],
                                   stdout=out, stderr=subprocess.STDOUT)
        if code != 0:
            print(log.read_text(errors="replace")[-3000:])
            sys.exit(f"mutmut run failed with exit status {code}")
        print(f"mutmut took {time.monotonic() - started:.0f} s")
    score = report(modules, args.survivors, args.diff)
    if 100 * score < args.min:
        sys.exit(f"score {100 * score:.1f}% is below {args.min}%")


if __name__ == "__main__":
    main()
