# The orgops image: the static musl binary from hack/release-build on an empty base, so the
# build pulls nothing (no base image, no builder image):
#   hack/release-build                                  # -> target/release-static/orgops
#   docker build -t ghcr.io/orgops/orgops:0.2.0 .       # or podman build / buildah build
# No shell, no libc, no CA bundle: the provider client trusts the Mozilla roots compiled into
# the binary (webpki-roots) and the API server's CA comes from the ServiceAccount mount.
# The build context is only that binary (.dockerignore). hack/test.d/77-image.sh builds this
# file with buildah and inspects the result.
FROM scratch
COPY target/release-static/orgops /usr/local/bin/orgops
# Numeric non-root user and group (no /etc/passwd in the image; Kubernetes' runAsNonRoot
# needs a number).
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/orgops"]
CMD ["run"]
