FROM alpine:3.20
ENV APP_HOME /srv/app
LABEL maintainer me@example.org
