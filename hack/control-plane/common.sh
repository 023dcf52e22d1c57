# Shared settings for up/down (sourced, not run).
# Every port can be overridden from the environment.
cp_here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cp_root=$(cd "$cp_here/../.." && pwd)
CP_BIN="$cp_root/target/control-plane/bin"
# State (keys, data, PIDs, logs); overridable to run a second, separate instance.
CP_DIR=${ORGOPS_CP_DIR:-"$cp_root/target/control-plane"}
CP_RUN="$CP_DIR/run"
CP_LOGS="$CP_DIR/logs"
CP_PKI="$CP_DIR/pki"
CP_CERTS="$CP_DIR/serving-certs"
CP_ETCD_DATA="$CP_DIR/etcd-data"
CP_KUBECONFIG="$CP_DIR/kubeconfig"

ETCD_PORT=${ORGOPS_ETCD_PORT:-2379}
ETCD_PEER_PORT=${ORGOPS_ETCD_PEER_PORT:-2380}
APISERVER_PORT=${ORGOPS_APISERVER_PORT:-6443}
KCM_PORT=${ORGOPS_KCM_PORT:-10257}

# Components in start order; down stops them in reverse.
CP_COMPONENTS=(etcd kube-apiserver kube-controller-manager)

cp_log() { echo "control-plane: $*" >&2; }

# Prints the PID recorded for a component if that process is alive and runs our binary.
cp_live_pid() {
  local name=$1 pidfile="$CP_RUN/$1.pid" pid exe
  [ -f "$pidfile" ] || return 1
  pid=$(cat "$pidfile" 2>/dev/null) || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [ -d "/proc/$pid" ] || return 1
  # A recycled PID belongs to some other program: the exe link tells.
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null || true)
  exe=${exe% (deleted)}
  [ "$exe" = "$CP_BIN/$name" ] || return 1
  echo "$pid"
}

# True when something accepts TCP connections on 127.0.0.1:$1.
cp_port_busy() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Best-effort description of who listens on a port.
cp_port_owner() {
  if command -v ss >/dev/null 2>&1; then
    ss -ltnpH "sport = :$1" 2>/dev/null | sed -n 's/.*users:((\(.*\))).*/\1/p' | head -n1
  fi
}

# PID of the process listening on a port (needs ss from iproute2).
cp_port_pid() {
  command -v ss >/dev/null 2>&1 || return 1
  ss -ltnpH "sport = :$1" 2>/dev/null | sed -n 's/.*pid=\([0-9]*\).*/\1/p' | head -n1
}

# True when a PID is our component for this state dir (its PID file was lost).
cp_is_ours() { # name pid
  local exe
  exe=$(readlink "/proc/$2/exe" 2>/dev/null || true)
  [ "${exe% (deleted)}" = "$CP_BIN/$1" ] && tr '\0' ' ' <"/proc/$2/cmdline" | grep -qF "$CP_DIR/"
}
