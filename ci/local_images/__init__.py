"""Images this machine makes for itself, where no registry can be pulled from (docs/architecture.md).

`spack_builder`: the stand-in Spack builder image (`inv local.spack-builder`); `foreign_base`:
the tiny arm64 busybox base that `arm64/` definitions start FROM locally (`inv local.arm64-base`),
built through BuildKit and QEMU. Each is made only when missing or when its inputs changed.
"""
