#!/usr/bin/env bash
# Run one grid's `cpu` profile and commit-ready its report under docs/results/<grid>-cpu/ (Markdown + PNGs),
# with the git SHA, the wall time and the machine load of the run in RUN.md.
#
#   docs/results/run_cpu_profile.sh ablations/table1_datasets.yaml
#   docs/results/run_cpu_profile.sh ablations/seed000_ppo_dpo_grpo.yaml --judge   # + the local judge step
#   docs/results/run_cpu_profile.sh ablations/seed001_rm_dpo.yaml
#
# Uses .venv/bin/harness (set HARNESS=... to use another entry point). Stages and MLflow runs go to the
# usual stores (results/), so a rerun after an interruption resumes from the finished stages.
set -euo pipefail
grid="$1"; shift
judge=0; [[ "${1:-}" == "--judge" ]] && judge=1
harness="${HARNESS:-.venv/bin/harness}"
stem="$(basename "$grid" .yaml)"
experiment="$(python3 -c "import yaml,sys; print(yaml.safe_load(open(sys.argv[1]))['experiment'])" "$grid")-cpu"
out="docs/results/${stem}-cpu"
sha="$(git rev-parse HEAD)"; dirty="$(git status --porcelain -- harness reports datasets_registry ablations | wc -l)"
load_before="$(cut -d' ' -f1-3 /proc/loadavg)"; start="$(date +%s)"; started="$(date -u +%FT%TZ)"
$harness run "$grid" --profile cpu
if [[ $judge == 1 ]]; then
  $harness judge "$experiment" --local-judge smollm2-135m-instruct --pairs reference --max-new-tokens 64
fi
end="$(date +%s)"; load_after="$(cut -d' ' -f1-3 /proc/loadavg)"
rm -rf "$out"
$harness report "$experiment" --out "$out" --format md,png
cat > "$out/RUN.md" <<MD
# ${stem} at the cpu profile

- command: \`harness run $grid --profile cpu\`$( [[ $judge == 1 ]] && echo " then \`harness judge $experiment --local-judge smollm2-135m-instruct --pairs reference --max-new-tokens 64\`" )
- git SHA: \`$sha\` (uncommitted changes under harness/ reports/ datasets_registry/ ablations/: $dirty files)
- started: $started; wall time: $(( (end - start) / 60 )) min $(( (end - start) % 60 )) s (run$( [[ $judge == 1 ]] && echo " + judge" ), without the report)
- load average before / after: $load_before / $load_after ($(nproc) cores)
- report: [index.md](index.md) (tables under tables/, figures under figures/), built from MLflow by \`harness report $experiment\`
MD
echo "written: $out (RUN.md, index.md, tables/, figures/)"
