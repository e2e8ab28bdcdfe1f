# Shared shell helpers for scripts/*.sh: package installs that are idempotent and say what they do.

# need_debs PKG...: install the Debian packages that are missing (needs root and apt-get).
need_debs() {
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
        echo "missing Debian packages: ${missing[*]}; install them (apt-get install -y ${missing[*]}) and re-run" >&2
        return 1
    fi
    echo "==> installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null && apt-get install -y -qq "${missing[@]}" >/dev/null
}

# need_cargo: the Rust toolchain is the one thing we cannot install.
need_cargo() {
    command -v cargo >/dev/null || {
        echo "cargo not found: install the Rust toolchain (https://rustup.rs) and re-run" >&2
        return 1
    }
}

# need_fuse: /dev/fuse and root, which the agent's mount needs.
need_fuse() {
    [ -c /dev/fuse ] || { echo "/dev/fuse is missing: load the fuse module (modprobe fuse) or run where FUSE is available" >&2; return 1; }
    [ "$(id -u)" -eq 0 ] || { echo "must run as root (the agent mounts a FUSE filesystem)" >&2; return 1; }
}
