#!/usr/bin/env bash
# Builds static binaries of every Maestro program for x86_64 Linux (musl libc, no dynamic
# dependency at all), so they run in any image: Alpine, distroless, scratch, or a glibc distro.
#
#   scripts/dist.sh            builds into dist/x86_64-unknown-linux-musl/ and checks each binary
#                              is static (file(1) and ldd), then prints their sizes and SHA-256
#
# Installs what it needs: Debian's musl-tools (the musl C compiler the C parts of aws-lc and
# SQLite are built with) and the Rust target x86_64-unknown-linux-musl (rustup).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

TARGET=x86_64-unknown-linux-musl
BINS=(maestro-broker maestro maestro-agent maestro-exec)

need_cargo
need_debs musl-tools file
if ! rustup target list --installed 2>/dev/null | grep -qx "$TARGET"; then
    command -v rustup >/dev/null || { echo "rustup not found: add the Rust target $TARGET to your toolchain and re-run" >&2; exit 1; }
    echo "==> rustup target add $TARGET"
    rustup target add "$TARGET"
fi

echo "==> cargo build --release --target $TARGET (a cold build takes several minutes)"
# The C parts (aws-lc, SQLite) are compiled against musl too; Rust links the result itself,
# statically (a musl-gcc linker would make it dynamic against ld-musl).
export CC_x86_64_unknown_linux_musl=musl-gcc
export CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_RUSTFLAGS="-C target-feature=+crt-static"
cargo build --release --locked --target "$TARGET" \
    -p maestro-broker -p maestro-cli -p maestro-agent -p maestro-exec --bins

out="dist/$TARGET"
built="${CARGO_TARGET_DIR:-target}/$TARGET/release"
mkdir -p "$out"
for b in "${BINS[@]}"; do
    src="$built/$b"
    [ -x "$src" ] || { echo "the build made no $src" >&2; exit 1; }
    install -m 0755 "$src" "$out/$b"
    # A static binary: file(1) says so and the dynamic loader has nothing to load.
    if ! file "$out/$b" | grep -q "static"; then
        echo "$out/$b is not statically linked: $(file "$out/$b")" >&2
        exit 1
    fi
    if ldd "$out/$b" 2>&1 | grep -q "=>"; then
        echo "$out/$b still needs shared libraries: $(ldd "$out/$b" 2>&1)" >&2
        exit 1
    fi
    "$out/$b" --version >/dev/null
done
# The system roots for the broker's image (OAuth providers, PostgreSQL over TLS).
install -m 0444 /etc/ssl/certs/ca-certificates.crt dist/ca-certificates.crt
echo "==> static binaries in $out:"
(cd "$out" && ls -l "${BINS[@]}" | awk '{print "   ", $5, $9}' && sha256sum "${BINS[@]}" | sed 's/^/    /')
