ARG TAG=3.20
ARG DEBUG
FROM --platform=$BUILDPLATFORM alpine:${TAG}${DEBUG} AS build
ARG TARGETARCH
RUN echo $TARGETARCH > /arch

FROM alpine:${TAG}
COPY --from=build /arch /arch
