#!/usr/bin/env bash
# Negative controls of the fault suite: each patch here breaks Arena on purpose (for example
# `skip-lease-wait.patch`: a write no longer waits for the replicas that hold a near copy of
# what it changed). For each, a scratch worktree of HEAD gets the patch, the CI schedule of
# `tests/faults` runs there (seeds FAULT_SEEDS, default "0x5EEDFA17 2 3", until one is
# caught), and the history checker must report a violation; a run that fails for another
# reason stops the script. Exits 1 when a broken build is not caught.
#
#   TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres tests/faults/negative/run.sh
#
# Builds into target/negative (a first run compiles everything once).
set -euo pipefail
root="$(git rev-parse --show-toplevel)"
seeds="${FAULT_SEEDS:-0x5EEDFA17 2 3}"
status=0
for patch in "$root"/tests/faults/negative/*.patch; do
  name="$(basename "$patch" .patch)"
  wt="$(mktemp -d)"
  git -C "$root" worktree add --detach "$wt" HEAD >/dev/null
  git -C "$wt" apply "$patch"
  caught=""
  for seed in $seeds; do
    log="$root/target/negative-$name-$seed.log"
    if (cd "$wt" && FAULT_SEED="$seed" CARGO_TARGET_DIR="$root/target/negative" \
        cargo test --test faults -- a_short_seeded_schedule >"$log" 2>&1); then
      echo "negative control $name, seed $seed: no violation"
    elif grep -qE "seed [0-9]+: [1-9][0-9]* violation\(s\)" "$log"; then
      grep -E "^FIGURE|violation at" "$log" || true
      echo "negative control $name, seed $seed: caught"
      caught=1
      break
    else
      git -C "$root" worktree remove --force "$wt"
      echo "negative control $name, seed $seed: the run failed without a violation (see $log)"
      exit 2
    fi
  done
  git -C "$root" worktree remove --force "$wt"
  if [ -z "$caught" ]; then
    echo "negative control $name: NOT caught"
    status=1
  fi
done
exit "$status"
