ARG BASE=busybox
ARG TAG
FROM --platform=$BUILDPLATFORM ${BASE}:${TAG:-latest} AS builder
ARG TARGETOS TARGETARCH
ARG VERSION="1.0 beta" OTHER=x
RUN echo $VERSION
from builder
copy --from=0 /a /b
