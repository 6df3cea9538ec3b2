FROM busybox
COPY --chwon=app a /b
