#!/usr/bin/env bash
# Supplies, locally, the base images docker/Dockerfile names, when the Docker engine cannot
# pull them (CI here reaches no registry). Images that already exist are left alone, so on a
# machine that can pull, nothing happens here and the real images are used.
#
#   rust:1.95-bookworm                       Debian bookworm (debootstrap, minbase) with gcc,
#                                            libc6-dev and ca-certificates, plus this host's
#                                            Rust toolchain under /usr/local/rust and the
#                                            host's CA bundle (so an egress proxy's CA works)
#   gcr.io/distroless/cc-debian12:nonroot    the same content as distroless cc: glibc,
#                                            libgcc_s, CA certificates, tzdata-free /etc with a
#                                            `nonroot` user 65532; taken from this Debian 12 host
#   postgres:15-bookworm                     (compose's postgres profile) Debian bookworm's
#                                            postgresql-15 behind an entrypoint with the
#                                            official image's variables
#                                            (tests/docker/postgres-standin)
#
# Needs root (debootstrap), debootstrap (installed with apt-get when missing), and the
# Debian mirror the host's apt uses.
set -euo pipefail

RUST_IMAGE="${RUST_IMAGE:-rust:1.95-bookworm}"
RUNTIME_IMAGE="${RUNTIME_IMAGE:-gcr.io/distroless/cc-debian12:nonroot}"
POSTGRES_IMAGE="${POSTGRES_IMAGE:-postgres:15-bookworm}"
MIRROR="${DEBIAN_MIRROR:-$(awk '/^deb / && /bookworm/ {print $2; exit}' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true)}"
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

have() { docker image inspect "$1" >/dev/null 2>&1; }

if have "$RUNTIME_IMAGE"; then
  echo "docker-bases: $RUNTIME_IMAGE present"
else
  echo "docker-bases: assembling $RUNTIME_IMAGE from this host's libraries"
  root="$WORK/runtime"
  mkdir -p "$root"/{etc,tmp,home/nonroot,usr/lib/x86_64-linux-gnu,lib64,etc/ssl/certs}
  chmod 1777 "$root/tmp"
  for lib in libc.so.6 libm.so.6 libgcc_s.so.1 libdl.so.2 libpthread.so.0 librt.so.1 ld-linux-x86-64.so.2; do
    cp -L "/lib/x86_64-linux-gnu/$lib" "$root/usr/lib/x86_64-linux-gnu/$lib"
  done
  ln -s usr/lib "$root/lib"
  ln -s ../usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 "$root/lib64/ld-linux-x86-64.so.2"
  cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n' >"$root/etc/group"
  printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
  chown 65532:65532 "$root/home/nonroot"
  tar -C "$root" -c . | docker import \
    --change 'USER 65532:65532' --change 'WORKDIR /home/nonroot' \
    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    - "$RUNTIME_IMAGE" >/dev/null
fi

if have "$RUST_IMAGE"; then
  echo "docker-bases: $RUST_IMAGE present"
else
  echo "docker-bases: building $RUST_IMAGE (debootstrap bookworm + the host toolchain)"
  root="$WORK/rust"
  if ! command -v debootstrap >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "docker-bases: installing debootstrap (Debian package)"
      apt-get update -qq >/dev/null
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
    else
      echo "docker-bases: debootstrap is needed to build $RUST_IMAGE locally (apt-get install debootstrap)" >&2
      exit 1
    fi
  fi
  debootstrap --variant=minbase --include=gcc,libc6-dev,ca-certificates,git \
    bookworm "$root" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 || {
      tail -20 "$WORK/debootstrap.log" >&2; exit 1; }
  toolchain="$(rustc --print sysroot)"
  mkdir -p "$root/usr/local/rust"
  for part in bin lib libexec etc; do
    [ -d "$toolchain/$part" ] && cp -a "$toolchain/$part" "$root/usr/local/rust/"
  done
  # Trust what this host trusts: where egress goes through an intercepting proxy, its CA
  # is in the host bundle, and cargo inside the build needs it to reach crates.io.
  cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
  rm -rf "$root/var/cache/apt/archives"/*.deb "$root/var/lib/apt/lists"/*
  tar -C "$root" -c . | docker import \
    --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV CARGO_HOME=/usr/local/cargo' \
    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    --change 'ENV CARGO_HTTP_CAINFO=/etc/ssl/certs/ca-certificates.crt' \
    --change 'WORKDIR /' \
    - "$RUST_IMAGE" >/dev/null
fi
if have "$POSTGRES_IMAGE"; then
  echo "docker-bases: $POSTGRES_IMAGE present"
else
  echo "docker-bases: building a stand-in for $POSTGRES_IMAGE (Debian's postgresql-15)"
  docker build -q --build-arg BASE="$RUST_IMAGE" -t "$POSTGRES_IMAGE" \
    "$(dirname "$0")/../tests/docker/postgres-standin" >/dev/null
fi
docker image ls --format '{{.Repository}}:{{.Tag}}\t{{.Size}}' | grep -E "^(${RUST_IMAGE%%:*}|${RUNTIME_IMAGE%%:*}|${POSTGRES_IMAGE%%:*})" || true
