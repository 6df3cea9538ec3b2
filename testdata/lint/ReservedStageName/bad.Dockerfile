FROM alpine:3.20 AS scratch
RUN echo hi

FROM alpine:3.20 AS context
