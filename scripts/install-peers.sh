#!/usr/bin/env bash
# install-peers.sh — install the real FTP peers the ftpkit test suite talks to.
#
# Target: Debian 12 (bookworm) and 13 (trixie), run as root. Idempotent: when
# everything is already present it only does file/command/dpkg-query checks and
# exits in well under a second (no apt-get update, no downloads).
#
# Installed with apt (system-wide):
#   curl lftp tnftp ncftp inetutils-ftp vsftpd tshark tcpdump tcpreplay iptables
#   conntrack iproute2 openssl whois (mkpasswd) prometheus (for promtool, which
#   checks the server's /metrics exposition; its daemon is not used) haproxy
#   postgresql (the release's server: 15 on bookworm, 17 on trixie; the
#   tests run its /usr/lib/postgresql/N/bin/initdb and pg_ctl on a throwaway
#   cluster of their own: no main cluster is created, no daemon started)
# Unpacked (not installed) into <repo>/.peers/, because vsftpd, proftpd-core
# and pure-ftpd all declare "Conflicts: ftp-server" so apt keeps only one:
#   .peers/proftpd/usr/sbin/proftpd      (proftpd-core + proftpd-mod-crypto;
#                                         modules: .peers/proftpd/usr/lib/proftpd)
#   .peers/pure-ftpd/usr/sbin/pure-ftpd  (+ .peers/pure-ftpd/usr/bin/pure-pw)
#   .peers/bin/{proftpd,ftpasswd,pure-ftpd,pure-pw}  -> symlinks to the above
# Their shared libraries are derived, not named: the Depends/Pre-Depends of the
# downloaded .debs, keeping for each entry the first alternative that is a
# shared-library package (Section libs; a virtual name resolves to its provider)
# and dropping the rest (maintainer-script helpers such as adduser or ucf, the
# inetd pure-ftpd's init script wants, pure-ftpd-common's config wrapper, the
# packages unpacked here). The kept list is written to .peers/<tree>/.depends
# and installed with apt (never if apt would remove a package, e.g. vsftpd);
# `ldd` over every unpacked binary and module is the final proof.
# See scripts/PEERS-NOTES.md for how to run each server.
set -euo pipefail

log() { echo "install-peers: $*"; }
die() { echo "install-peers: ERROR: $*" >&2; exit 1; }

# tree -> the packages unpacked into it
declare -A TREE_PKGS=([proftpd]="proftpd-core proftpd-mod-crypto" [pure-ftpd]="pure-ftpd")

# sections NAME...: "PACKAGE SECTION" for each NAME that has a candidate version (a virtual or unknown name prints
# nothing). One apt-cache call for all names: each call reads the package lists anew (~1 s).
sections() {
    apt-cache show --no-all-versions "$@" 2>/dev/null | awk '/^Package: / { p = $2 } /^Section: / { print p, $2 }'
}
# providers NAME...: "VIRTUAL PROVIDER" for each package that provides one of the virtual NAMEs.
providers() {
    apt-cache showpkg "$@" 2>/dev/null \
        | awk '/^Package: / { v = $2; r = 0; next } /^Reverse Provides:/ { r = 1; next } r && NF { print v, $1 }'
}
is_library_section() {
    case $1 in libs | */libs | oldlibs | */oldlibs) return 0 ;; *) return 1 ;; esac
}

# derive_depends DEB...: print the library packages the unpacked DEBs load (one a line, after two comment lines
# naming the DEBs and what was dropped). For each Depends/Pre-Depends entry the first alternative that is a
# shared-library package wins (a virtual name counts through its first library provider); an entry naming a
# package unpacked here is satisfied already; an entry with no library among its alternatives is dropped.
derive_depends() {
    local own=" ${TREE_PKGS[proftpd]} ${TREE_PKGS[pure-ftpd]} "
    local groups=() names=() virtuals=() provider_names=() kept=() dropped=()
    local group alt lib pkg sec virtual provider
    local -A section=() provided_by=()
    while IFS= read -r group; do
        group=$(sed -e 's/([^)]*)//g' -e 's/:[a-z0-9-]*//g' -e 's/[[:space:]]//g' <<<"$group")
        [ -n "$group" ] && groups+=("$group")
    done < <(for deb in "$@"; do dpkg-deb -f "$deb" Pre-Depends Depends | sed 's/^[A-Za-z-]*://'; done | tr ',' '\n')
    for group in "${groups[@]}"; do
        for alt in ${group//|/ }; do [[ $own == *" $alt "* ]] || names+=("$alt"); done
    done
    while read -r pkg sec; do section[$pkg]=$sec; done < <(sections "${names[@]}")
    for alt in "${names[@]}"; do [ -n "${section[$alt]:-}" ] || virtuals+=("$alt"); done
    if [ "${#virtuals[@]}" -gt 0 ]; then
        while read -r virtual provider; do
            provided_by[$virtual]="${provided_by[$virtual]:-} $provider"
            provider_names+=("$provider")
        done < <(providers "${virtuals[@]}")
        if [ "${#provider_names[@]}" -gt 0 ]; then
            while read -r pkg sec; do section[$pkg]=$sec; done < <(sections "${provider_names[@]}")
        fi
    fi
    for group in "${groups[@]}"; do
        lib=""
        for alt in ${group//|/ }; do
            if [[ $own == *" $alt "* ]]; then lib="-"; break; fi
            if is_library_section "${section[$alt]:-}"; then lib=$alt; break; fi
            for provider in ${provided_by[$alt]:-}; do
                if is_library_section "${section[$provider]:-}"; then lib=$provider; break; fi
            done
            [ -z "$lib" ] || break
        done
        case $lib in
            -) ;;
            "") dropped+=("$group") ;;
            *) [[ " ${kept[*]} " == *" $lib "* ]] || kept+=("$lib") ;;
        esac
    done
    [ "${#kept[@]}" -gt 0 ] || die "no library package derived from the Depends of: $*"
    echo "# derived from the Depends of:$(for deb in "$@"; do printf ' %s' "${deb##*/}"; done)"
    echo "# dropped (no shared library among the alternatives): ${dropped[*]:-none}"
    printf '%s\n' "${kept[@]}"
}

# `install-peers.sh --derive-depends DEB...` only prints what derive_depends finds (any user; needs apt's lists).
if [ "${1:-}" = --derive-depends ]; then
    shift
    [ "$#" -gt 0 ] || die "--derive-depends needs .deb files"
    derive_depends "$@"
    exit 0
fi

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
    tcpreplay:tcpreplay
    iptables:iptables
    conntrack:conntrack
    iproute2:ip
    openssl:openssl
    whois:mkpasswd
    prometheus:promtool
    haproxy:haproxy
)

PROFTPD_BIN="$PEERS_DIR/proftpd/usr/sbin/proftpd"
PUREFTPD_BIN="$PEERS_DIR/pure-ftpd/usr/sbin/pure-ftpd"
PUREPW_BIN="$PEERS_DIR/pure-ftpd/usr/bin/pure-pw"

# --- what is missing -------------------------------------------------------
unpack_trees=()
[ -x "$PROFTPD_BIN" ] && [ -f "$PEERS_DIR/proftpd/usr/lib/proftpd/mod_tls.so" ] \
    && [ -f "$PEERS_DIR/proftpd/.unpacked" ] && [ -f "$PEERS_DIR/proftpd/.depends" ] || unpack_trees+=(proftpd)
[ -x "$PUREFTPD_BIN" ] && [ -x "$PUREPW_BIN" ] && [ -f "$PEERS_DIR/pure-ftpd/.unpacked" ] \
    && [ -f "$PEERS_DIR/pure-ftpd/.depends" ] || unpack_trees+=(pure-ftpd)

# --- apt -------------------------------------------------------------------
apt_updated=0
apt_update_once() {
    if [ "$apt_updated" -eq 0 ]; then
        log "apt-get update"
        apt-get update -qq
        apt_updated=1
    fi
}

# --- unpacked servers --------------------------------------------------------
if [ "${#unpack_trees[@]}" -gt 0 ]; then
    unpack=()
    for tree in "${unpack_trees[@]}"; do read -ra pkgs <<<"${TREE_PKGS[$tree]}"; unpack+=("${pkgs[@]}"); done
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
    for tree in "${unpack_trees[@]}"; do
        dest="$PEERS_DIR/$tree" debs=()
        rm -rf "$dest"
        mkdir -p "$dest"
        for pkg in ${TREE_PKGS[$tree]}; do
            deb=$(ls "$tmp/${pkg}"_*.deb)
            dpkg-deb -x "$deb" "$dest"
            dpkg-deb -f "$deb" Package Version >> "$dest/.unpacked"
            debs+=("$deb")
        done
        derive_depends "${debs[@]}" > "$tmp/$tree.depends"  # written last: its presence means a complete tree
        mv "$tmp/$tree.depends" "$dest/.depends"
        log "$tree needs: $(grep -v '^#' "$dest/.depends" | tr '\n' ' ')"
    done
    rm -rf "$tmp"
    trap - EXIT
fi

missing=()
for entry in "${APT_TOOLS[@]}"; do
    pkg=${entry%%:*} cmd=${entry#*:}
    command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
done
mapfile -t lib_pkgs < <(cat "$PEERS_DIR/proftpd/.depends" "$PEERS_DIR/pure-ftpd/.depends" | grep -v '^#' | sort -u)
# dpkg-query -W exits 1 when some package is unknown; we only read its output.
installed_libs=$(dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' "${lib_pkgs[@]}" 2>/dev/null \
                 | awk '$1 == "ii" { sub(/:.*/, "", $2); print $2 }' || true)
for pkg in "${lib_pkgs[@]}"; do
    grep -qxF "$pkg" <<<"$installed_libs" || missing+=("$pkg")
done
# The PostgreSQL server: Debian's `postgresql` depends on the release's version (postgresql-15, -17).
pg_bin() { { compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" || true; } | sort -V | tail -n 1 | xargs -r dirname; }
[ -n "$(pg_bin)" ] || missing+=(postgresql)

if [ "${#missing[@]}" -gt 0 ]; then
    log "installing: ${missing[*]}"
    apt_update_once
    # A derived dependency must never displace an installed package (vsftpd and the unpacked servers all
    # "Conflicts: ftp-server"): ask apt what it would do first.
    removals=$(apt-get install -s -qq --no-install-recommends "${missing[@]}" | sed -n 's/^Remv \([^ ]*\).*/\1/p' \
               | tr '\n' ' ')
    [ -z "$removals" ] || die "installing ${missing[*]} would remove: $removals"
    # Never let a package's postinst start a daemon (vsftpd would grab :21).
    policy_tmp=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        policy_tmp=1
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
    # postgresql-common would create (and try to start) a "main" cluster; the tests make their own.
    mkdir -p /etc/postgresql-common/createcluster.d
    echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/ftpkit-no-main-cluster.conf
    apt-get install -y -qq --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "${missing[@]}" >/dev/null
    if [ "$policy_tmp" -eq 1 ]; then
        rm -f /usr/sbin/policy-rc.d
        trap - EXIT
    fi
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
for cmd in curl lftp tnftp ncftp inetutils-ftp ftp vsftpd tshark tcpdump iptables conntrack ip openssl mkpasswd \
           promtool haproxy; do
    command -v "$cmd" >/dev/null 2>&1 || absent+=("$cmd")
done
pgdir=$(pg_bin)
for tool in initdb pg_ctl postgres psql; do
    [ -n "$pgdir" ] && [ -x "$pgdir/$tool" ] || absent+=("PostgreSQL $tool")
done
[ "${#absent[@]}" -eq 0 ] || die "missing commands after install: ${absent[*]}"
for f in "$PROFTPD_BIN" "$PUREFTPD_BIN" "$PUREPW_BIN"; do
    [ -x "$f" ] || die "missing unpacked binary: $f"
done
# One ldd for all files (a header line "FILE:" before each file's libraries): a third of the time of one each.
notfound=$(ldd "$PROFTPD_BIN" "$PEERS_DIR"/proftpd/usr/lib/proftpd/*.so "$PUREFTPD_BIN" "$PUREPW_BIN" 2>&1 \
           | awk -v base="$PEERS_DIR/" '
                 /^[^[:space:]].*:$/ { f = substr($0, 1, length($0) - 1)
                                       if (index(f, base) == 1) f = substr(f, length(base) + 1); next }
                 /not found/ { sub(/^[[:space:]]+/, ""); print f ": " $0 }' || true)
[ -z "$notfound" ] || die "unresolved shared libraries (not among the packages derived in .peers/*/.depends):
$notfound"

echo "install-peers: present: curl lftp tnftp ncftp inetutils-ftp vsftpd tshark tcpdump iptables conntrack ip openssl mkpasswd" \
     "promtool haproxy, PostgreSQL server in $pgdir;" \
     "unpacked: proftpd $(awk '/^Version:/ {print $2; exit}' "$PEERS_DIR/proftpd/.unpacked") (+mod-crypto)," \
     "pure-ftpd $(awk '/^Version:/ {print $2; exit}' "$PEERS_DIR/pure-ftpd/.unpacked") in $PEERS_DIR"
