ARG MY_ARCH=amd64
ARG TAG=3.20
FROM alpine:${TAG}${VARIANT} AS build
RUN echo hi

FROM --platform=linux/${MYARCH} alpine:${TAG}
COPY --from=build /etc/os-release /
