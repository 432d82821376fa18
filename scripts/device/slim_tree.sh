#!/usr/bin/env bash
# Make the working tree fit a device call's 64 MiB (tracked and untracked-not-ignored files
# travel), then put it back. The bundled weight files alone are ~78 MB: `out` takes every
# src/opencodec/weights/*.safetensors out of the index and ignores it locally
# (.git/info/exclude), except the files named in KEEP; `in` restores the index and the
# exclude file. The files stay on disk throughout; nothing is committed.
#   KEEP="opencodec_24khz.safetensors" scripts/device/slim_tree.sh out   # INIT_FROM needs the codec
#   scripts/device/slim_tree.sh in
# Prints the size of what would travel (tracked + untracked-not-ignored files), then with the
# ignored folders a device call carries (CARRY, default ".whl .gpu"; a folder the tree already
# holds counts once), against the device tool's 64 MiB.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
EXCLUDE=$(git rev-parse --git-path info/exclude)
BEGIN="# slim_tree.sh: begin"; END="# slim_tree.sh: end"
case "${1:-}" in
  out)
    if grep -qF "$BEGIN" "$EXCLUDE" 2>/dev/null; then echo "already slim: run '$0 in' first" >&2; exit 1; fi
    echo "$BEGIN" >> "$EXCLUDE"
    for f in src/opencodec/weights/*.safetensors; do
      name=$(basename "$f")
      if [[ " ${KEEP:-} " == *" $name "* ]]; then continue; fi
      if git ls-files --error-unmatch "$f" >/dev/null 2>&1; then
        git rm -q --cached "$f"
        echo "/$f" >> "$EXCLUDE"
        echo "out of the tree: $f"
      fi
    done
    echo "$END" >> "$EXCLUDE" ;;
  in)
    [ -f "$EXCLUDE" ] || exit 0
    sed -n "/^$BEGIN\$/,/^$END\$/p" "$EXCLUDE" | grep -v '^#' | sed 's|^/||' | while read -r f; do
      git reset -q HEAD -- "$f" && echo "back in the tree: $f"
    done
    sed -i "/^$BEGIN\$/,/^$END\$/d" "$EXCLUDE" ;;
  *) echo "usage: [KEEP='a.safetensors ...'] $0 out|in" >&2; exit 2 ;;
esac
# one sum over every file (du -c's last line would be only the last xargs batch's total)
sum_bytes() { xargs -0 -r stat -c %s -- 2>/dev/null | awk '{s += $1} END {print s + 0}'; }
bytes=$( { git ls-files -z; git ls-files -z --others --exclude-standard; } | sum_bytes)
echo "what would travel (tracked + untracked-not-ignored, without shared/ and carry): $((bytes / 1048576)) MiB"
carried=0
for d in ${CARRY-.whl .gpu}; do
  [ -e "$d" ] || { echo "carry: $d is missing"; continue; }
  git check-ignore -q "$d" || continue  # not ignored: already counted above
  carried=$((carried + $(find "$d" -type f -print0 | sum_bytes)))
done
total=$((bytes + carried))
echo "with the carried ${CARRY-.whl .gpu}: $((total / 1048576)) MiB of 64 MiB"
[ "$total" -le $((64 * 1048576)) ] || echo "WARNING: over the device tool's 64 MiB: the call would be refused"
