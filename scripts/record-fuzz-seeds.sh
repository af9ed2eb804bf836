#!/bin/bash
# Record the real dialogues of the fuzz seed corpus (tests/fuzz/captures/): real clients (tnftp, inetutils-ftp,
# ncftp, lftp, curl, Python's ftplib) against `ftpkit serve`, captured by tcpdump, as pcap, pcapng and gzip. Runs
# in a network namespace of its own (unshare -n: only its own loopback, so nobody else's traffic is captured).
# Needs root and the peers (./run test installs them). The files are small: control connections in full, data
# connections only their SYN, FIN and RST segments.
#   scripts/record-fuzz-seeds.sh [PORT]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${FTPKIT_SEEDS_NETNS:-}" ]; then
  exec env FTPKIT_SEEDS_NETNS=1 unshare --net "$0" "$@"
fi
ip link set lo up
port=${1:-2197}
out=tests/fuzz/captures
mkdir -p "$out"
work=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

mkdir -p "$work/root/sub" "$work/home"
printf 'hello\nworld\n' > "$work/root/hello.txt"
printf 'inner\n' > "$work/root/sub/inner.txt"
printf 'こんにちは\n' > "$work/root/日本語.txt"
head -c 300 /dev/urandom > "$work/up.bin"
truncate -s 8G "$work/root/big.bin"   # sparse: what an interrupted download aborts
python=${PYTHON:-.venv/bin/python}
PYTHONPATH=src "$python" -m ftpkit serve "$work/root" --port "$port" --passive-ports 42100-42120 \
    --user alice:secret --log-level info > "$work/serve.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
export HOME="$work/home" LANG=C.UTF-8 LC_ALL=C.UTF-8

# control connections whole; data connections only their SYN, FIN and RST segments
filter="tcp port $port or (tcp portrange 42100-42120 and tcp[tcpflags] & (tcp-syn|tcp-fin|tcp-rst) != 0)"
record() {  # record NAME COMMAND...: capture while COMMAND runs
  local name=$1; shift
  tcpdump -i lo -U --immediate-mode -w "$work/$name.pcap" "$filter" > "$work/tcpdump.log" 2>&1 & local tpid=$!
  for _ in $(seq 50); do grep -q "listening on" "$work/tcpdump.log" && break; sleep 0.1; done
  (cd "$work" && "$@") > "$work/$name.out" 2>&1 || echo "$name: exit $?" >&2
  sleep 0.5; kill -INT "$tpid"; wait "$tpid" || true
  cp "$work/$name.pcap" "$out/$name.pcap"
}
record tnftp-passive sh -c "$(printf '%q ' tnftp -n -v 127.0.0.1 "$port") <<'EOF'
user alice secret
passive on
binary
ls
get hello.txt got.txt
put up.bin up.bin
mkdir newdir
rename up.bin newdir/moved.bin
size newdir/moved.bin
modtime hello.txt
delete newdir/moved.bin
rmdir newdir
quote STAT
quote SITE HELP
quit
EOF"
record inetutils-active sh -c "$(printf '%q ' inetutils-ftp -n -v -A 127.0.0.1 "$port") <<'EOF'
user anonymous guest@example.com
ascii
dir
get hello.txt got.txt
cd sub
nlist
quit
EOF"
record lftp lftp -u alice,secret -p "$port" -e "set ftp:passive-mode on; ls; get hello.txt -o got.txt; put up.bin -o lftp.bin; cls -l; rm lftp.bin; quit" 127.0.0.1
record curl-active curl -sS --ftp-port 127.0.0.1 --user alice:secret "ftp://127.0.0.1:$port/sub/" -o /dev/null \
    --next --user alice:secret -T up.bin "ftp://127.0.0.1:$port/curl.bin" \
    --next --user alice:secret -Q "-DELE curl.bin" "ftp://127.0.0.1:$port/hello.txt" -o /dev/null
record ncftp ncftpls -P "$port" -u alice -p secret -l "ftp://127.0.0.1/"
record ftplib "$python" -c "
import ftplib
f = ftplib.FTP(); f.connect('127.0.0.1', $port)
try: f.login('alice', 'wrong')
except ftplib.error_perm: pass
f.login('alice', 'secret')
f.sendcmd('OPTS UTF8 ON'); f.set_pasv(False); f.retrlines('MLSD'); f.set_pasv(True)
f.retrbinary('RETR 日本語.txt', lambda b: None)
for bad in ('XYZZY', 'RETR', 'CWD ../../..', 'PORT 10,0,0,1,200,1', 'REST x', 'MLST sub', 'STAT sub'):
    try: f.sendcmd(bad)
    except ftplib.Error: pass
f.quit()"
# an interrupted download: tnftp's abort (IAC IP, then IAC DM as TCP urgent data, then ABOR)
abort_download() {
  mkfifo abort.fifo
  tnftp -n -v 127.0.0.1 "$port" < abort.fifo & local cpid=$!
  exec 3> abort.fifo
  printf 'user alice secret\nbinary\nget big.bin /dev/null\n' >&3
  sleep 1.5; kill -INT "$cpid"; sleep 1; printf 'quit\n' >&3; exec 3>&-
  wait "$cpid" || true
}
record tnftp-abort abort_download

for f in tnftp-passive lftp; do
  editcap -F pcapng "$out/$f.pcap" "$out/$f.pcapng"
done
gzip -9 -c "$out/ncftp.pcap" > "$out/ncftp.pcap.gz"
for f in "$work"/*.out; do echo "== $(basename "$f"): $(tail -n 2 "$f" | tr '\n' ' ')"; done
ls -l "$out"
