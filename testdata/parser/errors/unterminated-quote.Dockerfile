FROM busybox
ENV GREETING="hello
