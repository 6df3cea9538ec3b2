FROM --platform=$BUILDPLATFORM golang:1.22 AS build
RUN echo hi

FROM alpine:3.20
