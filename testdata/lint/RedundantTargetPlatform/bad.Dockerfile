FROM --platform=$TARGETPLATFORM alpine:3.20
RUN echo hi

FROM --platform=${TARGETPLATFORM} alpine:3.20
