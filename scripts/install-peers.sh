#!/usr/bin/env bash
# install-peers.sh — install the real FTP peers the ftpkit test suite talks to.
#
# Target: Debian 12 (bookworm), run as root. Idempotent: when everything is
# already present it only does file/command checks and exits in well under a
# second (no apt-get update, no downloads).
#
# Installed with apt (system-wide):
#   curl lftp tnftp ncftp inetutils-ftp vsftpd tshark tcpdump iptables
#   conntrack iproute2 openssl
# Unpacked (not installed) into <repo>/.peers/, because vsftpd, proftpd-core
# and pure-ftpd all declare "Conflicts: ftp-server" so apt keeps only one:
#   .peers/proftpd/usr/sbin/proftpd      (proftpd-core + proftpd-mod-crypto;
#                                         modules: .peers/proftpd/usr/lib/proftpd)
#   .peers/pure-ftpd/usr/sbin/pure-ftpd  (+ .peers/pure-ftpd/usr/bin/pure-pw)
#   .peers/bin/{proftpd,ftpasswd,pure-ftpd,pure-pw}  -> symlinks to the above
# Their shared-library dependencies are installed with apt.
# See scripts/PEERS-NOTES.md for how to run each server.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    echo "install-peers: not running as root; skipping FTP peer install"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg-query >/dev/null 2>&1; then
    echo "install-peers: no apt-get/dpkg (not Debian); skipping FTP peer install"
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH"

SCRIPT_DIR=$(cd "$(dirname "$0")" && pwd)
PEERS_DIR="$(cd "$SCRIPT_DIR/.." && pwd)/.peers"

# apt package -> command that proves it is installed
APT_TOOLS=(
    curl:curl
    lftp:lftp
    tnftp:tnftp
    ncftp:ncftp
    inetutils-ftp:inetutils-ftp
    vsftpd:vsftpd
    tshark:tshark
    tcpdump:tcpdump
    iptables:iptables
    conntrack:conntrack
    iproute2:ip
    openssl:openssl
)
# Runtime libraries of the unpacked proftpd-core (binary + all modules) and
# pure-ftpd (from their Depends; the ones usually missing on a slim image are
# libhiredis0.14 libmemcached11 libmemcachedutil2 libpcre2-posix3 for proftpd
# and libsodium23 for pure-ftpd).
LIB_PKGS=(
    libacl1 libcap2 libcrypt1 libidn2-0 libncursesw6 libpam0g libpcre2-8-0
    libpcre2-posix3 libssl3 libtinfo6 zlib1g libhiredis0.14 libmemcached11
    libmemcachedutil2 libsodium23
)

log() { echo "install-peers: $*"; }
die() { echo "install-peers: ERROR: $*" >&2; exit 1; }

# --- what is missing -------------------------------------------------------
missing=()
for entry in "${APT_TOOLS[@]}"; do
    pkg=${entry%%:*} cmd=${entry#*:}
    command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
done
# dpkg-query -W exits 1 when some package is unknown; we only read its output.
installed_libs=$(dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' "${LIB_PKGS[@]}" 2>/dev/null \
                 | awk '$1 == "ii" { sub(/:.*/, "", $2); print $2 }' || true)
for pkg in "${LIB_PKGS[@]}"; do
    grep -qxF "$pkg" <<<"$installed_libs" || missing+=("$pkg")
done

PROFTPD_BIN="$PEERS_DIR/proftpd/usr/sbin/proftpd"
PUREFTPD_BIN="$PEERS_DIR/pure-ftpd/usr/sbin/pure-ftpd"
PUREPW_BIN="$PEERS_DIR/pure-ftpd/usr/bin/pure-pw"
unpack=()
[ -x "$PROFTPD_BIN" ] && [ -f "$PEERS_DIR/proftpd/usr/lib/proftpd/mod_tls.so" ] \
    && [ -f "$PEERS_DIR/proftpd/.unpacked" ] || unpack+=(proftpd-core proftpd-mod-crypto)
[ -x "$PUREFTPD_BIN" ] && [ -x "$PUREPW_BIN" ] && [ -f "$PEERS_DIR/pure-ftpd/.unpacked" ] || unpack+=(pure-ftpd)

# --- apt -------------------------------------------------------------------
apt_updated=0
apt_update_once() {
    if [ "$apt_updated" -eq 0 ]; then
        log "apt-get update"
        apt-get update -qq
        apt_updated=1
    fi
}

if [ "${#missing[@]}" -gt 0 ]; then
    log "installing: ${missing[*]}"
    apt_update_once
    # Never let a package's postinst start a daemon (vsftpd would grab :21).
    policy_tmp=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        policy_tmp=1
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
    apt-get install -y -qq --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "${missing[@]}" >/dev/null
    if [ "$policy_tmp" -eq 1 ]; then
        rm -f /usr/sbin/policy-rc.d
        trap - EXIT
    fi
fi

# --- unpacked servers --------------------------------------------------------
if [ "${#unpack[@]}" -gt 0 ]; then
    log "unpacking into $PEERS_DIR: ${unpack[*]}"
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    chmod 755 "$tmp"
    # apt-get download runs as _apt; let it write here (avoids the warning).
    id _apt >/dev/null 2>&1 && chown _apt "$tmp"
    if ! (cd "$tmp" && apt-get download -qq "${unpack[@]}" 2>/dev/null); then
        apt_update_once
        (cd "$tmp" && apt-get download -qq "${unpack[@]}")
    fi
    mkdir -p "$PEERS_DIR"
    # proftpd-core and proftpd-mod-crypto (mod_tls/mod_sftp) share one tree.
    for pkg in "${unpack[@]}"; do
        case $pkg in
            proftpd-core)       dest="$PEERS_DIR/proftpd";   rm -rf "$dest" ;;
            proftpd-mod-crypto) dest="$PEERS_DIR/proftpd" ;;
            pure-ftpd)          dest="$PEERS_DIR/pure-ftpd"; rm -rf "$dest" ;;
        esac
        deb=$(ls "$tmp/${pkg}"_*.deb)
        mkdir -p "$dest"
        dpkg-deb -x "$deb" "$dest"
        dpkg-deb -f "$deb" Package Version >> "$dest/.unpacked"
    done
    rm -rf "$tmp"
    trap - EXIT
fi

# Anonymous FTP in all three servers maps to the system user "ftp" (vsftpd's
# postinst creates it with home /srv/ftp; pure-ftpd serves that home to
# anonymous). Recreate it if it went missing.
if ! getent passwd ftp >/dev/null; then
    log "creating system user ftp (home /srv/ftp)"
    getent group ftp >/dev/null || groupadd --system ftp
    useradd --system --gid ftp --home-dir /srv/ftp --no-create-home \
        --shell /usr/sbin/nologin --comment "ftp daemon" ftp
fi
if [ ! -d /srv/ftp ]; then
    install -d -o root -g ftp -m 755 /srv/ftp
fi

mkdir -p "$PEERS_DIR/bin"
for link in proftpd:../proftpd/usr/sbin/proftpd ftpasswd:../proftpd/usr/sbin/ftpasswd \
            pure-ftpd:../pure-ftpd/usr/sbin/pure-ftpd pure-pw:../pure-ftpd/usr/bin/pure-pw; do
    name=${link%%:*} target=${link#*:}
    [ "$(readlink "$PEERS_DIR/bin/$name" 2>/dev/null)" = "$target" ] || ln -sfn "$target" "$PEERS_DIR/bin/$name"
done

# --- verify ------------------------------------------------------------------
absent=()
for cmd in curl lftp tnftp ncftp inetutils-ftp ftp vsftpd tshark tcpdump iptables conntrack ip openssl; do
    command -v "$cmd" >/dev/null 2>&1 || absent+=("$cmd")
done
[ "${#absent[@]}" -eq 0 ] || die "missing commands after install: ${absent[*]}"
for f in "$PROFTPD_BIN" "$PUREFTPD_BIN" "$PUREPW_BIN"; do
    [ -x "$f" ] || die "missing unpacked binary: $f"
done
notfound=$(for f in "$PROFTPD_BIN" "$PEERS_DIR"/proftpd/usr/lib/proftpd/*.so "$PUREFTPD_BIN" "$PUREPW_BIN"; do
               ldd "$f" 2>&1 | sed -n "s|^[[:space:]]*\(.*not found.*\)|${f#"$PEERS_DIR"/}: \1|p"
           done)
[ -z "$notfound" ] || die "unresolved shared libraries (add their Debian packages to LIB_PKGS):
$notfound"

echo "install-peers: present: curl lftp tnftp ncftp inetutils-ftp vsftpd tshark tcpdump iptables conntrack ip openssl;" \
     "unpacked: proftpd $(awk '/^Version:/ {print $2; exit}' "$PEERS_DIR/proftpd/.unpacked") (+mod-crypto)," \
     "pure-ftpd $(awk '/^Version:/ {print $2; exit}' "$PEERS_DIR/pure-ftpd/.unpacked") in $PEERS_DIR"
