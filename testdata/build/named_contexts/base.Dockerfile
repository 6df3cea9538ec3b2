FROM busybox:latest
RUN echo from-ctxbase > /marker
