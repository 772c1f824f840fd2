#!/usr/bin/env bash
# Fails when the repository tracks a build output: an executable (ELF, Mach-O, PE, or a file
# with an exec bit that is not a script) or any file over 1 MiB. Built things belong in bin/
# or dist/, which are ignored.
set -euo pipefail
cd "$(dirname "$0")/.."
bad=0
while IFS= read -r -d '' f; do
	[ -f "$f" ] || continue
	size=$(stat -c %s "$f")
	if [ "$size" -gt 1048576 ]; then
		echo "verify-tree: $f is $size bytes; files over 1 MiB are not tracked" >&2
		bad=1
	fi
	case "$(head -c 4 "$f" | od -An -tx1 | tr -d ' \n')" in
	7f454c46 | cffaedfe | cefaedfe | 4d5a*)
		echo "verify-tree: $f is an executable; build outputs are not tracked" >&2
		bad=1
		;;
	esac
done < <(git ls-files -z)
exit "$bad"
