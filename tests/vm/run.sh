#!/usr/bin/env bash
# Two small qemu VMs joined by a qemu network link, each running a tapnet
# scenario; see tests/vm/README.md.
#
#   tests/vm/run.sh [SCENARIO...]     as root; default: link
#   tests/vm/run.sh all               every tests/vm/scenarios/*.sh
#
# Exit status: 0 every scenario passed (or some were skipped), 1 a scenario
# failed or timed out, 2 usage or setup error, 77 every scenario was skipped.
#
# Writes only under target/vm/ of this repository (downloads, the unpacked
# kernel, the initramfs, the 9p share, console logs) and creates nothing in
# /tmp. Every wait is bounded; the VMs are killed on every exit path.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
VMDIR=${TAPNET_VM_DIR:-$REPO/target/vm}

# Settings (environment).
IP_A=${TAPNET_VM_IP_A:-192.168.100.1}
IP_B=${TAPNET_VM_IP_B:-192.168.100.2}
PREFIX=${TAPNET_VM_PREFIX:-24}
MEM=${TAPNET_VM_MEM:-512}
SMP=${TAPNET_VM_SMP:-1}
ACCEL_WANT=${TAPNET_VM_ACCEL:-auto}          # auto, kvm or tcg
TIMEOUT=${TAPNET_VM_TIMEOUT:-300}            # per scenario, launch to both verdicts
STEP_TIMEOUT=${TAPNET_VM_STEP_TIMEOUT:-60}   # one waiting step inside a guest
PAYLOAD_KB=${TAPNET_VM_PAYLOAD_KB:-1024}
MODULES=${TAPNET_VM_MODULES:-virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net netfs fscache 9pnet 9pnet_virtio 9p tun veth}
KERNEL_PKG=${TAPNET_VM_KERNEL_PKG:-}          # e.g. linux-image-6.1.0-47-amd64-unsigned
TAPNET_BIN=${TAPNET_BIN:-}                    # a prebuilt tapnet to use instead of building
MAC_A=52:54:00:7a:00:0a
MAC_B=52:54:00:7a:00:0b

T_START=$EPOCHREALTIME

say() { printf 'tests/vm: %s\n' "$*"; }
die() {
    printf 'tests/vm: error: %s\n' "$*" >&2
    exit 2
}
elapsed() { # seconds since $1 (an EPOCHREALTIME), one decimal
    awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'
}

usage() {
    sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    echo "scenarios: $(scenario_names)"
}

scenario_names() {
    local f out=()
    for f in "$HERE"/scenarios/*.sh; do
        f=${f##*/}
        [ "$f" = lib.sh ] || out+=("${f%.sh}")
    done
    echo "${out[*]}"
}

# --- VMs and cleanup --------------------------------------------------------

QEMU_PIDS=()
cleanup() {
    local pid
    for pid in "${QEMU_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${QEMU_PIDS[@]}"; do
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    QEMU_PIDS=()
}
trap cleanup EXIT
trap 'echo; say "interrupted"; exit 130' INT
trap 'say "terminated"; exit 143' TERM HUP

# --- host packages ----------------------------------------------------------

is_static() { ! ldd "$1" >/dev/null 2>&1; }

ensure_packages() {
    local need=()
    command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
    if [ ! -x /bin/busybox ] || ! is_static /bin/busybox; then need+=(busybox-static); fi
    command -v xz >/dev/null || need+=(xz-utils)
    command -v flock >/dev/null || need+=(util-linux)
    command -v gzip >/dev/null || need+=(gzip)
    [ ${#need[@]} -eq 0 ] && return 0
    command -v apt-get >/dev/null || die "missing ${need[*]} and no apt-get to install them"
    say "installing ${need[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -qq --no-install-recommends "${need[@]}" >"$VMDIR/apt.log" 2>&1; then
        apt-get update -qq >>"$VMDIR/apt.log" 2>&1 || true
        apt-get install -y -qq --no-install-recommends "${need[@]}" >>"$VMDIR/apt.log" 2>&1 ||
            die "apt-get install ${need[*]} failed, see $VMDIR/apt.log"
    fi
}

# --- kernel: apt-get download + dpkg -x, cached under target/vm/ ------------

# The cached kernel package, else the newest linux-image-6.1.0-N-amd64-unsigned
# that apt-get download can fetch.
kernel_deb() {
    local deb cands c
    mkdir -p "$VMDIR/dl"
    if [ -n "$KERNEL_PKG" ]; then
        deb=$(ls -1 "$VMDIR/dl/${KERNEL_PKG}"_*.deb 2>/dev/null | tail -n 1 || true)
        cands=$KERNEL_PKG
    else
        deb=$(ls -1 "$VMDIR"/dl/linux-image-*-amd64-unsigned_*.deb 2>/dev/null | sort -V | tail -n 1 || true)
        cands=$(apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64-unsigned$' 2>/dev/null |
            awk '{print $1}' | sort -rV || true)
        if [ -z "$deb" ] && [ -z "$cands" ]; then
            apt-get update -qq >"$VMDIR/apt.log" 2>&1 || true
            cands=$(apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64-unsigned$' |
                awk '{print $1}' | sort -rV)
        fi
    fi
    if [ -n "$deb" ]; then
        echo "$deb"
        return
    fi
    [ -n "$cands" ] || die "no linux-image-6.1.0-*-amd64-unsigned package known to apt"
    for c in $cands; do
        say "downloading $c with apt-get download" >&2
        if (cd "$VMDIR/dl" && apt-get download -q -o APT::Sandbox::User=root "$c") >>"$VMDIR/apt.log" 2>&1; then
            ls -1 "$VMDIR/dl/${c}"_*.deb | tail -n 1
            return
        fi
    done
    die "apt-get download failed for every candidate kernel package, see $VMDIR/apt.log"
}

# Sets KVER and KDIR; KDIR holds vmlinux, config and modules/.
ensure_kernel() {
    local deb tmp vmlinuz off
    deb=$(kernel_deb)
    KVER=$(dpkg-deb -f "$deb" Package | sed -e 's/^linux-image-//' -e 's/-unsigned$//')
    KDIR=$VMDIR/kernel/$KVER
    [ -s "$KDIR/vmlinux" ] && [ -d "$KDIR/modules" ] && return 0
    say "unpacking $(basename "$deb")"
    rm -rf "$KDIR" "$KDIR.tmp"
    mkdir -p "$KDIR.tmp"
    tmp=$KDIR.tmp
    dpkg -x "$deb" "$tmp/x"
    vmlinuz=$(ls -1 "$tmp"/x/boot/vmlinuz-* | sed -n 1p)
    # The uncompressed kernel boots faster under TCG (no decompression in the
    # guest); qemu loads it as an ELF through its PVH entry point. It is the
    # xz stream inside the bzImage.
    off=$(LC_ALL=C grep -obUaP '\xFD7zXZ\x00' "$vmlinuz" | LC_ALL=C cut -d: -f1 | sed -n 1p || true)
    [ -n "$off" ] || die "no xz stream in $vmlinuz"
    tail -c +$((off + 1)) "$vmlinuz" | xz -dc --single-stream >"$tmp/vmlinux" 2>/dev/null || true
    [ "$(head -c 4 "$tmp/vmlinux" | od -An -c | tr -d ' ')" = '177ELF' ] ||
        die "could not extract vmlinux from $vmlinuz"
    cp "$tmp"/x/boot/config-* "$tmp/config"
    mv "$tmp"/x/lib/modules/* "$tmp/modules"
    rm -rf "$tmp/x"
    mv "$tmp" "$KDIR"
}

# --- initramfs ----------------------------------------------------------------

# Module file (relative to modules/kernel) for a module name, "" if built in.
declare -A MODFILE=()
index_modules() {
    local f n
    while IFS= read -r f; do
        n=${f##*/}
        n=${n%.ko}
        MODFILE[${n//-/_}]=${f#"$KDIR/modules/"}
    done < <(find "$KDIR/modules/kernel" -name '*.ko')
}

MOD_ORDER=()
declare -A MOD_SEEN=()
add_module() { # NAME: its dependencies first, then itself
    local m=${1//-/_} f deps d
    [ -n "${MOD_SEEN[$m]:-}" ] && return 0
    MOD_SEEN[$m]=1
    f=${MODFILE[$m]:-}
    if [ -z "$f" ]; then
        grep -q "/${m}.ko\$" "$KDIR/modules/modules.builtin" 2>/dev/null && return 0
        grep -q "/${1}.ko\$" "$KDIR/modules/modules.builtin" 2>/dev/null && return 0
        die "kernel module $1 is neither in $KDIR/modules nor built in"
    fi
    deps=$(tr '\0' '\n' <"$KDIR/modules/$f" | sed -n 's/^depends=//p' | tr ',' ' ')
    for d in $deps; do add_module "$d"; done
    MOD_ORDER+=("$f")
}

# Sets INITRD.
ensure_initramfs() {
    local key m root l
    key=$( {
        echo "$KVER $MODULES"
        cat "$HERE/guest/init" "$HERE/run.sh"
        /bin/busybox 2>&1 | sed -n 1p
    } | md5sum | cut -c1-12)
    INITRD=$VMDIR/initramfs-$KVER-$key.cpio.gz
    [ -s "$INITRD" ] && return 0
    say "building the initramfs"
    index_modules
    for m in $MODULES; do add_module "$m"; done
    root=$VMDIR/initramfs.tmp
    rm -rf "$root"
    mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc/tapnet-vm,lib/modules,proc,sys,dev,run,tmp,share,root,var}
    cp /bin/busybox "$root/bin/busybox"
    # Every applet as a symlink, at the path busybox gives for it.
    for l in $(/bin/busybox --list-full); do
        [ -e "$root/$l" ] || ln -s /bin/busybox "$root/$l"
    done
    for m in "${MOD_ORDER[@]}"; do
        cp "$KDIR/modules/$m" "$root/lib/modules/"
        echo "${m##*/}" >>"$root/etc/tapnet-vm/modules"
    done
    install -m 0755 "$HERE/guest/init" "$root/init"
    printf '127.0.0.1\tlocalhost\n' >"$root/etc/hosts"
    printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
    printf 'root:x:0:\n' >"$root/etc/group"
    (cd "$root" && find . | LC_ALL=C sort | /bin/busybox cpio -o -H newc 2>/dev/null | gzip -1) >"$INITRD.tmp"
    mv "$INITRD.tmp" "$INITRD"
    rm -rf "$root"
    # Older initramfs images of this kernel are stale now.
    for m in "$VMDIR"/initramfs-"$KVER"-*.cpio.gz; do
        [ "$m" = "$INITRD" ] || rm -f "$m"
    done
}

# --- tapnet and the 9p share ----------------------------------------------------

ensure_tapnet() {
    if [ -n "$TAPNET_BIN" ]; then
        [ -x "$TAPNET_BIN" ] || die "TAPNET_BIN=$TAPNET_BIN is not an executable"
        return 0
    fi
    TAPNET_BIN=$REPO/target/release/tapnet
    if command -v cargo >/dev/null && [ "${TAPNET_VM_NO_BUILD:-0}" != 1 ]; then
        local pkgs=(-p control)
        # The bench crate only matters once it ships a binary (tapnet-bench).
        grep -q '^\[\[bin\]\]' "$REPO/bench/Cargo.toml" 2>/dev/null && pkgs+=(-p bench)
        say "cargo build --release ${pkgs[*]}"
        (cd "$REPO" && cargo build --release -q "${pkgs[@]}") || die "cargo build failed"
    fi
    [ -x "$TAPNET_BIN" ] || die "no $TAPNET_BIN (cargo build --release -p control)"
}

# The share: bin/ (tapnet, stripped, and tapnet-bench if built), lib/ (the
# shared libraries ldd lists and the dynamic loader), interp (the loader's
# path in the binary), scenarios/, payload, env/ROLE.env (written per run).
stage_share() {
    local b lib interp
    SHARE=$VMDIR/share
    rm -rf "$SHARE"
    mkdir -p "$SHARE"/{bin,lib,scenarios,env}
    for b in "$TAPNET_BIN" "$(dirname "$TAPNET_BIN")/tapnet-bench"; do
        [ -x "$b" ] || continue
        if command -v strip >/dev/null; then
            strip -o "$SHARE/bin/${b##*/}" "$b"
        else
            cp "$b" "$SHARE/bin/"
        fi
        # Nothing to copy for a static binary (ldd fails on it).
        while read -r lib; do
            cp -L "$lib" "$SHARE/lib/"
        done < <(ldd "$b" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' || true)
        interp=$(ldd "$b" 2>/dev/null | awk '$1 ~ /^\// && !n++ {print $1}' || true)
        [ -n "$interp" ] && echo "$interp" >"$SHARE/interp"
    done
    cp "$HERE"/scenarios/*.sh "$SHARE/scenarios/"
    head -c $((PAYLOAD_KB * 1024)) /dev/urandom >"$SHARE/payload"
    PAYLOAD_MD5=$(md5sum <"$SHARE/payload" | cut -d' ' -f1)
}

write_env() { # ROLE SCENARIO
    local me peer peer_role
    if [ "$1" = a ]; then me=$IP_A peer=$IP_B peer_role=b; else me=$IP_B peer=$IP_A peer_role=a; fi
    cat >"$SHARE/env/$1.env" <<EOF
SCENARIO='$2'
ROLE='$1'
PEER_ROLE='$peer_role'
MY_IP='$me'
PEER_IP='$peer'
PREFIX='$PREFIX'
IP_A='$IP_A'
IP_B='$IP_B'
PAYLOAD='/share/payload'
PAYLOAD_MD5='$PAYLOAD_MD5'
STEP_TIMEOUT='$STEP_TIMEOUT'
SCENARIO_TIMEOUT='$((TIMEOUT - 40))'
EOF
    # Anything else a scenario wants: TAPNET_VM_ENV="KEY=VALUE ...".
    local kv
    for kv in ${TAPNET_VM_ENV:-}; do echo "${kv%%=*}='${kv#*=}'" >>"$SHARE/env/$1.env"; done
}

# --- acceleration -----------------------------------------------------------

# KVM when it really boots our kernel, else TCG. /dev/kvm may exist and still
# fail (nested virtualisation): boot the real kernel and initramfs once with
# "tapnet.probe" and look for its marker. Cached per host kernel and qemu.
ACCEL=tcg
CPU_ARGS=()
probe_accel() {
    case $ACCEL_WANT in
        tcg) ACCEL=tcg; return ;;
        kvm) ACCEL=kvm; CPU_ARGS=(-cpu host); return ;;
        auto) ;;
        *) die "TAPNET_VM_ACCEL must be auto, kvm or tcg" ;;
    esac
    ACCEL=tcg
    [ -r /dev/kvm ] && [ -w /dev/kvm ] || return 0
    local key cache log pid
    key="$(uname -r) $(qemu-system-x86_64 --version | sed -n 1p) $KVER"
    cache=$VMDIR/accel
    if [ -s "$cache" ] && [ "$(head -n 1 "$cache")" = "$key" ]; then
        ACCEL=$(sed -n 2p "$cache")
        [ "$ACCEL" = kvm ] && CPU_ARGS=(-cpu host)
        return 0
    fi
    log=$VMDIR/logs/kvm-probe.log
    mkdir -p "$VMDIR/logs"
    : >"$log"
    : >"$log.stderr"
    # qemu may abort (an assertion in its KVM code): keep bash's report of
    # that out of the terminal too.
    exec 3>&2 2>>"$log.stderr"
    qemu-system-x86_64 -name tapnet-vm-probe -accel kvm -cpu host -machine pc -m 256 -smp 1 \
        -nodefaults -no-user-config -display none -monitor none -serial "file:$log" -no-reboot \
        -kernel "$KDIR/vmlinux" -initrd "$INITRD" \
        -append "console=ttyS0 quiet panic=-1 tapnet.probe=1" </dev/null >>"$log.stderr" 2>&1 9>&- &
    pid=$!
    QEMU_PIDS+=("$pid")
    for _ in $(seq 1 50); do
        grep -q 'TAPNET-VM: PROBE' "$log" 2>/dev/null && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    if grep -q 'TAPNET-VM: PROBE' "$log"; then ACCEL=kvm; CPU_ARGS=(-cpu host); fi
    cleanup
    exec 2>&3 3>&-
    printf '%s\n%s\n' "$key" "$ACCEL" >"$cache"
    [ "$ACCEL" = kvm ] || say "KVM does not boot the guest here (see $log and $log.stderr): using TCG"
}

# --- one scenario -----------------------------------------------------------

port_in_use() { # PORT: bound locally (UDP) already?
    awk -v p="$(printf ':%04X' "$1")" 'substr($2, length($2) - 4) == p { f = 1 } END { exit !f }' \
        /proc/net/udp /proc/net/udp6 2>/dev/null
}
free_port() {
    local p
    for _ in $(seq 1 100); do
        p=$((20000 + RANDOM % 40000))
        port_in_use "$p" || [ "$p" = "${1:-}" ] || { echo "$p"; return 0; }
    done
    die "no free UDP port found"
}

launch() { # ROLE LOCAL_PORT REMOTE_PORT MAC LOG
    qemu-system-x86_64 -name "tapnet-vm-$1" -accel "$ACCEL" "${CPU_ARGS[@]}" -machine pc \
        -smp "$SMP" -m "$MEM" -nodefaults -no-user-config -display none -monitor none \
        -serial "file:$5" -no-reboot \
        -kernel "$KDIR/vmlinux" -initrd "$INITRD" \
        -append "console=ttyS0 quiet panic=-1 tapnet.role=$1 tapnet.timeout=$((TIMEOUT - 10))" \
        -netdev "dgram,id=link,local.type=inet,local.host=127.0.0.1,local.port=$2,remote.type=inet,remote.host=127.0.0.1,remote.port=$3" \
        -device "virtio-net-pci,netdev=link,mac=$4,romfile=" \
        -virtfs "local,path=$SHARE,mount_tag=tapnet,security_model=none,readonly=on" \
        </dev/null >"$5.qemu" 2>&1 9>&- &
    QEMU_PIDS+=("$!")
}

# Console lines worth showing while waiting: progress and verdicts.
SHOWN_a=0
SHOWN_b=0
stream() { # ROLE LOG
    local var=SHOWN_$1 total
    total=$(wc -l <"$2")
    [ "$total" -gt "${!var}" ] || return 0
    sed -n "$((${!var} + 1)),${total}p" "$2" | tr -d '\r' |
        grep -aE '^(tapnet-vm\[|TAPNET-VM: )' | sed "s/^/  $1| /" || true
    printf -v "$var" '%s' "$total"
}

verdict_of() { # LOG: the verdict line, if any
    tr -d '\r' <"$1" | grep -aoE 'TAPNET-VM: (PASS|FAIL|SKIP) .*' | sed -n 1p || true
}

# "PASS after 7.0 s (guest uptime 5.6 s): MESSAGE" from a verdict line.
describe() { # VERDICT_LINE SECONDS
    local v=${1#TAPNET-VM: } re='^([A-Z]+) role=[^ ]* scenario=[^ ]* uptime=([0-9.]+) ?(.*)$'
    if [[ $v =~ $re ]]; then
        echo "${BASH_REMATCH[1]} after $2 s (guest uptime ${BASH_REMATCH[2]} s): ${BASH_REMATCH[3]}"
    else
        echo "${v%% *} after $2 s: ${v#* }"
    fi
}

# Sets RESULT to PASS, FAIL or SKIP.
run_scenario() {
    local name=$1 logdir la lb pa pb t0 va="" vb="" ra rb deadline grace="" now
    [ -r "$HERE/scenarios/$name.sh" ] || die "no scenario $name (have: $(scenario_names))"
    logdir=$VMDIR/logs/$name
    mkdir -p "$logdir"
    la=$logdir/a.console.log
    lb=$logdir/b.console.log
    : >"$la"
    : >"$lb"
    write_env a "$name"
    write_env b "$name"
    pa=$(free_port)
    pb=$(free_port "$pa")
    say "scenario $name: VM a $IP_A (udp 127.0.0.1:$pa), VM b $IP_B (udp 127.0.0.1:$pb), accel $ACCEL, timeout ${TIMEOUT}s"
    t0=$EPOCHREALTIME
    # shellcheck disable=SC2034 # read by stream through ${!var}
    SHOWN_a=0 SHOWN_b=0
    launch a "$pa" "$pb" "$MAC_A" "$la"
    launch b "$pb" "$pa" "$MAC_B" "$lb"
    local pid_a=${QEMU_PIDS[-2]} pid_b=${QEMU_PIDS[-1]} ta="" tb="" timed_out="" t_end
    deadline=$(awk -v a="$t0" -v t="$TIMEOUT" 'BEGIN { printf "%d", a + t }')
    while :; do
        stream a "$la"
        stream b "$lb"
        if [ -z "$va" ]; then
            va=$(verdict_of "$la")
            [ -n "$va" ] && ta=$(elapsed "$t0")
            if [ -z "$va" ] && ! kill -0 "$pid_a" 2>/dev/null; then
                va="TAPNET-VM: FAIL VM a exited without a verdict: $(tail -n 3 "$la.qemu" | tr '\n' ' ')"
                ta=$(elapsed "$t0")
            fi
        fi
        if [ -z "$vb" ]; then
            vb=$(verdict_of "$lb")
            [ -n "$vb" ] && tb=$(elapsed "$t0")
            if [ -z "$vb" ] && ! kill -0 "$pid_b" 2>/dev/null; then
                vb="TAPNET-VM: FAIL VM b exited without a verdict: $(tail -n 3 "$lb.qemu" | tr '\n' ' ')"
                tb=$(elapsed "$t0")
            fi
        fi
        [ -n "$va" ] && [ -n "$vb" ] && break
        now=${EPOCHREALTIME%.*}
        # Once one VM failed the other is unlikely to pass: give it 30 s.
        if [ -z "$grace" ] && [[ "$va$vb" == *"TAPNET-VM: FAIL"* ]]; then grace=$((now + 30)); fi
        if [ "$now" -ge "$deadline" ] || { [ -n "$grace" ] && [ "$now" -ge "$grace" ]; }; then
            [ -n "$va" ] || { va="TAPNET-VM: FAIL no verdict from VM a after $(elapsed "$t0")s (timeout)"; ta=$(elapsed "$t0"); }
            [ -n "$vb" ] || { vb="TAPNET-VM: FAIL no verdict from VM b after $(elapsed "$t0")s (timeout)"; tb=$(elapsed "$t0"); }
            timed_out=1
            break
        fi
        sleep 0.5
    done
    t_end=$(elapsed "$t0")
    # Both VMs power themselves off after their verdict: wait up to 10 s,
    # unless they are stuck.
    if [ -z "$timed_out" ]; then
        for _ in $(seq 1 20); do
            kill -0 "$pid_a" 2>/dev/null || kill -0 "$pid_b" 2>/dev/null || break
            sleep 0.5
        done
    fi
    stream a "$la"
    stream b "$lb"
    cleanup
    ra=$(echo "$va" | awk '{print $2}')
    rb=$(echo "$vb" | awk '{print $2}')
    say "scenario $name: VM a: $(describe "$va" "$ta")"
    say "scenario $name: VM b: $(describe "$vb" "$tb")"
    if [ "$ra" = FAIL ] || [ "$rb" = FAIL ]; then
        RESULT=FAIL
    elif [ "$ra" = SKIP ] || [ "$rb" = SKIP ]; then
        RESULT=SKIP
    else
        RESULT=PASS
    fi
    say "scenario $name: $RESULT in $t_end s from launch to verdicts (logs: $logdir)"
    if [ "$RESULT" = FAIL ]; then
        local r
        for r in a b; do
            echo "----- last 40 lines of VM $r's console ($logdir/$r.console.log) -----"
            tr -d '\r' <"$logdir/$r.console.log" | tail -n 40
            if [ -s "$logdir/$r.console.log.qemu" ]; then
                echo "----- qemu's own output ($logdir/$r.console.log.qemu) -----"
                tail -n 10 "$logdir/$r.console.log.qemu"
            fi
        done
        echo "-----"
    fi
}

# --- main -------------------------------------------------------------------

main() {
    local scenarios=() s
    for s in "$@"; do
        case $s in
            -h | --help) usage; exit 0 ;;
            all) read -ra scenarios <<<"$(scenario_names)" ;;
            -*) usage >&2; exit 2 ;;
            *) scenarios+=("$s") ;;
        esac
    done
    [ ${#scenarios[@]} -gt 0 ] || scenarios=(link)
    for s in "${scenarios[@]}"; do
        [ -r "$HERE/scenarios/$s.sh" ] || die "no scenario $s (have: $(scenario_names))"
    done
    [ "$(id -u)" = 0 ] || die "run as root (apt-get, and the guests' qemu setup)"
    [ "$TIMEOUT" -ge 60 ] || die "TAPNET_VM_TIMEOUT must be at least 60"
    mkdir -p "$VMDIR/logs"
    exec 9>"$VMDIR/lock"
    flock -n 9 || die "another tests/vm/run.sh is using $VMDIR"

    ensure_packages
    ensure_kernel
    ensure_initramfs
    ensure_tapnet
    stage_share
    probe_accel
    say "ready in $(elapsed "$T_START") s: kernel $KVER, accel $ACCEL, tapnet $("$TAPNET_BIN" --version 2>/dev/null || echo '?')"

    local passed=0 failed=0 skipped=0 summary=()
    for s in "${scenarios[@]}"; do
        run_scenario "$s"
        summary+=("$s=$RESULT")
        case $RESULT in
            PASS) passed=$((passed + 1)) ;;
            SKIP) skipped=$((skipped + 1)) ;;
            *) failed=$((failed + 1)) ;;
        esac
    done
    say "${summary[*]}; total $(elapsed "$T_START") s"
    echo "tests/vm: $passed passed, $failed failed, $skipped skipped"
    [ "$failed" -eq 0 ] || exit 1
    [ "$passed" -gt 0 ] || exit 77
    exit 0
}

main "$@"
