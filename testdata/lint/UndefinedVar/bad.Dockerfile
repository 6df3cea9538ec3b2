FROM alpine:3.20
ARG DIR_ASSETS=assets/
COPY $DIR_ASSET /srv/
ENV PATH=$PAHT:/opt/bin
COPY $foo /tmp/
ARG foo=bar
COPY --chmod=$MODE a /b
ADD --chmod=${ADD_MODE:-644} a /c
