FROM --platform=linux/arm/v7 example/armv6 AS build-arm
FROM --platform=linux/arm64 example/unknown AS other-arm64
FROM --platform=linux/arm64 scratch AS empty-arm64
FROM build-arm
