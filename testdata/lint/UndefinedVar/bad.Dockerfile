FROM alpine:3.20
ARG DIR_ASSETS=assets/
COPY $DIR_ASSET /srv/
ENV PATH=$PAHT:/opt/bin
COPY $foo /tmp/
ARG foo=bar
