#!/usr/bin/env bash
# Runs every Go fuzz target of the module briefly, one at a time (`go test -fuzz` accepts one
# target per run). Usage: hack/fuzz.sh [BUDGET], a -fuzztime: an execution count such as
# 400000x (the default) or a duration such as 30s.
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-400000x}
found=0
while IFS=: read -r file _ line; do
	target=$(sed -E 's/^func (Fuzz[A-Za-z0-9_]*)\(.*/\1/' <<<"$line")
	pkg=./$(dirname "$file")
	echo "fuzz: $pkg $target for $duration"
	go test -run '^$' -fuzz "^${target}\$" -fuzztime "$duration" "$pkg"
	found=$((found + 1))
done < <(git ls-files --cached --others --exclude-standard '*_test.go' | xargs grep -n '^func Fuzz' || true)
echo "fuzz: $found targets ran"
