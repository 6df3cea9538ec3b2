FROM alpine:3.20
ENTRYPOINT ["/app"]
CMD ["--help"]
HEALTHCHECK CMD ["/app", "health"]
ENTRYPOINT ["/other"]
CMD ["--version"]
HEALTHCHECK NONE
