#!/usr/bin/env bash
# Compress a model before release: prune it (reusing an earlier result built from the same inputs),
# gate size, speed, accuracy and provenance in one `dpm check`, write the report, and publish the
# compact artifacts only when every gate passes. docs/CI.md runs this flow as a GitHub Actions job.
#
#   scripts/release.sh MODEL RECIPE PUBLISH_DIR [KEY.PATH=VALUE ...] -- GATE_OPTIONS ...
#
#   scripts/release.sh models/dense.pt recipes/r.yaml dist/model -- \
#       --min-macs-reduction 2 --min-speedup 1.3 --threads 2 --repeats 50 --max-accuracy-drop 1
#
# MODEL is the dense checkpoint or Hugging Face model folder (also the baseline of the gates; a folder's
# files are hashed for --built-from and --reuse); overrides go to the recipe, as in
# `dpm prune`; everything after `--` goes to `dpm check` (which always adds --baseline MODEL and
# --built-from MODEL). PUBLISH_DIR must not exist: it appears, complete, only when every gate passed.
#
# Environment: DPM      how to run dpm (default: dpm; e.g. "python -m dpm_cli")
#              RUN_DIR  the run directory, kept between jobs for --reuse (default: runs/release)
#              REPORT   the Markdown report, written pass or fail (default: RUN_DIR-report.md, outside
#                       the run directory, which only dpm writes); its HTML twin is REPORT with .html
#
# Exit codes: 0 every gate passed and PUBLISH_DIR was written; 1 a gate failed (nothing published) or
# a run failed; 2 bad input.
set -euo pipefail

die() { echo "error: $1" >&2; exit "${2:-2}"; }
[ $# -ge 3 ] || die "usage: $0 MODEL RECIPE PUBLISH_DIR [KEY.PATH=VALUE ...] -- GATE_OPTIONS ..."
MODEL=$1 RECIPE=$2 PUBLISH=$3
shift 3
OVERRIDES=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do OVERRIDES+=("$1"); shift; done
[ $# -gt 0 ] && shift
[ $# -gt 0 ] || die "no gates: give dpm check options after --, e.g. -- --min-macs-reduction 2 --max-accuracy-drop 1"
[ -e "$PUBLISH" ] && die "$PUBLISH exists: publish into a new folder (a release is never overwritten)"

read -r -a DPM_CMD <<< "${DPM:-dpm}"
RUN_DIR=${RUN_DIR:-runs/release}
REPORT=${REPORT:-${RUN_DIR%/}-report.md}
# ${OVERRIDES[@]+"${OVERRIDES[@]}"}: an empty array is an error under set -u in bash < 4.4 (macOS)

dpm() { "${DPM_CMD[@]}" "$@"; }

# 1. Compress, or reuse the earlier result when checkpoint, recipe, data and versions all match
#    (a mismatch trains again: --force replaces the old result, never silently reused). A run an
#    earlier job's time limit stopped (SIGTERM, exit 143) is continued when its inputs match.
dpm prune "$MODEL" -r "$RECIPE" ${OVERRIDES[@]+"${OVERRIDES[@]}"} --run-dir "$RUN_DIR" -o "$RUN_DIR/model" --reuse --force
COMPACT=$RUN_DIR/model.dpm.pt

# 2. The recipe as the run saw it (overrides applied; a Hugging Face folder given as MODEL is the
#    model.hf.path of a recipe that names no model, as for dpm prune), for the gates and the report.
WORK=$(mktemp -d)
STAGE=
trap 'rm -rf "$WORK" ${STAGE:+"$STAGE"}' EXIT  # a job stopped while staging leaves no PUBLISH.partial.*
dpm validate "$RECIPE" "$MODEL" ${OVERRIDES[@]+"${OVERRIDES[@]}"} --show > "$WORK/recipe.yaml"

# A Hugging Face folder the recipe asks for (output.hf: true) and the run directory lacks: dpm prune fails
# (exit 1) when it cannot write it; this also covers a folder deleted since, or a dpm that only noted it.
if sed -n '/^output:/,/^[^ ]/p' "$WORK/recipe.yaml" | grep -q '^  hf: true' && [ ! -d "$RUN_DIR/model-hf" ]; then
  why=$(grep -o 'Hugging Face folder not written[^"]*' "$RUN_DIR/summary.json" 2>/dev/null | head -1 || true)
  die "the recipe asks for a Hugging Face folder (output.hf: true) and dpm prune did not write it${why:+: $why}; nothing published" 1
fi

# 3. Gates: size, speed and accuracy against the dense model, and that the compact model was built
#    from exactly these inputs. Exit 1 = a gate failed; anything else but 0 is an error.
set +e
dpm check "$COMPACT" -r "$WORK/recipe.yaml" --baseline "$MODEL" --built-from "$MODEL" "$@" --markdown \
  --save-json "$WORK/check.json" > "$WORK/check.md"
GATES=$?
set -e
[ "$GATES" -le 1 ] || die "dpm check could not run (exit $GATES)" "$GATES"

# 4. The report (for the pull request or the job summary), pass or fail.
mkdir -p "$(dirname "$REPORT")"
{
  cat "$WORK/check.md"
  dpm report "$MODEL" --compare "$COMPACT" -r "$WORK/recipe.yaml" --markdown
} > "$REPORT"
# The same as one self-contained page (tables, gates, decay and accuracy plots), to look at.
HTML=${REPORT%.md}.html
dpm report "$MODEL" --compare "$COMPACT" -r "$WORK/recipe.yaml" --run "$RUN_DIR" --gates "$WORK/check.json" \
  --html "$HTML"

if [ "$GATES" -ne 0 ]; then
  echo "gates failed: nothing published (report: $REPORT)" >&2
  exit 1
fi

# 5. Publish: stage next to the target, then rename, so PUBLISH_DIR is never half-written.
mkdir -p "$(dirname "$PUBLISH")"
STAGE=$(mktemp -d "$PUBLISH.partial.XXXXXX")
for f in model.pt model.dpm.pt model.pt2 summary.json; do
  [ -f "$RUN_DIR/$f" ] && cp "$RUN_DIR/$f" "$STAGE/"
done
# a Hugging Face model's folder (output.hf: true), which from_pretrained loads
[ -d "$RUN_DIR/model-hf" ] && cp -R "$RUN_DIR/model-hf" "$STAGE/"
cp "$REPORT" "$STAGE/release-report.md"
cp "$HTML" "$STAGE/release-report.html"
mv "$STAGE" "$PUBLISH"
echo "all gates passed: published $(ls "$PUBLISH" | tr '\n' ' ')to $PUBLISH"
