#!/usr/bin/env bash
# Makes local stand-ins for the Dockerfile's official base images from Debian packages, for
# machines that reach the Debian mirror and crates.io but no image registry:
#   gridwatch-local/debian:bookworm-slim  debootstrap --variant=minbase bookworm
#   gridwatch-local/rust:1-bookworm       the same plus gcc/make/pkg-config/libssl-dev/... and
#                                         the host's Rust toolchain (rustup cannot download in
#                                         a container here), at the official image's paths
# Skips an image that already exists (delete it with `podman rmi` to rebuild). Usage:
#   deploy/container/make-base-images.sh      (root; needs debootstrap and podman)
set -euo pipefail

MIRROR="${DEBIAN_MIRROR:-}"
if [ -z "$MIRROR" ]; then
  # The mirror apt uses (deb822 sources first, then the one-line format).
  MIRROR="$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null \
    | grep -v security | head -n 1 || true)"
  [ -n "$MIRROR" ] || MIRROR="$(awk '$1 == "deb" && $0 !~ /security/ {print $2; exit}' \
    /etc/apt/sources.list 2>/dev/null || true)"
  [ -n "$MIRROR" ] || MIRROR=http://deb.debian.org/debian
fi
RUNTIME_IMAGE="${RUNTIME_IMAGE:-gridwatch-local/debian:bookworm-slim}"
BUILDER_IMAGE="${BUILDER_IMAGE:-gridwatch-local/rust:1-bookworm}"
TOOLCHAIN="${RUST_TOOLCHAIN_DIR:-$(rustc --print sysroot)}"
WORK="${BASE_WORK_DIR:-/var/tmp/gridwatch-base}"
PODMAN=(podman --runtime "${PODMAN_RUNTIME:-/usr/sbin/runc}")

have_image() { "${PODMAN[@]}" image exists "$1"; }

# Roots, then `podman import` of the tree (no registry involved).
import_tree() {
  local tree=$1 tag=$2; shift 2
  tar -C "$tree" --numeric-owner -c . | "${PODMAN[@]}" import "$@" - "$tag" >/dev/null
}

mkdir -p "$WORK"
if ! have_image "$RUNTIME_IMAGE"; then
  echo "== $RUNTIME_IMAGE from $MIRROR"
  rm -rf "$WORK/slim"
  debootstrap --variant=minbase bookworm "$WORK/slim" "$MIRROR" >"$WORK/slim.log" 2>&1 \
    || { tail -n 20 "$WORK/slim.log"; exit 1; }
  # What debian:bookworm-slim drops: apt lists, docs, man pages.
  rm -rf "$WORK"/slim/var/lib/apt/lists/* "$WORK"/slim/var/cache/apt/*.bin \
    "$WORK"/slim/usr/share/doc/* "$WORK"/slim/usr/share/man/* "$WORK"/slim/usr/share/locale/*
  import_tree "$WORK/slim" "$RUNTIME_IMAGE" \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]'
  rm -rf "$WORK/slim"
fi

if ! have_image "$BUILDER_IMAGE"; then
  echo "== $BUILDER_IMAGE from $MIRROR and the toolchain in $TOOLCHAIN"
  [ -x "$TOOLCHAIN/bin/cargo" ] || { echo "no cargo in $TOOLCHAIN/bin" >&2; exit 1; }
  rm -rf "$WORK/rust"
  # What rust:1-bookworm (buildpack-deps:bookworm) brings that librdkafka's build needs.
  debootstrap --variant=minbase \
    --include=ca-certificates,curl,git,build-essential,pkg-config,perl,python3,libssl-dev,zlib1g-dev,libsasl2-dev,libzstd-dev,liblz4-dev \
    bookworm "$WORK/rust" "$MIRROR" >"$WORK/rust.log" 2>&1 \
    || { tail -n 20 "$WORK/rust.log"; exit 1; }
  rm -rf "$WORK"/rust/var/lib/apt/lists/* "$WORK"/rust/usr/share/doc/* "$WORK"/rust/usr/share/man/*
  # Local CAs the host trusts (e.g. a TLS-inspecting egress proxy in front of crates.io) are
  # trusted by the builder too, or cargo cannot fetch crates in the build. Builder only: the
  # runtime image trusts Debian's roots (and what the deployment mounts).
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$WORK/rust/usr/local/share/ca-certificates/"
    chroot "$WORK/rust" update-ca-certificates >/dev/null
  fi
  # The official image's layout: RUSTUP_HOME=/usr/local/rustup, CARGO_HOME=/usr/local/cargo,
  # cargo and rustc on PATH from /usr/local/cargo/bin. Docs are left out.
  tc="$WORK/rust/usr/local/rustup/toolchains/$(basename "$TOOLCHAIN")"
  mkdir -p "$tc" "$WORK/rust/usr/local/cargo/bin"
  tar -C "$TOOLCHAIN" --exclude=./share/doc -c . | tar -C "$tc" -x
  for b in "$tc"/bin/*; do
    ln -s "../../rustup/toolchains/$(basename "$TOOLCHAIN")/bin/$(basename "$b")" \
      "$WORK/rust/usr/local/cargo/bin/$(basename "$b")"
  done
  import_tree "$WORK/rust" "$BUILDER_IMAGE" \
    --change 'ENV RUSTUP_HOME=/usr/local/rustup' \
    --change 'ENV CARGO_HOME=/usr/local/cargo' \
    --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]'
  rm -rf "$WORK/rust"
fi
"${PODMAN[@]}" images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep '^gridwatch-local/' || true
