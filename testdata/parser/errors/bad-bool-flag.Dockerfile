FROM busybox
COPY --link=sometimes a /b
