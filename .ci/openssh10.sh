#!/usr/bin/env bash
# OpenSSH 10.0 for the tests, beside the system's OpenSSH (never installed over it):
# openssh-client and openssh-server from Debian bookworm-backports, fetched with apt-get download
# and unpacked with dpkg -x into .cache/openssh-10 (harness/openssh.py finds them there).
#
# The backports source is derived from the machine's own apt sources (their mirror URI and
# keyring), and used only for this download through a separate apt configuration: the system's
# sources, lists and packages are left as they are.  Idempotent: nothing is done once the cache
# holds a working OpenSSH 10.0.
#
# Without backports (no network, no bookworm source) it warns and exits 0, unless
# RFWD_REQUIRE_OPENSSH is set (CI): then it fails, since the suite must run against 10.0.
set -euo pipefail
cd "$(dirname "$0")/.."

# The issue names 1:10.0p1-7~bpo12+1; a later 10.0 revision of the backport is as good.
UPSTREAM="10.0"
SUITE="bookworm-backports"
BASE_SUITE="bookworm"
PACKAGES=(openssh-client openssh-server)
CACHE="${RFWD_OPENSSH10_CACHE:-$PWD/.cache/openssh-10}"
STAMP="$CACHE/.unpacked"
APT_ETC="${RFWD_APT_ETC:-/etc/apt}" # the sources to derive backports from

fail() {
  echo "openssh10.sh: $*" >&2
  if [ -n "${RFWD_REQUIRE_OPENSSH:-}" ]; then
    echo "openssh10.sh: RFWD_REQUIRE_OPENSSH is set: the suite must run against OpenSSH 10.0" >&2
    exit 1
  fi
  echo "openssh10.sh: the OpenSSH 10.0 tests will be skipped" >&2
  exit 0
}

works() {
  # The unpacked ssh runs with the system's libraries and reports 10.0.
  [ -f "$STAMP" ] &&
    [ -x "$CACHE/usr/bin/ssh" ] && [ -x "$CACHE/usr/sbin/sshd" ] &&
    [ -x "$CACHE/usr/lib/openssh/sshd-session" ] && [ -x "$CACHE/usr/lib/openssh/sshd-auth" ] &&
    "$CACHE/usr/bin/ssh" -V 2>&1 | grep -q "^OpenSSH_${UPSTREAM}p"
}

if works; then
  echo "openssh10.sh: OpenSSH 10.0 already in $CACHE"
  exit 0
fi

# -- the mirror URI and keyring of the machine's bookworm source ------------------------------
uri=""
signed_by=""
shopt -s nullglob
for file in "$APT_ETC"/sources.list.d/*.sources; do
  # deb822 stanzas, separated by blank lines; the first "deb" stanza listing suite bookworm.
  found="$(awk -v suite="$BASE_SUITE" '
    function flush() {
      if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " suite " ") && uris != "" && enabled != "no") {
        split(uris, u, " "); print u[1] "\t" signed; exit
      }
      types = ""; suites = ""; uris = ""; signed = ""; enabled = ""
    }
    /^[ \t]*#/ { next }
    /^[ \t]*$/ { flush(); next }
    /^[ \t]/ {
      # A continuation line adds to the field above it.
      line = $0; sub(/^[ \t]+/, "", line)
      if (key == "suites") suites = suites " " line
      else if (key == "uris") uris = uris " " line
      else if (key == "types") types = types " " line
      next
    }
    {
      key = tolower($1); sub(/:$/, "", key); $1 = ""; sub(/^[ \t]+/, "")
      if (key == "types") types = $0
      else if (key == "suites") suites = $0
      else if (key == "uris") uris = $0
      else if (key == "signed-by") signed = $0
      else if (key == "enabled") enabled = tolower($0)
    }
    END { flush() }
  ' "$file")"
  if [ -n "$found" ]; then
    uri="${found%%$'\t'*}"
    signed_by="${found#*$'\t'}"
    break
  fi
done
if [ -z "$uri" ]; then
  for file in "$APT_ETC"/sources.list "$APT_ETC"/sources.list.d/*.list; do
    [ -f "$file" ] || continue
    # One-line form: deb [options] URI SUITE COMPONENT...
    found="$(awk -v suite="$BASE_SUITE" '
      $1 == "deb" {
        i = 2; signed = ""
        if ($i ~ /^\[/) {
          while (i <= NF) {
            if ($i ~ /^\[?signed-by=/) { s = $i; sub(/^\[?signed-by=/, "", s); sub(/\]$/, "", s); signed = s }
            if ($i ~ /\]$/) { i++; break }
            i++
          }
        }
        if ($(i + 1) == suite) { print $i "\t" signed; exit }
      }
    ' "$file")"
    if [ -n "$found" ]; then
      uri="${found%%$'\t'*}"
      signed_by="${found#*$'\t'}"
      break
    fi
  done
fi
[ -n "$uri" ] || fail "no apt source for Debian $BASE_SUITE in $APT_ETC to derive $SUITE from"

# -- a private apt configuration: only the backports source, its own lists and cache ----------
apt_dir="$CACHE.apt"
rm -rf "$apt_dir"
trap 'rm -rf "$apt_dir"' EXIT
mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/parts" "$apt_dir/debs"
{
  echo "Types: deb"
  echo "URIs: $uri"
  echo "Suites: $SUITE"
  echo "Components: main"
  [ -z "$signed_by" ] || echo "Signed-By: $signed_by"
} >"$apt_dir/parts/backports.sources"
# apt's download sandbox user must be able to write where it downloads.
if [ "$(id -u)" = 0 ] && id _apt >/dev/null 2>&1; then
  chown -R _apt "$apt_dir/lists" "$apt_dir/debs"
fi
apt_options=(
  -o "Dir::Etc::SourceList=/dev/null"
  -o "Dir::Etc::SourceParts=$apt_dir/parts"
  -o "Dir::State::Lists=$apt_dir/lists"
  -o "Dir::Cache=$apt_dir/cache"
  -o "Debug::NoLocking=1"
  -o "APT::Get::List-Cleanup=0"
)

echo "openssh10.sh: fetching OpenSSH $UPSTREAM from $SUITE ($uri)"
apt-get "${apt_options[@]}" -qq update </dev/null ||
  fail "apt-get update of $SUITE from $uri failed"
(cd "$apt_dir/debs" &&
  apt-get "${apt_options[@]}" -qq download "${PACKAGES[@]/%//$SUITE}" </dev/null) ||
  fail "apt-get download of ${PACKAGES[*]} from $SUITE failed"

# -- unpack into a fresh tree, put it in place, then check it runs -----------------------------
if [ -e "$CACHE" ] && [ ! -f "$STAMP" ] && [ -n "$(ls -A "$CACHE")" ]; then
  fail "$CACHE holds files this script did not unpack: move them away"
fi
fresh="$CACHE.new"
rm -rf "$fresh"
mkdir -p "$fresh"
versions=()
for deb in "$apt_dir"/debs/*.deb; do
  dpkg -x "$deb" "$fresh"
  versions+=("$(dpkg-deb -f "$deb" Package Version | paste -sd' ')")
done
printf '%s\n' "${versions[@]}" >"$fresh/.unpacked"
rm -rf "$CACHE"
mv "$fresh" "$CACHE"
if ! works; then
  "$CACHE/usr/bin/ssh" -V || true
  rm -f "$STAMP"
  fail "the OpenSSH unpacked in $CACHE does not run as version $UPSTREAM"
fi
echo "openssh10.sh: $("$CACHE/usr/bin/ssh" -V 2>&1) unpacked in $CACHE"
