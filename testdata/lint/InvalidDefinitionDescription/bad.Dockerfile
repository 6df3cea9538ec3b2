# check=experimental=InvalidDefinitionDescription
# the version to install
ARG VERSION=1
# the image everything starts from
FROM alpine:3.20 AS base
# several args
ARG A=1 B=2
