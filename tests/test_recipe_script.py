"""scripts/recipe_cpu_hybrid.sh: the CPU recipe's steps in order, each skipped once its output exists.

The m6gen and torchrun commands are stand-ins that log their arguments and write the file each step
is known by, so the script's own logic (order, resume, failure) is tested without training anything.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "recipe_cpu_hybrid.sh"
RUN = "runs/hybrid-state-r32-400"

# Writes the file the script checks for each command, and fails where FAIL_ON names an argument.
FAKE_M6GEN = r"""#!/usr/bin/env bash
echo "m6gen $*" >> calls.log
for arg in "$@"; do [ -n "${FAIL_ON:-}" ] && [ "$arg" = "$FAIL_ON" ] && exit 3; done
# SLOW_ON: that command lets go of the recipe's output (so the caller sees the recipe end) and finishes late
for arg in "$@"; do [ -n "${SLOW_ON:-}" ] && [ "$arg" = "$SLOW_ON" ] && exec >/dev/null 2>&1 && sleep 2; done
case "$1" in
  baselines) while [ $# -gt 0 ]; do [ "$1" = --out ] && out=$2; shift; done
             mkdir -p "$out" && echo '{}' > "$out/baselines.json" ;;
  train) mkdir -p runs/hybrid-state-r32-400 && echo '{}' > runs/hybrid-state-r32-400/train_summary.json ;;
  fit-readout) touch runs/hybrid-state-r32-400/readout.safetensors ;;
esac
"""
FAKE_TORCHRUN = r"""#!/usr/bin/env bash
echo "torchrun $*" >> calls.log
out=runs/hybrid-state-r32-400/eval
[ -d "$out/baselines" ] || exit 4
printf '| method | ratio |\n|---|---:|\n| Pop | 0.4 |\n' > "$out/eval_test_vs_sasrec.md"
printf '| m6gen, chosen on valid: x | 1.02 |\n' >> "$out/eval_test_vs_sasrec.md"
"""


@pytest.fixture()
def workdir(tmp_path):
    if shutil.which("bash") is None:
        pytest.skip("bash not found")
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "cpu-hybrid-state-five-sasrecs.yaml").write_text("")
    for name, text in (("m6gen", FAKE_M6GEN), ("torchrun", FAKE_TORCHRUN)):
        path = tmp_path / f"fake-{name}"
        path.write_text(text)
        path.chmod(0o755)
    return tmp_path


def run_recipe(workdir: Path, **env) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "M6GEN": str(workdir / "fake-m6gen"), "TORCHRUN": str(workdir / "fake-torchrun"), **env}
    return subprocess.run(["bash", str(SCRIPT)], cwd=workdir, env=full_env, capture_output=True, text=True)


def calls(workdir: Path) -> list[str]:
    log = workdir / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


def test_the_recipe_runs_every_step_in_order_and_reports_the_chosen_row(workdir):
    done = run_recipe(workdir)
    assert done.returncode == 0, done.stderr
    made = calls(workdir)
    commands = [line.split()[1] for line in made]
    assert commands == ["baselines"] * 6 + ["train", "fit-readout", "--nproc_per_node"]
    assert made[0] == "m6gen baselines --out runs/hybrid/baselines"
    assert sorted(line for line in made if "--sasrec-seed" in line) == [
        f"m6gen baselines --methods SASRec --sasrec-seed {s} --threads 1 --out runs/sasrec-seeds/seed{s}"
        for s in (1, 2, 3, 4)
    ]
    # seeds 1 and 2 both start before 3 and 4 (two at a time)
    assert {made[1].split()[5], made[2].split()[5]} == {"1", "2"}
    assert "--model runs/hybrid-state-r32-400 --out runs/hybrid-state-r32-400/eval" in made[-1]
    # the eval reads the run's own SASRec, copied in before it starts
    assert (workdir / RUN / "eval" / "baselines" / "baselines.json").is_file()
    times = (workdir / "runs" / "recipe_times.tsv").read_text().splitlines()
    assert [line.split("\t")[1] for line in times] == [
        "SASRec seed 0 (the run's tokens)",
        "SASRec seeds 1 and 2",
        "SASRec seeds 3 and 4",
        "EASE",
        "train",
        "fit-readout",
        "eval",
    ]
    assert "| m6gen, chosen on valid: x | 1.02 |" in done.stdout
    assert "| Pop |" not in done.stdout


def test_a_second_run_skips_finished_steps_and_resumes_at_the_missing_one(workdir):
    assert run_recipe(workdir).returncode == 0
    first = len(calls(workdir))
    assert run_recipe(workdir).returncode == 0
    assert len(calls(workdir)) == first  # nothing ran again
    (workdir / RUN / "readout.safetensors").unlink()
    (workdir / RUN / "eval" / "eval_test_vs_sasrec.md").unlink()
    (workdir / "runs" / "sasrec-seeds" / "seed3" / "baselines.json").unlink()
    assert run_recipe(workdir).returncode == 0
    again = calls(workdir)[first:]
    assert [line.split()[1] for line in again] == ["baselines", "fit-readout", "--nproc_per_node"]
    assert "--sasrec-seed 3" in again[0]  # seed 4 was finished, so only seed 3 trains again


def test_a_failed_step_stops_the_recipe_before_the_next(workdir):
    failed = run_recipe(workdir, FAIL_ON="3")  # the SASRec of seed 3 fails
    assert failed.returncode != 0
    commands = [line.split()[1] for line in calls(workdir)]
    assert "train" not in commands
    assert not (workdir / RUN / "train_summary.json").exists()


def test_a_failed_seed_lets_its_partner_finish_before_the_recipe_stops(workdir):
    """Seeds train two at a time: when the first fails, the second is waited for, not left running."""
    failed = run_recipe(workdir, FAIL_ON="3", SLOW_ON="4")
    assert failed.returncode != 0
    assert (workdir / "runs" / "sasrec-seeds" / "seed4" / "baselines.json").is_file()


def test_outside_the_repository_root_it_says_where_to_run(tmp_path):
    if shutil.which("bash") is None:
        pytest.skip("bash not found")
    done = subprocess.run(["bash", str(SCRIPT)], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error: run this from the m6gen repository root")
    assert len(done.stderr.strip().splitlines()) == 1
