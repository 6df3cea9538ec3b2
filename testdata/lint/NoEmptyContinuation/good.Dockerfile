FROM alpine:3.20
RUN apk add --no-cache \
    # comment lines inside a continuation are fine
    curl
