FROM alpine:3.20 AS exec
ENTRYPOINT ["my-program", "start"]

FROM alpine:3.20 AS base
SHELL ["/bin/ash", "-eo", "pipefail", "-c"]

FROM base
CMD my-program start
