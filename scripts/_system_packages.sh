# Used by scripts/test: install the Debian packages some tests need, only those missing. The tests fail, rather than
# skip, without them:
#   chromium        tests/integration/test_flower_browser.py checks Flower in a real headless browser
#                   (FEDGATE_TEST_CHROMIUM may point at another Chromium or Chrome binary instead)
#   prometheus      its `promtool check config` validates deploy/prometheus.yml (tests/unit/test_compose.py)
#   docker-compose  `docker-compose config -q` validates docker-compose.yml, unless `docker compose` exists
# Installing needs apt-get and root (or password-less sudo). Elsewhere this says what is missing and stops.
# Usage: source scripts/_system_packages.sh && install_missing_system_packages
set -euo pipefail

missing_system_packages() {
  local missing=()
  if ! command -v chromium >/dev/null 2>&1 && [ -z "${FEDGATE_TEST_CHROMIUM:-}" ]; then missing+=(chromium); fi
  if ! command -v promtool >/dev/null 2>&1; then missing+=(prometheus); fi
  if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null 2>&1; then
    missing+=(docker-compose)
  fi
  echo "${missing[@]}"
}

install_missing_system_packages() {
  local missing
  read -r -a missing <<<"$(missing_system_packages)"
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=()
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "fedgate: the tests need ${missing[*]} (Debian package names); install them and run scripts/test again" >&2
    return 1
  fi
  if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1 || ! sudo -n true 2>/dev/null; then
      echo "fedgate: the tests need ${missing[*]}; installing them needs root: sudo apt-get install -y ${missing[*]}" >&2
      return 1
    fi
    sudo=(sudo -n)
  fi
  echo "fedgate: installing ${missing[*]} (apt-get; the tests need them)" >&2
  local log
  log="$(mktemp -t fedgate-apt.XXXXXX)"
  if ! { "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -o Acquire::Retries=3 update &&
         "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -o Acquire::Retries=3 -o Dpkg::Use-Pty=0 \
           install -y --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    echo "fedgate: installing ${missing[*]} failed; the whole log is in $log" >&2
    return 1
  fi
  rm -f "$log"
}
