FROM busybox
RUN --mount=type=cache,sharing=locked ls
