# A tiny base image for another architecture (default arm64), made without any registry: Debian's
# busybox-static for that architecture is fetched by apt in an amd64 stage, then installed into
# an empty image of the target platform (the RUN there runs under QEMU through binfmt_misc).
ARG DEBIAN_ARCH=arm64
FROM --platform=linux/amd64 containers-ci/debian:bookworm AS fetch
ARG DEBIAN_ARCH
RUN dpkg --add-architecture "$DEBIAN_ARCH" && apt-get update -qq \
 && cd /tmp && apt-get download -qq "busybox-static:$DEBIAN_ARCH" && dpkg-deb -x busybox-static_*.deb /tmp/root \
 && rm -rf /var/lib/apt/lists/*

FROM scratch
COPY --from=fetch /tmp/root/bin/busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN mkdir -p /etc /tmp /root && echo "root:x:0:0:root:/root:/bin/sh" > /etc/passwd && echo "root:x:0:" > /etc/group
CMD ["/bin/sh"]
