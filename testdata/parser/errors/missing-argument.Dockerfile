FROM busybox
COPY only-one
