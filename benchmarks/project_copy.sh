# Sourced by run_own_data.sh and shipped.sh, which run the project workflow in a copy of its own.
# project_copy ROOT DIR ARGS...: DIR emptied and given project.yml, configs/ and a link to the
# package of the repository at ROOT; `args` set to ARGS with the paths after --vars.train,
# --vars.dev and --vars.test made absolute (the workflow runs in DIR).
project_copy() {
  local root=$1 dir=$2 previous="" arg
  shift 2
  args=()
  for arg in "$@"; do
    case $previous in
      --vars.train|--vars.dev|--vars.test) arg=$(realpath "$arg") ;;
    esac
    args+=("$arg"); previous=$arg
  done
  rm -rf "$dir" && mkdir -p "$dir"
  cp "$root/project.yml" "$dir/" && cp -r "$root/configs" "$dir/configs"
  ln -s "$root/spacy_bert_ner" "$dir/spacy_bert_ner"
}
