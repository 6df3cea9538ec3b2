FROM alpine:3.20 AS base
ENTRYPOINT ["/app"]
CMD ["--help"]
HEALTHCHECK CMD ["/app", "health"]

FROM base
ENTRYPOINT ["/other"]
CMD ["--version"]
HEALTHCHECK NONE
