# Sourced by scripts/bulk and scripts/test: make .venv and a Chromium ready, once.
#
# First run: creates .venv with Python >= 3.11, installs the project (and, for the
# tests, its test extras), and makes sure a Chromium exists: a Playwright-managed one,
# else a system one (/usr/bin/chromium, chromium-browser, google-chrome, or
# BULK_CHROMIUM=/path), else `apt-get install -y chromium` when root with apt, else
# one clear line saying what to install. For the tests, also the JavaScript linter
# (tests/js, with npm). As root it also makes the system user Chromium runs as
# (bulk-chromium). Later runs only check a stamp file.
set -euo pipefail

BULK_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BULK_VENV="$BULK_ROOT/.venv"
BULK_EXTRAS="${BULK_EXTRAS:-}"

_bulk_say() { printf 'bulk: %s\n' "$*" >&2; }

_bulk_python() {
  local candidate
  for candidate in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
    [ -n "$candidate" ] || continue
    command -v "$candidate" >/dev/null 2>&1 || continue
    if "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
      command -v "$candidate"
      return 0
    fi
  done
  return 1
}

_bulk_stamp_value() {
  # What the venv was built from: change pyproject.toml or the extras and it rebuilds.
  { cat "$BULK_ROOT/pyproject.toml"; printf '%s' "$BULK_EXTRAS"; } | sha256sum | cut -c1-16
}

bulk_ensure_venv() {
  local stamp="$BULK_VENV/.bulk-stamp" want
  want="$(_bulk_stamp_value)"
  if [ -x "$BULK_VENV/bin/python" ] && [ -f "$stamp" ] && grep -qx "$want" "$stamp"; then
    _bulk_ensure_test_tools
    return 0
  fi
  local py
  if ! py="$(_bulk_python)"; then
    _bulk_say "PYTHON_NOT_FOUND: bulk needs Python >= 3.11 (install python3.11+ and python3-venv, or set PYTHON=/path/to/python3)"
    exit 1
  fi
  _bulk_say "first run: setting up $BULK_VENV with $("$py" --version 2>&1) (takes a minute)..."
  [ -x "$BULK_VENV/bin/python" ] || "$py" -m venv "$BULK_VENV"
  "$BULK_VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
  local target="$BULK_ROOT"
  [ -z "$BULK_EXTRAS" ] || target="$BULK_ROOT[$BULK_EXTRAS]"
  # PYTHONWARNINGS: setuptools' notes about editable installs are not for our users.
  PYTHONWARNINGS=ignore "$BULK_VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$target" >&2
  # Extras accumulate: a later plain run must not think the test extras are missing.
  { grep -v '^$' "$stamp" 2>/dev/null || true; echo "$want"; } > "$stamp.new" && mv "$stamp.new" "$stamp"
  if [ -n "$BULK_EXTRAS" ]; then
    local plain
    plain="$(BULK_EXTRAS='' _bulk_stamp_value)"
    grep -qx "$plain" "$stamp" || echo "$plain" >> "$stamp"
  fi
  _bulk_ensure_test_tools
}

_bulk_ensure_test_tools() {
  # The tests' own tools beyond Python: only for the test extras.
  case ",$BULK_EXTRAS," in *,test,*) bulk_ensure_js_linter ;; esac
}

bulk_ensure_js_linter() {
  # The tests lint the in-page scripts (bulk/_capture/js) with ESLint, pinned in
  # tests/js/package-lock.json: `npm ci` there once; later runs only check a stamp.
  # Without node/npm: `apt-get install nodejs npm` when root with apt (as for Chromium),
  # else one clear line saying what to install.
  local dir="$BULK_ROOT/tests/js" want
  local stamp="$dir/node_modules/.bulk-stamp"
  want="$(sha256sum < "$dir/package-lock.json" | cut -c1-16)"
  if [ -f "$stamp" ] && grep -qx "$want" "$stamp"; then
    return 0
  fi
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      _bulk_say "no node/npm found: installing Debian's nodejs and npm with apt-get (one time)..."
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq >&2 || true
      if ! apt-get install -y -qq --no-install-recommends nodejs npm >&2; then
        _bulk_say "NODE_NOT_FOUND: 'apt-get install -y nodejs npm' failed; the tests need Node.js >= 18 and npm"
        exit 1
      fi
    else
      _bulk_say "NODE_NOT_FOUND: the tests lint JavaScript with ESLint: install Node.js >= 18 and npm ('sudo apt-get install -y nodejs npm')"
      exit 1
    fi
  fi
  _bulk_say "installing the tests' JavaScript linter (npm ci in tests/js, one time)..."
  if ! (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >&2); then
    _bulk_say "NPM_CI_FAILED: 'npm ci' in $dir failed (see above)"
    exit 1
  fi
  echo "$want" > "$stamp"
}

# Run as root, bulk starts Chromium as an unprivileged system user (BULK_CHROMIUM_USER,
# default bulk-chromium) so Chromium's sandbox works; make it once. Not root: nothing
# to do (Chromium runs as the invoking user).
_bulk_ensure_chromium_user() {
  local user="${BULK_CHROMIUM_USER:-bulk-chromium}"
  [ "$(id -u)" = 0 ] || return 0
  getent passwd "$user" >/dev/null 2>&1 && return 0
  if [ "$user" != bulk-chromium ]; then
    _bulk_say "warning: BULK_CHROMIUM_USER=$user does not exist; create it (useradd --system $user)"
    return 0
  fi
  if command -v useradd >/dev/null 2>&1; then
    _bulk_say "creating the system user bulk-chromium (Chromium runs as it when bulk is root)"
    useradd --system --user-group --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin --comment "bulk sandboxed Chromium" bulk-chromium >&2 \
      || _bulk_say "warning: could not create the user bulk-chromium; Chromium will run as nobody"
  else
    _bulk_say "warning: no useradd here: create a system user bulk-chromium, or Chromium runs as nobody"
  fi
}

# Fonts for what pages show: emoji (colour), Chinese/Japanese/Korean, and Latin fonts
# metric-compatible with Arial, Helvetica, Times and Courier (Liberation), so text is
# neither empty boxes nor reflowed. Debian's package names; checked once per venv.
BULK_FONT_PACKAGES="fonts-noto-color-emoji fonts-noto-cjk fonts-liberation2 fonts-dejavu-core"

bulk_ensure_fonts() {
  local stamp="$BULK_VENV/.bulk-fonts"
  [ -f "$stamp" ] && return 0
  if command -v fc-list >/dev/null 2>&1 \
    && fc-list | grep -q "Noto Color Emoji" && fc-list | grep -q "Noto Sans CJK"; then
    : > "$stamp"
    return 0
  fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    _bulk_say "installing fonts for emoji, CJK and Latin text with apt-get (one time)..."
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 || true
    # shellcheck disable=SC2086  # a list of package names
    if apt-get install -y -qq --no-install-recommends $BULK_FONT_PACKAGES >&2; then
      : > "$stamp"
      return 0
    fi
  fi
  # Not fatal: pages still render, only emoji and CJK text show as empty boxes.
  _bulk_say "FONTS_MISSING: emoji and CJK text will show as empty boxes; install $BULK_FONT_PACKAGES (Debian/Ubuntu names)"
  : > "$stamp"
}

bulk_ensure_chromium() {
  _bulk_ensure_chromium_user
  bulk_ensure_fonts
  if "$BULK_VENV/bin/python" -m bulk._config >/dev/null 2>&1; then
    return 0
  fi
  if [ -n "${BULK_CHROMIUM:-}" ]; then
    "$BULK_VENV/bin/python" -m bulk._config >/dev/null  # prints why BULK_CHROMIUM is unusable
    exit 1
  fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    _bulk_say "no Chromium found: installing Debian's chromium with apt-get (one time)..."
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 || true
    if apt-get install -y -qq --no-install-recommends chromium $BULK_FONT_PACKAGES >&2; then
      "$BULK_VENV/bin/python" -m bulk._config >/dev/null && return 0
    fi
    _bulk_say "CHROMIUM_NOT_FOUND: 'apt-get install -y chromium' failed; install Chromium yourself or set BULK_CHROMIUM=/path/to/chromium"
    exit 1
  fi
  _bulk_say "CHROMIUM_NOT_FOUND: install Chromium ('sudo apt-get install -y chromium', or 'playwright install chromium'), or set BULK_CHROMIUM=/path/to/chromium"
  exit 1
}
