# check=experimental=InvalidDefinitionDescription
# VERSION is the version to install
ARG VERSION=1

# base is the image everything starts from
FROM alpine:3.20 AS base
# A and B are examples
#
ARG A=1 B=2
# a comment above RUN is not a description
RUN echo $A
