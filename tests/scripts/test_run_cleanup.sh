#!/usr/bin/env bash
# test_run_cleanup: `scripts/run | tee run.log` then Ctrl-C must still stop the stack. Ctrl-C kills
# tee too; the cleanup's first echo then hit the dead pipe (SIGPIPE) and `scripts/stack down` never
# ran. Hermetic: scripts/run is copied beside fake bootstrap/stack/dev-keys scripts, fake daemons
# and fake cmake/ninja/curl, so no real stack is touched. Takes about two seconds.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
T=$(mktemp -d)
trap 'kill -KILL -- -"${pgid:-0}" 2>/dev/null || true; rm -rf "$T"' EXIT

mkdir -p "$T/scripts" "$T/bin" "$T/build"
cp "$ROOT/scripts/run" "$T/scripts/run"
cat >"$T/scripts/stack" <<'STACK'
#!/usr/bin/env bash
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
echo "stack $*" >>"$ROOT/stack.calls"
if [ "$1" = up ]; then mkdir -p "$ROOT/.stack"; : >"$ROOT/.stack/env"; fi
echo "stack: $1 done"   # like the real one: output on stdout (the dead pipe)
STACK
printf '#!/bin/sh\nexit 0\n' >"$T/scripts/bootstrap"
printf '#!/bin/sh\nexit 0\n' >"$T/scripts/dev-keys"
for tool in cmake ninja curl; do printf '#!/bin/sh\nexit 0\n' >"$T/bin/$tool"; done
for daemon in tp-worker tp-ingress; do
    printf '#!/bin/sh\nexec sleep 60\n' >"$T/build/$daemon"
done
printf '#!/bin/sh\necho token\n' >"$T/build/tpctl"
chmod +x "$T"/scripts/* "$T"/bin/* "$T"/build/*

# A new session, as a terminal's foreground job: Ctrl-C is SIGINT to the whole process group.
(cd "$T" && PATH="$T/bin:$PATH" TP_BUILD_DIR="$T/build" TP_KEEP_STACK=0 \
    exec setsid bash -c 'bash scripts/run | tee run.log' </dev/null >/dev/null 2>"$T/stderr.log") &
pgid=$!
for _ in $(seq 1 100); do grep -q "is running" "$T/run.log" 2>/dev/null && break; sleep 0.1; done
grep -q "is running" "$T/run.log" || { echo "FAIL: scripts/run did not come up"; cat "$T/stderr.log"; exit 1; }
kill -INT -- -"$pgid"
for _ in $(seq 1 100); do kill -0 -- -"$pgid" 2>/dev/null || break; sleep 0.1; done
cat "$T/stack.calls"
grep -qx "stack down" "$T/stack.calls" || { echo "FAIL: Ctrl-C under | tee did not run scripts/stack down"; exit 1; }
if kill -0 -- -"$pgid" 2>/dev/null; then echo "FAIL: scripts/run still running 10 s after Ctrl-C"; exit 1; fi
echo "ok: Ctrl-C under | tee stopped the stack"
