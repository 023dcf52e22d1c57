# Sourced by the tool scripts: where pinned tools live, and a lock so that two callers (hack/test's
# background build and the step that needs the tool) never build the same tool at once.
# Tools live outside target/ so that a new worktree, `cargo clean` or a fresh clone of the same
# machine reuses them; each is keyed by its pins, so a changed pin builds a new directory.
#   ORGOPS_TOOLS_DIR   default ${XDG_CACHE_HOME:-$HOME/.cache}/orgops-tools
ORGOPS_TOOLS_DIR=${ORGOPS_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/orgops-tools}
mkdir -p "$ORGOPS_TOOLS_DIR/.locks"

# tools_lock NAME: holds an exclusive lock on NAME until the calling script exits (fd 9).
tools_lock() {
  exec 9>"$ORGOPS_TOOLS_DIR/.locks/$1.lock"
  flock 9
}
