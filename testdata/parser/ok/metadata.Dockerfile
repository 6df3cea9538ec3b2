FROM busybox
HEALTHCHECK --interval=30s --timeout=3s --start-period=5s --start-interval=1s --retries=3 CMD wget -qO- http://localhost/ || exit 1
HEALTHCHECK NONE
ONBUILD COPY . /src
ONBUILD RUN make
STOPSIGNAL SIGTERM
SHELL ["/bin/sh", "-e", "-c"]
EXPOSE 80/tcp 53/udp
VOLUME ["/data", "/logs"]
VOLUME /cache
USER app:app
WORKDIR /srv
MAINTAINER someone@example.com
LABEL a=1 "b c"="d e"
LABEL legacy value with spaces
ENV A=1 B="two words"
ENV LEGACY value with spaces
CMD ["/bin/app", "--flag"]
ENTRYPOINT exec /bin/app
