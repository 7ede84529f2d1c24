%# The detect job's script (filled in by detect.rs, see deploy.yml): which components a push
%# changed, with the glob semantics of `cutover changed`.
set -euo pipefail
shopt -s extglob
all='%{all}'
# Whether file $2 belongs to component $1: the config's globs, in bash (extglob).
matches() {
  local p pats=()
  case "$1" in
    %{glob_cases}
  esac
  for p in "${pats[@]}"; do
    # shellcheck disable=SC2053 # $p is a glob on purpose
    [[ $2 == $p ]] && return 0
  done
  return 1
}
release=${RELEASE_INPUT:-$HEAD_SHA}
if [[ ! $release =~ ^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$ ]]; then
  echo '::error::release must be 1-64 characters A-Z a-z 0-9 . _ - starting with a letter or digit'
  exit 1
fi
target=${TARGET:-auto}
selected=''
reason=''
case "$target" in
  auto) ;;
  %{all_targets}) selected=$all; reason="target $target" ;;
  %{names}) selected=$target; reason="target $target" ;;
  *) echo '::error::unknown target'; exit 1 ;;
esac
if [ "$target" = auto ]; then
  if [ "$EVENT" != push ]; then
    selected=$all; reason='manual run: no pushed range, deploying all'
  elif [[ ! $BEFORE =~ ^[0-9a-f]{40}([0-9a-f]{24})?$ ]] || [[ $BEFORE =~ ^0+$ ]]; then
    selected=$all; reason='base is all zeros or unknown (a new branch?): deploying all'
  elif ! git cat-file -e "$BEFORE^{commit}" 2>/dev/null; then
    selected=$all; reason="base ${BEFORE:0:7} is not a commit in this repository: deploying all"
  %{if repo_config}
  elif command -v cutover >/dev/null && command -v jq >/dev/null && [ -f %{repo_config} ]; then
    selected=$(cutover --config %{repo_config} changed --base "$BEFORE" --head "$HEAD_SHA" --json | jq -r '[.components[].name] | join(" ")')
    reason="cutover changed ${BEFORE:0:7}..${HEAD_SHA:0:7}"
  %{end}
  else
    files=()
    while IFS= read -r -d '' f; do files+=("$f"); done \
      < <(git diff --name-only --no-renames -z "$BEFORE" "$HEAD_SHA" --)
    for c in $all; do
      for f in "${files[@]}"; do
        if matches "$c" "$f"; then selected="${selected:+$selected }$c"; break; fi
      done
    done
    reason="${#files[@]} files changed in ${BEFORE:0:7}..${HEAD_SHA:0:7}"
  fi
fi
echo "Deploying: ${selected:-nothing} ($reason)" | tee -a "$GITHUB_STEP_SUMMARY"
echo "components=$selected" >> "$GITHUB_OUTPUT"
echo "release=$release" >> "$GITHUB_OUTPUT"
