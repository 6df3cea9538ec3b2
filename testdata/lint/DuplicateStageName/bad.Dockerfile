FROM alpine:3.20 AS build
RUN echo one > /one

FROM alpine:3.20 AS build
RUN echo two > /two
