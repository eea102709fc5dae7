#!/usr/bin/env bash
# Run one grid's `cpu` profile and write its report under docs/results/<grid>-cpu/ (Markdown + PNGs),
# with the git SHA, the wall time and the machine load of the run in RUN.md (docs/results/README.md).
#
#   docs/results/run_cpu_profile.sh ablations/table1_datasets.yaml
#   docs/results/run_cpu_profile.sh ablations/seed000_ppo_dpo_grpo.yaml --judge   # + the local judge step
#   docs/results/run_cpu_profile.sh ablations/seed001_rm_dpo.yaml
#
# Run from the repository root. PYTHON names the interpreter that has the harness installed (default
# .venv/bin/python); the harness is run as `$PYTHON -m harness.cli` so that this checkout's code is the
# one that runs. Stages and MLflow runs go to the usual stores (results/), so a rerun after an
# interruption resumes from the finished stages; the report folder is rebuilt each time. PROFILE (default
# cpu) picks another profile of the grid, e.g. PROFILE=tiny to check this script in a minute.
set -euo pipefail
if [[ $# -lt 1 || $# -gt 2 || ( $# == 2 && "$2" != "--judge" ) ]]; then
  echo "usage: $0 GRID.yaml [--judge]" >&2; exit 2
fi
grid="$1"
judge=0; [[ "${2:-}" == "--judge" ]] && judge=1
[[ -f "$grid" ]] || { echo "$0: no grid file $grid" >&2; exit 2; }
python="${PYTHON:-.venv/bin/python}"
profile="${PROFILE:-cpu}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
harness=("$python" -m harness.cli)
stem="$(basename "$grid" .yaml)"
# The experiment name comes from the harness (profiles name theirs `<experiment>-<profile>` unless they set one).
experiment="$("$python" -c "import sys; from harness.grid import load_grid; print(load_grid(sys.argv[1], profile=sys.argv[2]).experiment)" "$grid" "$profile")"
out="docs/results/${stem}-${profile}"
judge_args=(judge "$experiment" --local-judge smollm2-135m-instruct --pairs reference --max-new-tokens 64)
sha="$(git rev-parse HEAD)"; dirty="$(git status --porcelain -- harness reports datasets_registry ablations | wc -l)"
load_before="$(cut -d' ' -f1-3 /proc/loadavg)"; start="$(date +%s)"; started="$(date -u +%FT%TZ)"
"${harness[@]}" run "$grid" --profile "$profile"
if [[ $judge == 1 ]]; then
  "${harness[@]}" "${judge_args[@]}"
fi
end="$(date +%s)"; load_after="$(cut -d' ' -f1-3 /proc/loadavg)"
rm -rf "$out"
"${harness[@]}" report "$experiment" --out "$out" --format md,png
judge_note=""; [[ $judge == 1 ]] && judge_note=" then \`harness ${judge_args[*]}\`"
cat > "$out/RUN.md" <<MD
# ${stem} at the ${profile} profile

- command: \`harness run $grid --profile $profile\`${judge_note}
- git SHA: \`$sha\` (uncommitted changes under harness/ reports/ datasets_registry/ ablations/: $dirty files)
- started: $started; wall time: $(( (end - start) / 60 )) min $(( (end - start) % 60 )) s (run$( [[ $judge == 1 ]] && echo " + judge" || true ), without the report)
- load average before / after: $load_before / $load_after ($(getconf _NPROCESSORS_ONLN) cores)
- report: [index.md](index.md) (tables under tables/, figures under figures/), built from MLflow by \`harness report $experiment\`
MD
echo "written: $out (RUN.md, index.md, tables/, figures/)"
