#!/usr/bin/env bash
# The synthetic target, retain and NPO-unlearned models, each evaluated in TOFU, MUSE and WMDP form by
# src/exec/evaluate.py, then one comparison table (CSV + markdown + PNG). Prints each step's wall time.
#   bash benchmarks/evaluation_forms.sh        (or: make evaluate-forms)
set -euo pipefail
PY=${PY:-.venv/bin/python}
OUT=files/results/synthetic/evaluations
timed() { local start=$SECONDS; "$@"; echo "== $((SECONDS - start)) s: ${*: -2}" >&2; }

models=$($PY src/exec/finetune.py --config_file configs/synthetic/npo.json)
TARGET=$(sed -n 's/^target model: //p' <<<"$models")
RETAIN=$(sed -n 's/^retain model: //p' <<<"$models")
NPO=files/results/synthetic/NPO/forms_npo
if [ ! -d "$NPO/model" ]; then
  timed $PY src/exec/unlearn_model.py --config_file configs/synthetic/npo.json --unlearn.save_model true \
    --eval.before false --eval.after false --logger.overwrite true --logger.name forms_npo
fi
runs=()
for form in tofu muse wmdp; do
  for model in target retain npo; do
    case $model in target) folder=$TARGET ;; retain) folder=$RETAIN ;; npo) folder=$NPO/model ;; esac
    timed $PY src/exec/evaluate.py --config_file configs/synthetic/eval_$form.json --finetune.enabled false \
      --overall.model_name "$folder" --eval.retain_model_name "$RETAIN" --logger.overwrite true \
      --logger.name "${form}_${model}" > /dev/null
    runs+=("$OUT/${form}_${model}")
  done
done
$PY src/exec/compare_runs.py "${runs[@]}" --out files/results/synthetic/evaluation_forms
