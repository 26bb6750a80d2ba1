"""Fuzz test of the readers: thousands of mutated checkpoints, each answered with a Model
or a project error, never another exception, a crash, a blow-up or a hang.

The cases start from the PyTorch fixtures (``tests/fixtures/*.pth*``: zip archives and
a legacy stream) and from own-format files (a synthetic ``plain_ternary_cnn`` written by
``save_model`` and the shipped ``default_model.safetensors``), and mutate them (see
``reader_child.fuzz_case``): byte flips, truncations, insertions, deleted and repeated
slices; zip-member rewrites (a member dropped, duplicated, renamed, deflated, a storage
grown with zeros, bad byteorder/version records, junk members); pickle-opcode changes
of ``data.pkl`` and of each pickle of the legacy stream (opcodes deleted, repeated,
swapped, integers set to extremes, strings replaced, globals replaced by allowed and
forbidden ones, memo indices changed, deep nesting inserted); safetensors header and
graph JSON changes (nodes replaced, deleted or added, deep nesting, bad lengths).

Each case is made from its seed and number inside a child process
(``reader_child.py fuzz``), which caps its address space and reports every case as it
goes; several batches run in parallel.  A failure names the case; reproduce it with
``python tests/io/reader_child.py fuzz --seed SEED --first N --count 1 --write DIR``
(keeps the case's file in DIR).
"""

from __future__ import annotations

import importlib.util
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("reader_child", Path(__file__).with_name("reader_child.py"))
reader_child = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reader_child)

SEED = 20260501
CASES = 2500
BATCHES = 2  # children, run at the same time (the machine has two cores)
LIMIT_MB = 512  # each child's address space above its start-up size (the fixtures are ~100 KB)


MAX_RESTARTS = 10  # per batch: after a crash or a hang the batch goes on from the next case


def _run_batch(first: int, count: int) -> tuple[dict, list[str]]:
    """Cases first .. first+count-1, in one child, restarted after the case that crashed or hung."""
    results, failures, end = {}, [], first + count
    while first < end and len(failures) <= MAX_RESTARTS:
        args = ["fuzz", "--seed", str(SEED), "--first", str(first), "--count", str(end - first)]
        found, failure = reader_child.run_child(args, limit_mb=LIMIT_MB)
        results.update(found)
        if failure is None:
            break
        failures.append(failure)
        done = [int(case.split(":", 1)[0]) for case in found]
        first = max(done, default=first - 1) + 2  # skip the case that was running
    return results, failures


@pytest.fixture(scope="module")
def fuzz_results():
    size = CASES // BATCHES
    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(lambda k: _run_batch(k * size, size), range(BATCHES)))
    results, failures = {}, []
    for found, failed in runs:
        results.update(found)
        failures += failed
    return results, failures


def _reproduce(case: str) -> str:
    index = case.split(":", 1)[0]
    return f"python tests/io/reader_child.py fuzz --seed {SEED} --first {index} --count 1 --write DIR"


@pytest.mark.slow
def test_every_mutated_file_gives_a_model_or_a_project_error(fuzz_results):
    results, failures = fuzz_results
    assert not failures, "\n".join(f"{f}\n  reproduce: {_reproduce(f.split('case ')[-1].split(';')[0])}"
                                   if "case " in f else f for f in failures)
    bad = {case: r for case, r in results.items() if r[0] not in ("model", "error")}
    assert not bad, "\n".join(f"{case}: {outcome} {detail}\n  reproduce: {_reproduce(case)}"
                              for case, (outcome, detail) in list(bad.items())[:20])
    assert len(results) == CASES


@pytest.mark.slow
def test_the_fuzz_reaches_every_source_and_both_outcomes(fuzz_results):
    """The generator is not degenerate: every source file and mutation family occurs, some
    mutated files still load (mutations that keep the file valid) and most are refused."""
    results, _ = fuzz_results
    sources = Counter(case.split(":")[1] for case in results)
    assert set(sources) == {"sttn_bwx2_zip", "sttn_bwx2_legacy", "sttn_ter_zip", "plain_ternary_cnn",
                            "default_model"}
    families = Counter(case.split(":")[2].split("-")[0] for case in results)
    assert {"bytes", "zip", "legacy", "st"} <= set(families)
    assert sum("pickle-" in case for case in results) > CASES // 10
    outcomes = Counter(outcome for outcome, _ in results.values())
    assert outcomes["model"] > CASES // 20 and outcomes["error"] > CASES // 2, outcomes
