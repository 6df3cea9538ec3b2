FROM alpine:3.20
ARG PUBLIC_KEY
ENV VERSION_TOKEN=1
ARG KEY_FILE=/run/secrets/key
ENV MONKEY=banana
RUN --mount=type=secret,id=token cat /run/secrets/token
