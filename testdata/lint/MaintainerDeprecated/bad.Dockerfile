FROM alpine:3.20
MAINTAINER me@example.org
