FROM busybox
RUN --mount=type=cache,target=/root/.cache,sharing=locked \
    --mount=type=secret,id=npm,target=/root/.npmrc,required=true \
    --mount=type=bind,from=build,source=/out,target=/in,rw \
    --mount=type=tmpfs,target=/scratch,size=64m \
    --mount=type=ssh \
    --network=none --security=sandbox make
