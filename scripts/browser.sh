#!/usr/bin/env bash
# Install the headless browser the console's browser tests drive: Debian's `chromium`
# (driven by Playwright for Python through executable_path; never `playwright install`,
# which downloads a browser build of its own). Idempotent: does nothing when
# /usr/bin/chromium is already there. Fails loudly when it cannot install.
set -euo pipefail
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
CHROMIUM=${TIDEGATE_CHROMIUM:-/usr/bin/chromium}

if [[ -x $CHROMIUM ]]; then
  echo "chromium: $("$CHROMIUM" --version 2>/dev/null || echo present) at $CHROMIUM" >&2
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "chromium is missing and installing it needs root: apt-get install chromium" >&2
  exit 1
fi
log=$(mktemp /tmp/tidegate-chromium.XXXXXX.log)
echo "chromium: installing Debian's package (log: $log)" >&2
if ! { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
      --no-install-recommends chromium fonts-liberation; } >"$log" 2>&1; then
  tail -n 30 "$log" >&2
  echo "chromium: apt-get install chromium failed (full log: $log)" >&2
  exit 1
fi
if [[ ! -x $CHROMIUM ]]; then
  echo "chromium: installed, but $CHROMIUM is not there" >&2
  exit 1
fi
echo "chromium: $("$CHROMIUM" --version 2>/dev/null) at $CHROMIUM" >&2
