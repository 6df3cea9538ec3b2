FROM --platform=linux/amd64 alpine:3.20 AS build-amd64
FROM --platform=linux/arm64 alpine:3.20 AS linux
FROM --platform=$BUILDPLATFORM alpine:3.20
