ARG ARCH=arm64
FROM --platform=linux/${ARCH} example/amd64-only:1.0 AS build-arm64
FROM --platform=linux/amd64 example/arm64-only AS build-amd64
# check=skip=InvalidBaseImagePlatform
FROM --platform=linux/amd64 example/windows AS final-amd64
